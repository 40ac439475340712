"""``metrics.json``, a run's results file: its format tag, its one writer and its one reader.

Written by evaluation (train, eval) and by ``localize --track``; read by train and eval (what they
return), the cross-run report and export (the model card's numbers).  A file has an object with
``metrics`` (``<stage>/<convention>/<metric>`` -> number), and usually ``protocol``, ``run``,
``val``, ``recall_curve``; :data:`FORMAT` tags it.  Files from before the tag read the same way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from mean_geo.errors import ConfigError
from mean_geo.utils import atomic

NAME = "metrics.json"
#: the format tag every metrics.json carries from this version on
FORMAT = "mean_geo-run/1"


def write_run_file(path: Path, payload: dict, indent: int = 2) -> Path:
    """Write ``payload`` (with ``metrics``) atomically, tagged with :data:`FORMAT`.

    Args:
        path: the file (``<run>/metrics.json``).
        payload: the results.
        indent: JSON indentation.

    Returns:
        ``path``.
    """
    if not isinstance(payload.get("metrics"), dict):
        raise ValueError("a run file needs a 'metrics' mapping")
    atomic.write_text(path, json.dumps({"format": FORMAT, **payload}, indent=indent) + "\n")
    return path


def read_run_file(path: str | Path) -> dict:
    """A metrics.json as written by :func:`write_run_file` (or before the format tag existed).

    Args:
        path: the file, or the run folder holding it.

    Returns:
        The payload.

    Raises:
        ConfigError: one line naming the file: unreadable, not JSON, another format, or no ``metrics``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / NAME
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable metrics.json ({exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("metrics"), dict):
        raise ConfigError(f"{path}: expected a metrics.json written by mean_geo (an object with 'metrics')")
    tag = payload.get("format", FORMAT)
    if tag != FORMAT:
        raise ConfigError(f"{path}: format {tag!r}, expected {FORMAT!r} (written by another mean_geo version)")
    return payload


def read_metrics(path: str | Path) -> dict[str, float]:
    """The test metrics and the last validation's of a run, one mapping (``val/...`` and ``test/...``).

    Args:
        path: the file, or the run folder holding it.

    Returns:
        Metric key -> value.
    """
    payload = read_run_file(path)
    val = payload.get("val") if isinstance(payload.get("val"), dict) else {}
    return {**val, **payload["metrics"]}


def finite_or_none(metrics: dict[str, float], digits: int | None = None) -> dict[str, float | None]:
    """Metrics ready for strict JSON: NaN and infinities as null (optionally rounded)."""
    return {
        k: (None if not math.isfinite(v) else (round(v, digits) if digits is not None else v))
        for k, v in metrics.items()
    }
