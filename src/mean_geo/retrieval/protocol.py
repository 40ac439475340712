"""What makes two evaluation numbers comparable: the protocol fingerprint written beside them.

The field's numbers fail to reproduce when two runs differ in something the table does not show:
the gallery convention, the split, the image size, the altitude, or a metric defined differently
(two SDMs). Every ``metrics.json`` therefore carries :func:`protocol_fingerprint`, and
:func:`convention_protocol` cuts it down to what one metric row (one convention of one direction)
depends on; ``python -m mean_geo.report`` ranks rows in one table only when those are equal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

#: what each metric name means here (a report keeps rows whose definitions differ apart)
METRIC_DEFINITIONS: dict[str, str] = {
    "R@K": "queries with a true match among the top K, % (University-1652)",
    "R@1%": "R@K with K = 1 % of the ranked gallery, %",
    "AP": "trapezoidal average precision over every true match, mean over queries, % (University-1652)",
    "Dis@K": "mean metres (haversine) from the query's position to its top-K items",
    "SDM@K": "Game4Loc: sum (K-i+1) exp(-0.001 d_i[m]) / sum (K-i+1), %",
    "Acc@Tm": "top-1 item within T metres (haversine), %",
}

#: a dataset's own metrics (its datamodule's ``position_metrics``), defined beside the common ones
DATASET_METRIC_DEFINITIONS: dict[str, dict[str, str]] = {
    "denseuav": {
        "DenseUAV_SDM@K": "DenseUAV: sum (K-i+1) exp(-5000 d_i[degrees, Euclidean lon/lat]) / sum (K-i+1), %",
        "DenseUAV_MA@Tm": "DenseUAV: top-1 item within T metres (haversine, R = 6378.137 km), %",
    },
}

#: the d2s_refined row's metrics (mean_geo.training.refined_eval)
REFINED_METRIC_DEFINITIONS: dict[str, str] = {
    "R@1 (refined row)": "R@1 after re-ranking the verified top-N by inliers, %",
    "mean_m / median_m": "metres from the true ground point to the refined position (the top-1 centre where none "
    "was accepted)",
    "retrieval_*": "the same for the top-1 tile's centre",
    "*_correct": "over the photos whose retrieval top-1 is a true match",
    "refined": "photos with an accepted tile, %",
}

#: fields of the fingerprint that every convention of every direction depends on
COMMON_FIELDS = (
    "dataset",
    "layout",
    "synthetic",
    "altitude",
    "image_size",
    "drop_unmatched_gallery",
    "flip_tta",
    "metric_definitions",
)


@dataclass(frozen=True)
class SplitLists:
    """The images one direction was evaluated on, named so that another copy of the dataset (another
    root, another machine) gives the same names: paths relative to the dataset root."""

    queries: Sequence[str]
    gallery: Sequence[str]
    ranked_gallery: int  # gallery items ranked after the gallery convention


def split_hash(split: SplitLists) -> str:
    """12 hex digits of SHA-256 over the sorted query and gallery lists (order-free: the loader's
    order is not part of the protocol)."""
    text = "\n".join(sorted(split.queries)) + "\n--gallery--\n" + "\n".join(sorted(split.gallery))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def digest(value: object) -> str:
    """12 hex digits of SHA-256 of ``value`` as canonical JSON: the id of a protocol."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def protocol_fingerprint(
    *,
    dataset: str,
    layout: str,
    synthetic: bool,
    altitude: Sequence[int] | None,
    image_size: int,
    splits: dict[str, SplitLists],
    conventions: Sequence[str],
    drop_unmatched_gallery: bool,
    flip_tta: bool,
    multi_query: str,
    rerank: dict | None,
    corruptions: Sequence[str] = (),
    severities: Sequence[int] = (),
    position_metrics: str | None = None,
    refine: dict | None = None,
) -> dict:
    """Everything a number of this evaluation depends on besides the model, with its counts.

    Args:
        dataset: the layout's registered name (``dataset.name``).
        layout: the on-disk layout read.
        synthetic: whether the images come from the synthetic world.
        altitude: the drone altitudes evaluated (metres), None for a layout without them.
        image_size: the side the images were resized to.
        splits: per direction (``d2s``, ``s2d``), the query and gallery images.
        conventions: the metric rows written (``d2s``, ``d2s_rerank``, ``d2s_multi_mean``, …).
        drop_unmatched_gallery: the MEAN/Sample4Geo gallery convention.
        flip_tta: whether embeddings average the image and its mirror.
        multi_query: the multi-query mode (``none``, ``mean``, ``max``, ``vote``).
        rerank: k-reciprocal settings, None when off.
        corruptions: the corruptions applied to the drone queries of the ``d2s_corrupt`` rows.
        severities: their severities.
        position_metrics: the dataset's own metrics (:data:`DATASET_METRIC_DEFINITIONS`), if any.
        refine: the refinement's matcher and settings (``d2s_refined`` rows), None when off.

    Returns:
        A JSON-ready dict; ``id`` identifies the whole of it.
    """
    definitions = {**METRIC_DEFINITIONS, **DATASET_METRIC_DEFINITIONS.get(position_metrics or "", {})}
    fingerprint = {
        "dataset": dataset,
        "layout": layout,
        "synthetic": bool(synthetic),
        "altitude": sorted(altitude) if altitude is not None else None,
        "image_size": int(image_size),
        "drop_unmatched_gallery": bool(drop_unmatched_gallery),
        "flip_tta": bool(flip_tta),
        "multi_query": multi_query,
        "rerank": rerank,
        "corruptions": sorted(corruptions),
        "severities": sorted(severities),
        "metric_definitions": definitions,
        "directions": {
            direction: {
                "queries": len(split.queries),
                "gallery": len(split.gallery),
                "ranked_gallery": int(split.ranked_gallery),
                "split": split_hash(split),
            }
            for direction, split in splits.items()
        },
        "conventions": list(conventions),
    }
    if refine is not None:  # absent when off: the ids of earlier fingerprints stay as they were
        fingerprint["refine"] = refine
        fingerprint["metric_definitions"] = {**definitions, **REFINED_METRIC_DEFINITIONS}
    fingerprint["id"] = digest(fingerprint)
    return fingerprint


def convention_protocol(fingerprint: dict, convention: str) -> dict:
    """What the metrics of one convention depend on (the common fields, its direction's split and
    its re-ranking settings); rows are comparable exactly when these are equal.

    Args:
        fingerprint: as written by :func:`protocol_fingerprint`.
        convention: a metric row's name (``d2s``, ``s2d_rerank``, ``d2s_multi_vote``, …).

    Returns:
        The fields, with ``id`` their digest.
    """
    direction = convention.split("_")[0]
    found = {key: fingerprint.get(key) for key in COMMON_FIELDS}
    found.update(
        direction=direction,
        convention=convention,
        split=(fingerprint.get("directions") or {}).get(direction),
        rerank=fingerprint.get("rerank") if convention.endswith("_rerank") else None,
    )
    if convention.endswith("_refined"):
        found["refine"] = fingerprint.get("refine")
    if fingerprint.get("track") is not None:  # a flight's rows (mean_geo.localization.track_metrics)
        found["track"] = fingerprint["track"]
    found["id"] = digest(found)
    return found
