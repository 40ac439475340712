"""Shareable weights of a trained model: ``model.safetensors`` (only the retrieval network: the
training-only branches are dropped), ``config.json`` (registered architecture + plain arguments,
input size and statistics, fingerprint) and ``README.md``, the model card with the Hub's metadata,
so the folder can be pushed to the Hugging Face Hub as it is.  Optionally ``model.onnx``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from mean_geo.errors import CheckpointError, MeanGeoError
from mean_geo.inference.loading import (
    CARD,
    CONFIG,
    WEIGHTS,
    InferenceModel,
    inference_recipe,
    load_model,
    retrieval_state,
)
from mean_geo.utils.atomic import atomic_path

DATASET_NAMES = {"sues200": "SUES-200", "university1652": "University-1652"}


def export(ckpt_path: str | Path, out_dir: str | Path, metrics: dict | None = None) -> Path:
    """Write the export of a checkpoint (or of another export) into a new folder ``out_dir``."""
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"out={out}: exists and is not an empty folder; choose a new folder")
    loaded = load_model(ckpt_path, "ckpt")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()  # empty (checked above); the finished folder takes its place
    with atomic_path(out) as folder:  # a full disk leaves no half export under the final name
        folder.mkdir()
        write_export(folder, loaded, source=Path(ckpt_path).name, metrics=metrics)
    return out


def write_export(out: Path, loaded: InferenceModel, source: str | None = None, metrics: dict | None = None) -> None:
    """The export files of ``loaded`` into the existing folder ``out``; a model read from an export
    keeps the metrics and source recorded there."""
    state = {k: v.contiguous() for k, v in retrieval_state(loaded.model).items()}
    save_file(state, str(out / WEIGHTS))
    dataset = loaded.recipe.get("dataset") or {}
    config = {
        "format": "mean_geo/2",
        "model": inference_recipe(loaded.recipe["model"]),
        "image_size": loaded.image_size,
        "normalization": {"mean": loaded.mean, "std": loaded.std},
        "embedding_dim": loaded.model.embedding_dim,
        "fingerprint": loaded.fingerprint,
        "trained_on": loaded.recipe.get("trained_on")
        or {k: dataset.get(k) for k in ("name", "root", "altitude", "directions") if k in dataset},
        "metrics": metrics if metrics is not None else loaded.recipe.get("metrics") or {},
        "source_checkpoint": source or loaded.recipe.get("source_checkpoint") or "unknown",
    }
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (out / CARD).write_text(model_card(config))


def run_metrics_near(ckpt: Path) -> dict:
    """The test metrics of the run that wrote the checkpoint, when its metrics.json is there."""
    for candidate in (ckpt.parent.parent / "metrics.json", ckpt.parent / "metrics.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text()).get("metrics", {})
    return {}


def export_onnx(folder: Path, opset: int = 18, atol: float = 1e-4) -> Path:
    """ONNX of the embedding network (dynamic batch); verified with onnxruntime when installed."""
    loaded = load_model(folder)
    path = folder / "model.onnx"
    x = torch.randn(2, 3, loaded.image_size, loaded.image_size)
    try:
        torch.onnx.export(
            loaded.model,
            (x,),
            str(path),
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    except Exception as exc:  # noqa: BLE001
        raise MeanGeoError(f"ONNX export failed ({type(exc).__name__}: {exc}); pip install onnx") from None
    try:
        import onnxruntime as ort
    except ImportError:
        return path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = torch.randn(3, 3, loaded.image_size, loaded.image_size)
    got = torch.from_numpy(session.run(None, {"images": y.numpy()})[0])
    with torch.inference_mode():
        expected = loaded.model(y)
    err = (got - expected).abs().max().item()
    if err > atol:
        raise MeanGeoError(f"{path}: ONNX outputs differ from PyTorch by {err:.2e} (> {atol})")
    return path


def _front_matter(config: dict) -> str:
    """The Hub's card metadata (YAML): library, tags, dataset and the recorded metrics."""
    dataset = DATASET_NAMES.get(config["trained_on"].get("name") or "")
    lines = [
        "---",
        "library_name: mean_geo",
        "pipeline_tag: image-feature-extraction",
        "tags: [cross-view-geo-localization, drone, satellite, image-retrieval, mean_geo]",
    ]
    if dataset:
        lines.append(f"datasets: [{dataset}]")
    metrics = [k for k, v in sorted((config.get("metrics") or {}).items()) if isinstance(v, (int, float))]
    if metrics:
        lines.append(f"metrics: [{', '.join(json.dumps(k) for k in metrics)}]")
    return "\n".join([*lines, "---", ""])


def model_card(config: dict) -> str:
    """A model card generated from what the export knows (no claims beyond it)."""
    trained = config["trained_on"]
    dataset = DATASET_NAMES.get(trained.get("name") or "", trained.get("name") or "unknown")
    metrics = config.get("metrics") or {}
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in sorted(metrics.items()) if isinstance(v, (int, float)))
    dim = config["embedding_dim"]
    return f"""{_front_matter(config)}
# MEAN cross-view geo-localization model

## Model details
- Architecture: MEAN (Chen, Yang & Rong, IEEE TGRS 2025) — retrieval network only: `{config["model"]["backbone"]}`
  backbone{" + PEE (multiscale)" if config["model"].get("pee") == "multiscale" else ""}, {dim}-d
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
- Dataset: {dataset}; altitude(s): {trained.get("altitude", "n/a")};
  evaluated directions: {", ".join(trained.get("directions") or []) or "n/a"}.

## Evaluation (University-1652 protocol, %)
| metric | value |
|---|---|
{rows or "| (none recorded) | |"}

## Loading
```python
import mean_geo
m = mean_geo.load_model("path/to/this/folder")   # or mean_geo.from_pretrained("owner/name")
embeddings = m.model(images)                      # (B, {dim}) unit vectors
```
"""
