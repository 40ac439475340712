"""The model card of an export (``README.md``): the Hub's metadata and what the export knows,
generated from its ``config.json`` (no claims beyond it)."""

from __future__ import annotations

import json

DATASET_NAMES = {"sues200": "SUES-200", "university1652": "University-1652"}


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
