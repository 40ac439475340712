"""The export folder, one format owned here: its file names, what it holds, its version, and
both its writer and its reader (loading and exporting use this module; neither knows the files).

An export is ``model.safetensors`` (only the retrieval network: the training-only branches are
dropped), ``config.json`` (registered architecture + plain arguments, input size and statistics,
fingerprint, the format tag) and ``README.md``, the model card with the Hub's metadata, so the
folder can be pushed to the Hugging Face Hub as it is.  The tag is checked on read, like the
index's: a folder written by a newer mean_geo is refused with one line instead of misread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from mean_geo.errors import CheckpointError
from mean_geo.inference.model_card import model_card

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
HUB_FILES = [WEIGHTS, CONFIG, CARD]
#: the format this version writes, and every one it reads (1: Hydra targets, translated on read)
EXPORT_FORMAT = "mean_geo/2"
READABLE_FORMATS = ("mean_geo/1", "mean_geo/2")


class Exportable(Protocol):
    """What an export is written from (an :class:`~mean_geo.inference.loading.InferenceModel`)."""

    @property
    def model(self) -> torch.nn.Module: ...  # read-only: a MEAN (or subclass) fits

    image_size: int
    fingerprint: str
    spec: dict
    mean: list[float]
    std: list[float]


def retrieval_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights the retrieval embedding depends on (the model's ``retrieval_parts``)."""
    parts: tuple[str, ...] = tuple(getattr(model, "retrieval_parts"))  # noqa: B009 (an architecture's own list)
    prefixes = tuple(f"{part}." for part in parts)
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}


def inference_spec(model_spec: dict) -> dict:
    """The model spec an export records: the retrieval network only, nothing to download, plain
    weights (a LoRA run's adapters are merged on loading: :func:`mean_geo.models.finetune.merge_lora_state`),
    nothing of training."""
    spec = {**model_spec, "use_gee": False, "use_cea": False, "pretrained": False, "weights_file": None}
    for key, plain in (("finetune", "full"), ("trainable_blocks", 0), ("lora", None), ("grad_checkpointing", False)):
        if key in spec:
            spec[key] = plain
    return spec


def write_export(out: Path, loaded: Exportable, source: str | None = None, metrics: dict | None = None) -> None:
    """The export files of ``loaded`` into the existing folder ``out``; a model read from an export
    keeps the metrics and source recorded there."""
    state = {k: v.contiguous() for k, v in retrieval_state(loaded.model).items()}
    save_file(state, str(out / WEIGHTS))
    dataset = loaded.spec.get("dataset") or {}
    config = {
        "format": EXPORT_FORMAT,
        "model": inference_spec(loaded.spec["model"]),
        "image_size": loaded.image_size,
        "normalization": {"mean": loaded.mean, "std": loaded.std},
        "embedding_dim": loaded.model.embedding_dim,
        "fingerprint": loaded.fingerprint,
        "trained_on": loaded.spec.get("trained_on")
        or {k: dataset.get(k) for k in ("name", "root", "altitude", "directions") if k in dataset},
        "metrics": metrics if metrics is not None else loaded.spec.get("metrics") or {},
        "source_checkpoint": source or loaded.spec.get("source_checkpoint") or "unknown",
        "plugins": list(loaded.spec.get("plugins") or []),  # names only: never imported on load
    }
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (out / CARD).write_text(model_card(config))


def read_export(path: Path, arg: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, weights)`` of the export folder ``path``, its format checked; the spec inside
    is the caller's to check (it names what to build).  ``arg`` names the argument, for errors."""
    if not (path / WEIGHTS).is_file() or not (path / CONFIG).is_file():
        raise CheckpointError(f"{arg}={path}: expected {WEIGHTS} and {CONFIG} (a folder written by mean_geo.export)")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / CONFIG}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path / CONFIG}: no model spec (expected a mean_geo export config)")
    found = config.get("format")
    if found not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path / CONFIG}: export format {str(found)[:40]!r} is not one this mean_geo reads "
            f"({', '.join(READABLE_FORMATS)}); export the checkpoint again, or update mean_geo"
        )
    try:
        state = load_file(str(path / WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign weights file
        raise CheckpointError(f"{path / WEIGHTS}: not a readable safetensors file ({type(exc).__name__})") from None
    return config, state
