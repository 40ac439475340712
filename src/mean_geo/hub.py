"""Inference models: load a training checkpoint or an exported folder, export shareable weights.

An export is a folder with ``model.safetensors`` (only the retrieval network: the training-only
branches are dropped), ``config.json`` (how to rebuild it: a registered architecture name and
plain arguments, see :mod:`mean_geo.recipe`) and a generated ``MODEL_CARD.md``; :func:`load_model`
rebuilds it in one call, without Lightning, without unpickling and without running anything a
file names.
The *fingerprint* identifies the retrieval weights and input size, so an index built with one
model is refused by another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mean_geo.atomic import atomic_path
from mean_geo.checkpoints import check_weights_fit, read_checkpoint
from mean_geo.errors import CheckpointError, RecipeError
from mean_geo.models.backbone import IMAGENET_STATS
from mean_geo.models.mean import MEAN
from mean_geo.recipe import build_model, image_size_of, model_recipe

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "MODEL_CARD.md"


@dataclass
class InferenceModel:
    """An eval-mode MEAN and what is needed to feed it."""

    model: MEAN
    image_size: int
    fingerprint: str
    recipe: dict
    #: input statistics the model was trained with (files without them: ImageNet, as then used)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_STATS[0]))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STATS[1]))


def retrieval_state(model: MEAN) -> dict[str, torch.Tensor]:
    """The weights the retrieval embedding depends on (backbone, and PEE when built)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(("backbone.", "pee."))}


def fingerprint(model: MEAN, image_size: int, stats: tuple[list[float], list[float]] | None = None) -> str:
    """Identifies the retrieval weights and the input they expect (size; statistics unless ImageNet,
    which keeps the fingerprints of files written before statistics were recorded)."""
    h = hashlib.sha256(f"image_size={image_size};".encode())
    if stats is not None and [list(s) for s in stats] != [list(s) for s in IMAGENET_STATS]:
        h.update(f"mean={list(stats[0])};std={list(stats[1])};".encode())
    for key, value in sorted(retrieval_state(model).items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _inference_recipe(model_recipe: dict) -> dict:
    return {**model_recipe, "use_gee": False, "use_cea": False, "pretrained": False, "weights_file": None}


def _build(recipe: dict, state: dict[str, torch.Tensor], source: str) -> MEAN:
    try:
        model = build_model(_inference_recipe(recipe))
    except RecipeError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    own = {k: state[k] for k in model.state_dict() if k in state}  # training-only branches are not built
    check_weights_fit(model, own, source)
    model.load_state_dict(own)
    return model.eval()


def _stats(section: dict, where: str) -> tuple[list[float], list[float]]:
    """(mean, std) recorded in a recipe section, checked: three numbers each (ImageNet if absent)."""
    mean, std = section.get("mean"), section.get("std")
    if mean is None and std is None:
        return list(IMAGENET_STATS[0]), list(IMAGENET_STATS[1])
    for key, value in (("mean", mean), ("std", std)):
        ok = isinstance(value, list) and len(value) == 3
        if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise CheckpointError(f"{where}.{key}={value!r}: expected three numbers")
    return [float(v) for v in mean], [float(v) for v in std]


def _read_export(path: Path, arg: str) -> InferenceModel:
    if not (path / WEIGHTS).is_file() or not (path / CONFIG).is_file():
        raise CheckpointError(f"{arg}={path}: expected {WEIGHTS} and {CONFIG} (a folder written by mean_geo.export)")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / CONFIG}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path / CONFIG}: no model recipe (expected a mean_geo export config)")
    try:
        image_size = image_size_of({"dataset": {"image_size": config.get("image_size")}})
        recipe = model_recipe(config["model"])
    except RecipeError as exc:
        raise CheckpointError(f"{path / CONFIG}: {exc}") from None
    try:
        state = load_file(str(path / WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign weights file
        raise CheckpointError(f"{path / WEIGHTS}: not a readable safetensors file ({type(exc).__name__})") from None
    model = _build(recipe, state, str(path))
    stats = _stats(config.get("normalization") or {}, f"{path / CONFIG}: normalization")
    return InferenceModel(model, image_size, fingerprint(model, image_size, stats), {**config, "model": recipe}, *stats)


def load_model(path: str | Path, arg: str = "ckpt") -> InferenceModel:
    """From a training checkpoint (``.ckpt``) or an export folder (or its ``model.safetensors``).

    ``arg`` names the argument the path came from, for error messages."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == WEIGHTS:
        path = path.parent
    if path.is_dir():
        return _read_export(path, arg)
    ckpt = read_checkpoint(path, arg, for_training=False)
    state = {k.removeprefix("model."): v for k, v in ckpt.state_dict.items() if k.startswith("model.")}
    model = _build(ckpt.recipe["model"], state, f"{arg}={path}")
    image_size = image_size_of(ckpt.recipe)
    stats = _stats(ckpt.recipe.get("dataset") or {}, f"{arg}={path}: dataset")
    return InferenceModel(model, image_size, fingerprint(model, image_size, stats), ckpt.recipe, *stats)


def export(ckpt_path: str | Path, out_dir: str | Path, metrics: dict | None = None) -> Path:
    """Write model.safetensors + config.json + MODEL_CARD.md into a new folder ``out_dir``."""
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out}: exists and is not an empty folder; choose a new folder")
    loaded = load_model(ckpt_path, "ckpt")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()  # empty (checked above); the finished folder takes its place
    with atomic_path(out) as folder:  # a full disk leaves no half export under the final name
        folder.mkdir()
        _write_export(folder, loaded, ckpt_path, metrics)
    return out


def _write_export(out: Path, loaded: InferenceModel, ckpt_path: str | Path, metrics: dict | None) -> None:
    state = {k: v.contiguous() for k, v in retrieval_state(loaded.model).items()}
    save_file(state, str(out / WEIGHTS))
    dataset = loaded.recipe.get("dataset") or {}
    config = {
        "format": "mean_geo/2",
        "model": _inference_recipe(loaded.recipe["model"]),
        "image_size": loaded.image_size,
        "normalization": {"mean": loaded.mean, "std": loaded.std},
        "embedding_dim": loaded.model.embedding_dim,
        "fingerprint": loaded.fingerprint,
        "trained_on": {k: dataset.get(k) for k in ("name", "root", "altitude", "directions") if k in dataset},
        "metrics": metrics or {},
        "source_checkpoint": str(Path(ckpt_path).name),
    }
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (out / CARD).write_text(model_card(config))


def model_card(config: dict) -> str:
    """A dinov2-style card generated from what the export knows (no claims beyond it)."""
    trained = config["trained_on"]
    dataset = trained.get("name") or "unknown"
    metrics = config.get("metrics") or {}
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in sorted(metrics.items()) if isinstance(v, (int, float)))
    return f"""# MEAN cross-view geo-localization model

## Model details
- Architecture: MEAN (Chen, Yang & Rong, IEEE TGRS 2025) — retrieval network only: `{config["model"]["backbone"]}`
  backbone{" + PEE (multiscale)" if config["model"].get("pee") == "multiscale" else ""}, {config["embedding_dim"]}-d
  L2-normalised embedding; the training-only GEE/CEA branches are not included.
- Input: RGB, resized to {config["image_size"]}x{config["image_size"]}, normalised with mean
  {config["normalization"]["mean"]} and std {config["normalization"]["std"]}.
- Fingerprint: `{config["fingerprint"]}` (indexes built with another model are refused).
- Exported from: `{config["source_checkpoint"]}` by mean_geo.

## Intended use
Drone → satellite retrieval (find the satellite tile of the place a drone photo shows) and the reverse
direction, by nearest-neighbour search of embeddings (`python -m mean_geo.index` / `mean_geo.localize`).
Out of scope: metric positioning beyond the tile grid, imagery unlike the training data.

## Training data
- Dataset: {dataset or "unknown"}; altitude(s): {trained.get("altitude", "n/a")};
  evaluated directions: {", ".join(trained.get("directions") or []) or "n/a"}.

## Evaluation (University-1652 protocol, %)
| metric | value |
|---|---|
{rows or "| (none recorded) | |"}

## Loading
```python
from mean_geo.hub import load_model
m = load_model("path/to/this/folder")   # m.model(images) -> (B, {config["embedding_dim"]}) unit vectors
```
"""
