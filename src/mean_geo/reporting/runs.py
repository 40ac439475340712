"""Finding the runs under some folders and reading what their evaluation wrote (``metrics.json``),
without W&B, Hydra or torch: the run folders are the whole record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mean_geo.errors import ConfigError
from mean_geo.reporting.run_file import NAME, read_run_file

#: what a run's configuration is described by when its metrics.json predates the ``run`` section
_FROM_HYDRA_CONFIG = {
    "architecture": ("model", "architecture"),
    "backbone": ("model", "backbone"),
    "loss": ("loss", "name"),
    "dataset": ("dataset", "name"),
    "altitude": ("dataset", "altitude"),
    "image_size": ("dataset", "image_size"),
    "batch_size": ("dataset", "batch_size"),
    "epochs": ("trainer", "max_epochs"),
    "seed": ("seed",),
}


@dataclass
class RunResult:
    """One evaluation: where it was written, what ran, its protocol and its test metrics.

    ``metrics`` maps a convention (``d2s``, ``s2d_rerank``, …) to ``{metric: value}``.
    """

    folder: Path
    run: dict
    fingerprint: dict
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def browser(self) -> Path | None:
        """The run's error browser, when its evaluation wrote one."""
        path = self.folder / "plots" / "browser.html"
        return path if path.is_file() else None


def _hydra_config_summary(folder: Path) -> dict:
    """The run's settings from Hydra's ``.hydra/config.yaml`` (plain values only: an interpolation
    that was never resolved says nothing)."""
    path = folder / ".hydra" / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        config = None
    if not isinstance(config, dict):
        return {}
    found: dict = {}
    for name, keys in _FROM_HYDRA_CONFIG.items():
        value: object = config
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (str, int, float, bool)) and not (isinstance(value, str) and "${" in value):
            found[name] = value
    return found


def read_run(path: Path, stage: str = "test") -> RunResult:
    """One ``metrics.json`` and the folder around it.

    Args:
        path: the file.
        stage: whose metrics to read (``test``; ``val`` for the last validation).

    Returns:
        The run.

    Raises:
        ConfigError: one line naming the file, when it is not a metrics.json mean_geo wrote.
    """
    payload = read_run_file(path)
    source = payload.get("val") if stage == "val" else payload["metrics"]
    if not isinstance(source, dict):
        source = {}
    metrics: dict[str, dict[str, float]] = {}
    for key, value in source.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == stage and isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.setdefault(parts[1], {})[parts[2]] = float(value)
    protocol = payload.get("protocol") if isinstance(payload.get("protocol"), dict) else {}
    fingerprint = protocol.get("fingerprint") if isinstance(protocol.get("fingerprint"), dict) else {}
    run = payload.get("run") if isinstance(payload.get("run"), dict) else _hydra_config_summary(path.parent)
    return RunResult(path.parent, dict(run), dict(fingerprint), metrics)


def find_runs(folders: Sequence[str | Path], stage: str = "test") -> list[RunResult]:
    """Every run under ``folders`` (searched recursively: a sweep's jobs are found), in path order.

    Args:
        folders: run folders, sweep folders or anything above them.
        stage: ``test`` or ``val``.

    Returns:
        The runs, each folder's once.

    Raises:
        ConfigError: a folder that does not exist, or no metrics.json under any of them.
    """
    found: dict[Path, RunResult] = {}
    for folder in map(Path, folders):
        if not folder.exists():
            raise ConfigError(f"{folder}: no such folder (expected a run or sweep folder)")
        files = [folder] if folder.is_file() else sorted(folder.rglob(NAME))
        for path in files:
            if path.resolve() not in found:
                found[path.resolve()] = read_run(path, stage)
    if not found:
        shown = ", ".join(map(str, folders))
        raise ConfigError(f"no metrics.json under {shown}: train or evaluate first (python -m mean_geo.train …)")
    runs = [r for r in found.values() if r.metrics]
    if not runs:
        raise ConfigError(f"no {stage} metrics in the metrics.json files under {', '.join(map(str, folders))}")
    return runs
