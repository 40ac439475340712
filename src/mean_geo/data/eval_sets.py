"""Evaluation sets: named by a typed key, yielding dict samples that carry their own truth.

A val/test loader serves one :class:`EvalImages` set; every batch it makes names the set it comes
from (``batch["key"]``, an :class:`EvalKey`), so nothing downstream decodes a loader's position
into a direction, a role or a corruption.  Each sample carries what the dataset knows about the
image (its place id and name, its file, altitude, position, positive tiles): the evaluator reads
truth from the batch, never from the datamodule.

Sample keys: ``image`` (normalised float tensor), ``place`` (int id), ``index`` (the position in the
set: DDP's padding repeats are dropped by it), ``path`` and ``location`` (str), then the truth the
set has, as tensors of fixed shape so batches collate and gather across ranks:

- ``altitude``: metres (NaN where the layout has none);
- ``latlon``: ``(2,)`` degrees (NaN where the coordinates table does not know the image);
- ``footprint``: ``(4, 2)`` lat/lon corners of a D→S gallery tile whose coordinates table gives its
  ground size (``m_per_px``), NaN elsewhere;
- ``position_m``: ``(2,)`` map metres (GTA-UAV);
- ``positives``: the set's gallery indices of the query's positive tiles, padded with -1 (GTA-UAV).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from mean_geo.data.corruptions import condition_seed, corrupt
from mean_geo.data.datasets import load_rgb
from mean_geo.data.layouts import ImageRecord, TrainSplit
from mean_geo.errors import ConfigError
from mean_geo.utils.earth import EARTH_RADIUS_M

ROLES = ("query", "gallery")


class EvalKey(NamedTuple):
    """Which evaluation set a batch belongs to.

    A named tuple, not a dataclass: Lightning moves batches to the device with
    ``apply_to_collection``, which rebuilds tuples and refuses frozen dataclasses.

    Attributes:
        direction: ``d2s`` or ``s2d``.
        role: ``query`` or ``gallery``.
        condition: ``(corruption, severity)`` of corrupted D->S queries (robustness), None when clean.
    """

    direction: str
    role: str
    condition: tuple[str, int] | None = None

    @property
    def clean(self) -> bool:
        return self.condition is None


def place_ids(record_lists: Sequence[Sequence[ImageRecord]]) -> dict[str, int]:
    """One int id per place name over all sets of an evaluation.

    Real datasets name places by number: those numbers are kept as ids (readable in results).
    """
    names = sorted({r.location for recs in record_lists for r in recs})
    if all(n.isascii() and n.isdigit() for n in names):
        return {n: int(n) for n in names}
    return {n: i for i, n in enumerate(names)}


def split_off_validation(split: TrainSplit, share: float, seed: int) -> tuple[TrainSplit, TrainSplit | None]:
    """Hold ``share`` of the training places out for validation (chosen by ``seed``).

    Returns:
        (the places trained on, the held-out ones or None when ``share`` rounds to no place).

    Raises:
        ConfigError: fewer than two places would be left to train on.
    """
    places = split.locations
    n_val = round(share * len(places))
    if n_val == 0:
        return split, None
    if len(places) - n_val < 2:
        raise ConfigError(
            f"dataset.val_locations={share}: leaves {len(places) - n_val} of {len(places)} "
            "training places to train on (need at least 2)"
        )
    held = set(random.Random(seed).sample(places, n_val))

    def part(keep: bool) -> TrainSplit:
        return TrainSplit(
            [r for r in split.drone if (r.location in held) != keep],
            [r for r in split.satellite if (r.location in held) != keep],
        )

    return part(True), part(False)


def positions_of(
    records: Sequence[ImageRecord], table: tuple[str, dict[str, tuple[float, float]]], root: Path
) -> torch.Tensor | None:
    """``(N, 2)`` latitude/longitude of every record from a coordinates table.

    Args:
        records: the images.
        table: ``(key, {key: (lat, lon)})`` (:func:`mean_geo.data.coordinates.read_coordinates_csv`):
            key ``place`` (each image has its place's position) or ``path`` (its own, the path as
            written relative to ``root`` or absolute).
        root: the dataset's folder.

    Returns:
        The positions, NaN rows where the table does not know an image; None when it knows none.
    """
    key, where = table
    if not where:
        return None
    found = []
    for record in records:
        at = _lookup(record, key, where, root)
        found.append((math.nan, math.nan) if at is None else at)
    if all(math.isnan(lat) for lat, _ in found):
        return None
    return torch.tensor(found, dtype=torch.float64)


def _lookup(record: ImageRecord, key: str, table: dict, root: Path):
    if key == "place":
        return table.get(record.location)
    rel = record.path.relative_to(root) if record.path.is_relative_to(root) else record.path
    return table.get(str(rel)) or table.get(str(record.path))


def footprints_of(
    records: Sequence[ImageRecord],
    table: tuple[str, dict[str, tuple[float, float]]],
    sizes: dict[str, float],
    root: Path,
) -> torch.Tensor | None:
    """``(N, 4, 2)`` lat/lon corners of north-up tiles (top-left, top-right, bottom-right,
    bottom-left) from a coordinates table and its ``m_per_px`` column; NaN where unknown, None
    when no record has one.  The error browser draws the tiles there."""
    key, where = table
    if not where or not sizes:
        return None
    out = torch.full((len(records), 4, 2), math.nan, dtype=torch.float64)
    found = False
    for i, record in enumerate(records):
        centre, m_per_px = _lookup(record, key, where, root), _lookup(record, key, sizes, root)
        if centre is None or m_per_px is None:
            continue
        try:
            with Image.open(record.path) as img:
                width, height = img.size
        except OSError:
            continue
        half_lat = math.degrees(m_per_px * height / 2 / EARTH_RADIUS_M)
        half_lon = math.degrees(m_per_px * width / 2 / EARTH_RADIUS_M) / math.cos(math.radians(centre[0]))
        lat, lon = centre
        corners = [(lat + half_lat, lon - half_lon), (lat + half_lat, lon + half_lon)]
        corners += [(lat - half_lat, lon + half_lon), (lat - half_lat, lon - half_lon)]
        out[i] = torch.tensor(corners, dtype=torch.float64)
        found = True
    return out if found else None


def altitudes_of(records: Sequence[ImageRecord]) -> torch.Tensor:
    """Every record's altitude in metres as float64, NaN where the layout has none."""
    return torch.tensor([math.nan if r.altitude is None else float(r.altitude) for r in records], dtype=torch.float64)


def padded_rows(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Lists of indices of different lengths as one ``(N, max length)`` long tensor, padded with -1."""
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), max(width, 1)), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return out


class EvalImages(Dataset):
    """One evaluation set: its images as dict samples with their truth (module docstring).

    Args:
        key: the set's key.
        records: its images, in a fixed order (the ``index`` of each sample).
        ids: the place id of every record.
        transform: PIL image -> normalised tensor.
        truth: per-image tensors (``altitude``, ``latlon``, ...), first dimension ``len(records)``.
    """

    def __init__(
        self,
        key: EvalKey,
        records: Sequence[ImageRecord],
        ids: Sequence[int],
        transform: Callable,
        truth: dict[str, torch.Tensor] | None = None,
    ) -> None:
        if len(records) != len(ids):
            raise ValueError("records and ids differ in length")
        self.key = key
        self.records = list(records)
        self.location_ids = torch.as_tensor(list(ids), dtype=torch.long)
        self.transform = transform
        self.truth = dict(truth or {})
        for name, values in self.truth.items():
            if len(values) != len(self.records):
                raise ValueError(f"truth {name!r}: {len(values)} rows for {len(self.records)} images")

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> torch.Tensor:
        return self.transform(load_rgb(self.records[index].path))

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        return {
            "image": self.image(index),
            "place": int(self.location_ids[index]),
            "index": index,
            "path": str(record.path),
            "location": record.location,
            **{name: values[index] for name, values in self.truth.items()},
        }


class CorruptedEvalImages(EvalImages):
    """A clean query set under one corruption and severity (robustness evaluation).

    Each image is resized and scaled to [0, 1], corrupted with its own seeded generator (the same in
    every run and worker), then normalised.
    """

    def __init__(
        self, clean: EvalImages, resize: Callable, normalize: Callable, corruption: str, severity: int, seed: int = 0
    ) -> None:
        key = clean.key._replace(condition=(corruption, severity))
        super().__init__(key, clean.records, clean.location_ids.tolist(), clean.transform, clean.truth)
        self.resize, self.normalize = resize, normalize
        self.corruption, self.severity, self.seed = corruption, severity, seed

    def image(self, index: int) -> torch.Tensor:
        image = self.resize(load_rgb(self.records[index].path))
        generator = torch.Generator().manual_seed(condition_seed(self.corruption, self.severity, index, self.seed))
        return self.normalize(corrupt(image, self.corruption, self.severity, generator))


class CollateEval:
    """``default_collate`` of dict samples, with the set's key added as ``batch["key"]``."""

    def __init__(self, key: EvalKey) -> None:
        self.key = key

    def __call__(self, samples: list[dict]) -> dict:
        batch = default_collate(samples)
        batch["key"] = self.key
        return batch
