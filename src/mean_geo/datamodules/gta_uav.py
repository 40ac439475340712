"""GTA-UAV (Ji et al. 2025, Game4Loc) as it unpacks (:mod:`mean_geo.data.gta_uav`).

Protocol: drone -> satellite by positive sets (every tile of all zooms in the gallery), metres on
the game map, and refined metres (each photo's footprint centre is known, and each tile's geometry).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mean_geo.data import gta_uav
from mean_geo.data.datasets import WeightedPairsDataset
from mean_geo.data.eval_sets import EvalKey, padded_rows
from mean_geo.data.layouts import ImageRecord, TrainSplit
from mean_geo.data.samplers import ExclusiveBatchSampler
from mean_geo.datamodules.base import CrossViewDataModule
from mean_geo.datamodules.registry import register_datamodule
from mean_geo.errors import ConfigError
from mean_geo.retrieval.options import DatasetProtocol


@register_datamodule("gta_uav")
class GTAUAVDataModule(CrossViewDataModule):
    """GTA-UAV as it unpacks (:mod:`mean_geo.data.gta_uav`), the cross-area or same-area split.

    Training pairs are every semi-positive tile of every training photo with its IoU (the weighted
    InfoNCE reads it), in batches where no photo, and no tile linked to an in-batch photo, appears
    twice (Game4Loc's mutually exclusive sampling); a tile is a class of the identity loss.
    Evaluation is drone → satellite: the test photos with a positive tile against every tile of all
    zooms, by positive sets (:func:`mean_geo.retrieval.positive_sets.evaluate_positive_sets`).  A
    query's place id is its best-overlapping tile (what predictions and the browser mark as the match).

    Args:
        root: the GTA-UAV folder (``drone/images/``, ``satellite/``, the four JSON files).
        split: ``cross_area`` or ``same_area``.
        **kwargs: as :class:`CrossViewDataModule` (directions: ``d2s`` only).
    """

    layout = "gta_uav"
    protocol = DatasetProtocol(
        drop_unmatched_gallery=False,  # the gallery is every tile
        positive_sets=True,
        tile_to_ground=gta_uav.tile_pixel_m,
    )

    def __init__(self, root: str | Path, split: str = "cross_area", **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.split = gta_uav.check_split(split)
        if self.directions != ("d2s",):
            raise ConfigError(
                f"dataset.directions={list(self.directions)}: GTA-UAV is evaluated drone -> satellite, [d2s]"
            )
        if self.val_locations:
            raise ConfigError("dataset.val_locations: GTA-UAV's tiles are shared between photos; hold out none (0)")
        if self.cache != "none" or self.decode_on != "cpu":
            raise ConfigError(
                "dataset.cache / dataset.decode_on: GTA-UAV's PNGs are decoded by the workers (cpu, none)"
            )
        self._records: dict[str, list[gta_uav.DroneRecord]] = {}
        self._tiles: dict[str, Path] | None = None

    def records(self, part: str) -> list[gta_uav.DroneRecord]:
        """The split's records of ``part`` (train / test), read once."""
        if part not in self._records:
            self._records[part] = gta_uav.read_records(self.root, self.split, part)
        return self._records[part]

    @property
    def tiles(self) -> dict[str, Path]:
        """Every tile of ``satellite/`` by name."""
        if self._tiles is None:
            self._tiles = {p.name: p for p in gta_uav.satellite_tiles(self.root)}
        return self._tiles

    @cached_property
    def semi_positive_pairs(self) -> list[tuple[Path, Path, str, float]]:
        """(photo, tile, tile name, IoU) of every semi-positive tile of every training photo."""
        return gta_uav.training_pairs(self.records("train"), self.tiles)

    def read_train(self) -> TrainSplit:
        """The training photos, and the tiles they pair with (the classes)."""
        used = sorted({name for _, _, name, _ in self.semi_positive_pairs})
        drone = [ImageRecord(r.path, r.name, "drone", r.altitude) for r in self.records("train")]
        return TrainSplit(drone, [ImageRecord(self.tiles[n], n, "satellite") for n in used])

    def training_pairs(self) -> list[tuple[Path, Path, int]]:
        """(photo, tile, the tile's class) of every semi-positive tile."""
        label_of = self.train_split.label_of
        return [(photo, tile, label_of[name]) for photo, tile, name, _ in self.semi_positive_pairs]

    def paired_views(self, pairs: list[tuple[Path, Path, int]], *args, **kwargs) -> WeightedPairsDataset:
        """The training set with each pair's IoU, for the weighted InfoNCE."""
        return WeightedPairsDataset(pairs, [iou for *_, iou in self.semi_positive_pairs], *args, **kwargs)

    def warn_if_not_official(self) -> list[str]:
        """The counts of the release are checked by ``python -m mean_geo.check`` (photos and tiles)."""
        return []

    def read_eval(self, folder: str) -> list[ImageRecord]:
        """One evaluation set: ``query_drone`` or ``gallery_satellite``.

        Args:
            folder: ``query_drone`` (the test photos with a positive tile; their place: the
                best-overlapping one) or ``gallery_satellite`` (every tile).

        Returns:
            Its records, in a fixed order.
        """
        if folder == "gallery_satellite":
            return [ImageRecord(path, name, "satellite") for name, path in sorted(self.tiles.items())]
        if folder != "query_drone":
            raise ConfigError(f"GTA-UAV has no '{folder}': it is evaluated drone -> satellite")
        out = []
        for r in self.records("test"):
            if r.positives:
                best = max(r.positives, key=lambda t: dict(r.semipositives).get(t, 0.0))
                out.append(ImageRecord(r.path, best, "drone", r.altitude))
        if not out:
            raise ConfigError(f"{gta_uav.json_name(self.split, 'test')}: no test photo has a positive tile")
        return out

    def eval_truth(self, stage: str, sets: dict[EvalKey, list[ImageRecord]]) -> dict[EvalKey, dict[str, torch.Tensor]]:
        """Besides altitudes: map metres of every image (a photo's footprint centre, a tile's
        centre) and, per test query, the gallery indices of its positive tiles (``pair_pos``)."""
        out = super().eval_truth(stage, sets)
        at = {r.path: r.loc_m for r in self.records("test")}
        positives = {r.path: r.positives for r in self.records("test") if r.positives}
        for key, records in sets.items():
            if key.role == "gallery":
                where = [gta_uav.tile_centre_m(r.location) for r in records]
            else:
                where = [at[r.path] for r in records]
            out[key]["position_m"] = torch.tensor(where, dtype=torch.float64)
        for key, records in sets.items():
            gallery = sets.get(key._replace(role="gallery"))
            if key.role == "query" and gallery is not None:
                index = {r.location: i for i, r in enumerate(gallery)}
                out[key]["positives"] = padded_rows([[index[t] for t in positives[r.path]] for r in records])
        return out

    def train_dataloader(self) -> DataLoader:
        """Batches of mutually exclusive pairs, this rank's share of each global batch."""
        assert self.train_set is not None, "call setup('fit') first"
        pairs = self.semi_positive_pairs
        tiles_of: dict[str, set[str]] = {}
        drones_of: dict[str, set[str]] = {}
        for photo, _, tile, _ in pairs:
            tiles_of.setdefault(photo.name, set()).add(tile)
            drones_of.setdefault(tile, set()).add(photo.name)
        keys = [frozenset({("drone", p.name), ("tile", t)}) for p, _, t, _ in pairs]
        blocks = [
            keys[i] | {("tile", x) for x in tiles_of[p.name]} | {("drone", d) for d in drones_of[t]}
            for i, (p, _, t, _) in enumerate(pairs)
        ]
        world_size, rank = self._world()
        return self._train_loader(ExclusiveBatchSampler(keys, blocks, self.batch_size, self.seed, world_size, rank))
