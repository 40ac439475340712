"""LightningDataModules for University-1652 and SUES-200 (real or synthetic, same layouts).

Train: location-unique batches of (drone, satellite, label) pairs.  Validation/test: for every
direction asked for ("d2s" = drone query → satellite gallery, "s2d" = satellite → drone), one
query loader and one gallery loader, in the order given by :attr:`eval_sets`.

Validation never looks at the test split: ``val_locations`` (a share of the *training* places,
chosen by the seed) is held out of training and serves as query and gallery for model selection.
With 0 there is no validation, and the last checkpoint is the one tested (the authors' protocol).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, DistributedSampler

from mean_geo.data import denseuav, gta_uav, layouts
from mean_geo.data.augment import COLOR_JITTER, ViewRecipe, mean_fill, normalize_batch
from mean_geo.data.coordinates import read_coordinates_csv
from mean_geo.data.datasets import (
    CorruptedImageList,
    ImageListDataset,
    PairedViewsDataset,
    WeightedPairsDataset,
    collate_pairs,
    make_pairs,
)
from mean_geo.data.decoded_cache import CACHE_KINDS, CachedPairsDataset, DecodedCache, check_cache_dir
from mean_geo.data.device_decode import DECODE_ON, EncodedPairsDataset, collate_encoded, finish_encoded_batch
from mean_geo.data.layouts import DIRECTIONS, ImageRecord, TrainSplit
from mean_geo.data.official_counts import differences_of
from mean_geo.data.samplers import ExclusiveBatchSampler, LocationUniqueBatchSampler
from mean_geo.data.sues200_raw import sues200_readers
from mean_geo.data.transforms import eval_normalize, eval_resize, eval_transform
from mean_geo.errors import ConfigError, whole_number
from mean_geo.utils.registry import Registry

log = logging.getLogger(__name__)


def _checked_jitter(value: dict[str, list[float]] | None) -> dict[str, tuple[float, ...]]:
    """``dataset.color_jitter``: per view, four numbers (brightness, contrast, saturation >= 0; hue in [0, 0.5])."""
    out: dict[str, tuple[float, ...]] = {}
    for view, numbers in (value or {}).items():
        where = f"dataset.color_jitter.{view}"
        if view not in ("satellite", "drone"):
            raise ConfigError(f"{where}: expected the views satellite and/or drone")
        ok = isinstance(numbers, (list, tuple)) and len(numbers) == 4
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in numbers)
        if not ok or numbers[3] > 0.5:
            raise ConfigError(
                f"{where}={numbers!r}: expected [brightness, contrast, saturation, hue], each >= 0, hue <= 0.5"
            )
        out[view] = tuple(float(v) for v in numbers)
    return out


@rank_zero_only
def _warn_once(message: str) -> None:
    log.warning(message)


@dataclass(frozen=True)
class RefinementGround:
    """Ground truth for refinement in one planar frame (metres).

    Each query photo's true point (by path), a tile pixel's ground point
    (``tile_to_ground(name, col, row, width, height)``) and each photo's positive tiles (by path;
    re-ranked R@1 counts them).
    """

    photos: dict[Path, tuple[float, float]]
    tile_to_ground: Callable[[str, float, float, int, int], tuple[float, float]]
    positives: dict[Path, frozenset[str]]


class CrossViewDataModule(L.LightningDataModule):
    """Training pairs and evaluation sets of a cross-view dataset; subclasses read their layout.

    A subclass implements :meth:`read_train` and :meth:`read_eval` and registers itself with
    :func:`register_datamodule`; everything else (sampling, transforms, loaders, the synthetic
    world, coordinates) is shared.

    Args:
        root: the dataset's folder, as it unpacks.
        image_size: the side of the square training and evaluation images.
        batch_size: pairs per training step on each rank (the global batch is this times the
            ranks, each place at most once in it).
        eval_batch_size: images per evaluation forward pass.
        num_workers: DataLoader worker processes.
        seed: seeds sampling and augmentation.
        directions: the evaluation directions, ``d2s`` and/or ``s2d``.
        augment: ``True`` (the authors' augmentation), ``"geometric"`` (flips and turns only) or
            ``False``.
        joint_flip_p: the chance that both views of a pair are mirrored together.
        pin_memory: pin loader memory; None: when the trainer runs on a CUDA device (not merely
            when one is present: a ``hardware=cpu`` run on a GPU node would create a CUDA context).
        synthesize: the synthetic world to write at ``root`` first (:mod:`mean_geo.synthetic`).
        val_locations: share of the training places held out for validation.
        synthetic: the data is a synthetic world (no official sizes to check against).
        mean: input statistics; None: ImageNet's.
        std: input statistics; None: ImageNet's.
        coordinates_csv: where places are, for metres on the ground; None: ``<root>/coordinates.csv``.
        color_jitter: per view (``satellite``, ``drone``), the colour jitter's (brightness, contrast,
            saturation, hue); a view left out keeps MEAN's and DAC's values (a method's recipe sets its own).
        decode_on: ``cpu`` (workers decode and augment) or ``gpu`` (workers read bytes and draw the
            augmentation; the trainer's device decodes and augments: :mod:`mean_geo.data.device_decode`).
        cache: ``none`` or ``uint8`` (training images decoded once at the training size into a
            memory map: :mod:`mean_geo.data.decoded_cache`).
        cache_dir: where the decoded cache is kept (never inside ``root``).

    Raises:
        ConfigError: a direction or a size that cannot be.
    """

    layout: str = ""
    #: the dataset's own position metrics beside the metres ones (mean_geo.retrieval.conventions)
    position_metrics: str | None = None
    #: the protocol's gallery convention, where ``eval.drop_unmatched_gallery`` is null: ignore gallery
    #: places no query shows (MEAN and Sample4Geo on University-1652 and SUES-200)
    drop_unmatched_gallery: bool = True

    def __init__(
        self,
        root: str | Path,
        image_size: int = 384,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        num_workers: int = 4,
        seed: int = 0,
        directions: Sequence[str] = ("d2s", "s2d"),
        augment: bool | str = True,
        joint_flip_p: float = 0.5,
        pin_memory: bool | None = None,
        synthesize: dict | None = None,
        val_locations: float = 0.0,
        synthetic: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        coordinates_csv: str | None = None,
        color_jitter: dict[str, list[float]] | None = None,
        decode_on: str = "cpu",
        cache: str = "none",
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        if decode_on not in DECODE_ON:
            raise ConfigError(f"dataset.decode_on={decode_on!r}: expected one of {', '.join(DECODE_ON)}")
        if cache not in CACHE_KINDS:
            raise ConfigError(f"dataset.cache={cache!r}: expected one of {', '.join(CACHE_KINDS)}")
        if cache != "none" and decode_on == "gpu":
            raise ConfigError(
                "dataset.cache=uint8 with dataset.decode_on=gpu: the cache holds decoded images, decode_on=gpu "
                "sends JPEG bytes to the device; choose one"
            )
        if cache != "none" and cache_dir is None:
            raise ConfigError("dataset.cache=uint8: dataset.cache_dir must say where the decoded images go")
        self.decode_on, self.cache = decode_on, cache
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        bad = [d for d in directions if d not in DIRECTIONS]
        if bad or not directions:
            raise ConfigError(f"directions {list(directions)}: expected a non-empty subset of {list(DIRECTIONS)}")
        for key, value, least in (
            ("image_size", image_size, 8),
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            whole_number(f"dataset.{key}", value, least)
        self.root = Path(root).expanduser()
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.directions = tuple(directions)
        if not (isinstance(augment, bool) or augment == "geometric"):
            raise ConfigError(f"dataset.augment={augment!r}: expected true, false or geometric")
        self.augment = augment
        self.color_jitter = _checked_jitter(color_jitter)
        self.joint_flip_p = joint_flip_p
        self.pin_memory = pin_memory
        # only a synthetic dataset is ever written: a real dataset's root is read, never created or
        # filled (an experiment's world settings can survive a dataset=... switch on the command line)
        self.synthetic = synthetic
        self.synthesize = dict(synthesize) if synthesize and synthetic else None
        #: writes the synthetic world into a folder; set by whoever builds a synthetic datamodule
        #: (mean_geo.files.specs), so this package never imports the synthetic-world writer
        self.write_world: Callable[[Path], object] | None = None
        if not 0.0 <= val_locations < 1.0:
            raise ConfigError(f"dataset.val_locations={val_locations}: expected a share of training places in [0, 1)")
        self.val_locations = val_locations
        # the backbone's input statistics (the entry point fills them from timm; None = ImageNet)
        self.mean, self.std = mean, std
        # where places lie (distance metrics): a place,lat,lon or path,lat,lon CSV; by default the
        # root's coordinates.csv when there is one (a synthetic world writes it)
        self.coordinates_csv = coordinates_csv
        self._coordinates: tuple[str, dict] | None = None
        self._full_train: TrainSplit | None = None
        self._train_split: TrainSplit | None = None
        self._val_split: TrainSplit | None = None
        self.train_set: PairedViewsDataset | None = None
        self.eval_datasets: list[ImageListDataset] = []
        self.val_datasets: list[ImageListDataset] = []
        #: (corruption, severity) of each extra test loader of corrupted D→S queries (robustness)
        self.query_conditions: list[tuple[str, int]] = []
        self.corrupted_datasets: list[CorruptedImageList] = []

    # --- layout hooks -------------------------------------------------------------------------
    def read_train(self) -> TrainSplit:
        """The training places of the layout (drone and satellite images per place).

        Returns:
            The split, its records in a deterministic order.
        """
        raise NotImplementedError

    def read_eval(self, folder: str) -> list[ImageRecord]:
        """The records of one evaluation folder of the layout.

        Args:
            folder: the layout's name of the set (e.g. ``query_drone``, ``gallery_satellite``).

        Returns:
            Its image records, in a deterministic order.
        """
        raise NotImplementedError

    def world_spec_kwargs(self) -> dict:
        """Extra WorldSpec fields for synthetic data (e.g. the altitudes)."""
        return {}

    def training_pairs(self) -> list[tuple[Path, Path, int]]:
        """(drone image, satellite image, place label) of every training drone image.

        Returns:
            Each drone image with its place's first satellite image (one per place in
            University-1652 and SUES-200); a layout with several tiles a place says which.
        """
        return make_pairs(self.train_split)

    def paired_views(self, pairs: list[tuple[Path, Path, int]], *args, **kwargs) -> PairedViewsDataset:
        """The training set decoded and augmented by the workers.

        A layout whose pairs carry more than their label (GTA-UAV's IoUs) returns its own kind.

        Args:
            pairs: :meth:`training_pairs`.
            *args: the views' recipes, as :class:`PairedViewsDataset`.
            **kwargs: the joint flip and fill, as :class:`PairedViewsDataset`.

        Returns:
            The dataset.
        """
        return PairedViewsDataset(pairs, *args, **kwargs)

    def coordinate_table(self) -> tuple[str, dict]:
        """``(key, {key: (lat, lon)})`` of where places (key ``place``) or images (``path``) are.

        Returns:
            ``dataset.coordinates_csv``, else ``<root>/coordinates.csv`` when there is one (a
            synthetic world writes it), else an empty table.
        """
        source = Path(self.coordinates_csv).expanduser() if self.coordinates_csv else self.root / "coordinates.csv"
        return read_coordinates_csv(source) if self.coordinates_csv or source.is_file() else ("", {})

    # --- Lightning hooks ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Write what is written once per node: the synthetic world, the decoded cache.

        A real dataset is only read; the cache goes to ``cache_dir``, outside it.
        """
        if self.synthesize is not None:
            if self.write_world is None:
                raise ConfigError(
                    "dataset.synthesize: nothing set to write the synthetic world "
                    "(build the datamodule with mean_geo.training.composition.build_datamodule)"
                )
            self.write_world(self.root)
        if self.cache == "uint8":  # once per node; every rank's setup then finds it built
            self.decoded_cache(self.training_pairs()).build(max(1, self.num_workers))

    @property
    def eval_sets(self) -> list[tuple[str, str]]:
        """(direction, "query" | "gallery") of each val/test dataloader, in order."""
        return [(d, role) for d in self.directions for role in ("query", "gallery")]

    @property
    def train_split(self) -> TrainSplit:
        """The places trained on (all training places less the validation share)."""
        if self._train_split is None:
            self._full_train = self.read_train()
            self._train_split, self._val_split = self._split_off_validation(self._full_train)
        return self._train_split

    @property
    def val_split(self) -> TrainSplit | None:
        """Training places held out for model selection (None when ``val_locations`` is 0)."""
        self.train_split  # noqa: B018 - reads and splits once
        return self._val_split

    @property
    def has_validation(self) -> bool:
        """Whether training places were held out for validation (``val_locations`` > 0)."""
        return self.val_split is not None

    def warn_if_not_official(self) -> list[str]:
        """One warning line when a real dataset's copy differs from the release.

        Partial copies are a common cause of "cannot reproduce"; ``python -m mean_geo.check`` lists
        every difference.
        """
        if self.synthetic or self._full_train is None or not self.eval_datasets:
            return []
        folders = [DIRECTIONS[d][0 if role == "query" else 1] for d, role in self.eval_sets]
        evals = {f"test/{f}": ds.records for f, ds in zip(folders, self.eval_datasets, strict=True)}
        train = {"train/drone": self._full_train.drone, "train/satellite": self._full_train.satellite}
        groups = {**train, **evals}
        if self.layout == "sues200":  # per altitude; satellites are one per place, whatever the altitude
            groups = {
                f"{alt}/{g}": [r for r in recs if r.view == "satellite" or r.altitude == alt]
                for alt in self.altitudes
                for g, recs in groups.items()
            }
        differences = differences_of(self.layout, groups, getattr(self, "heights", None))
        if differences:
            more = f" (+{len(differences) - 1} more)" if len(differences) > 1 else ""
            _warn_once(
                f"{self.root} differs from the official {self.layout} release: {differences[0]}{more}; "
                f"python -m mean_geo.check dataset={self.layout} dataset.root={self.root} lists every difference"
            )
        return differences

    def _split_off_validation(self, split: TrainSplit) -> tuple[TrainSplit, TrainSplit | None]:
        places = split.locations
        n_val = round(self.val_locations * len(places))
        if n_val == 0:
            return split, None
        if len(places) - n_val < 2:
            raise ConfigError(
                f"dataset.val_locations={self.val_locations}: leaves {len(places) - n_val} of {len(places)} "
                "training places to train on (need at least 2)"
            )
        held = set(random.Random(self.seed).sample(places, n_val))

        def part(keep: bool) -> TrainSplit:
            return TrainSplit(
                [r for r in split.drone if (r.location in held) != keep],
                [r for r in split.satellite if (r.location in held) != keep],
            )

        return part(True), part(False)

    @property
    def num_classes(self) -> int:
        """The number of training places: the identity classifier's classes."""
        return len(self.train_split.locations)

    def setup(self, stage: str | None = None) -> None:
        """Read the splits and build the datasets of ``stage`` (Lightning's hook; once per stage)."""
        if stage in (None, "fit") and self.train_set is None:
            pairs = self.training_pairs()
            args = (pairs, self.view_recipe("drone"), self.view_recipe("satellite"))
            kwargs = {"joint_flip_p": self.joint_flip_p if self.augment else 0.0, "fill": mean_fill(self.mean)}
            if self.cache == "uint8":
                cache = self.decoded_cache(pairs)
                cache.build(max(1, self.num_workers))
                self.train_set = CachedPairsDataset(*args, cache=cache, **kwargs)
            elif self.decode_on == "gpu":
                self.train_set = EncodedPairsDataset(*args, **kwargs)
            else:
                self.train_set = self.paired_views(*args, **kwargs)
        if not self.eval_datasets:
            folders = [DIRECTIONS[d][0 if role == "query" else 1] for d, role in self.eval_sets]
            records = {f: self.read_eval(f) for f in dict.fromkeys(folders)}
            self.eval_datasets = self._image_lists([records[f] for f in folders])
            if stage in (None, "fit"):
                self.train_split  # noqa: B018 - read (once) for the comparison with the release
                self.warn_if_not_official()
        if stage in (None, "fit", "validate") and not self.val_datasets and self.val_split is not None:
            views = {"drone": self.val_split.drone, "satellite": self.val_split.satellite}
            roles = {"d2s": ("drone", "satellite"), "s2d": ("satellite", "drone")}
            self.val_datasets = self._image_lists(
                [views[roles[d][0 if role == "query" else 1]] for d, role in self.eval_sets]
            )

    def _image_lists(self, record_lists: list[list[ImageRecord]]) -> list[ImageListDataset]:
        names = sorted({r.location for recs in record_lists for r in recs})
        # real datasets name locations by number: keep those numbers as ids (readable in results)
        ids = (
            {n: int(n) for n in names}
            if all(n.isascii() and n.isdigit() for n in names)
            else {n: i for i, n in enumerate(names)}
        )
        tf = eval_transform(self.image_size, self.mean, self.std)
        return [ImageListDataset(recs, [ids[r.location] for r in recs], tf) for recs in record_lists]

    def eval_datasets_for(self, stage: str) -> list[ImageListDataset]:
        """The query/gallery datasets (in :attr:`eval_sets` order) that ``stage`` evaluates."""
        return self.val_datasets if stage == "val" else self.eval_datasets

    def _eval_dataset(self, stage: str, direction: str, role: str) -> ImageListDataset:
        return self.eval_datasets_for(stage)[self.eval_sets.index((direction, role))]

    def eval_records(self, stage: str, direction: str, role: str) -> list[ImageRecord]:
        """The images of one evaluation set (``role``: "query" or "gallery"), in dataset order.

        Each record has its place and altitude; the order is that of the embeddings' dataset indices.
        """
        return list(self._eval_dataset(stage, direction, role).records)

    def eval_altitudes(self, stage: str, direction: str, role: str) -> list[int | None]:
        """The altitude of every image of one evaluation set (None where the layout has none).

        Multi-query evaluation groups a place's drone images per altitude.
        """
        dataset = self._eval_dataset(stage, direction, role)
        return [record.altitude for record in dataset.records]

    def eval_coordinates(self, stage: str, direction: str, role: str) -> torch.Tensor | None:
        """``(N, 2)`` latitude/longitude of every image of one evaluation set.

        Each image has its place's position, or its own in a ``path,lat,lon`` file; NaN rows where
        the table does not know an image, None when it knows none of them.
        """
        if self._coordinates is None:  # read once, not at every evaluation
            self._coordinates = self.coordinate_table()
        key, table = self._coordinates
        if not table:
            return None
        dataset = self._eval_dataset(stage, direction, role)
        found = []
        for record in dataset.records:
            if key == "place":
                where = table.get(record.location)
            else:
                rel = record.path.relative_to(self.root) if record.path.is_relative_to(self.root) else record.path
                where = table.get(str(rel)) or table.get(str(record.path))
            found.append((math.nan, math.nan) if where is None else where)
        if all(math.isnan(lat) for lat, _ in found):
            return None
        return torch.tensor(found, dtype=torch.float64)

    def refinement_ground(self, stage: str) -> RefinementGround | str:
        """What refinement's metres need, or why this layout does not know them.

        That is each D->S photo's true ground point and each tile's pixel -> ground map.
        """
        return (
            f"{self.layout or type(self).__name__}: no per-photo ground truth and tile geometry "
            "(University-1652 and SUES-200 photos look at their place's centre; DenseUAV does not "
            "define its tiles' scale): refined positions are written, no metres computed"
        )

    def eval_image_paths(self, stage: str, direction: str, role: str) -> list[Path]:
        """The image files of one evaluation set (``role``: "query" or "gallery"), in dataset order.

        Figures and prediction tables show them next to the embeddings.
        """
        dataset = self._eval_dataset(stage, direction, role)
        return [record.path for record in dataset.records]

    def _pins(self) -> bool:
        """``pin_memory``, or when unset whether the trainer's device is a CUDA GPU."""
        if self.pin_memory is not None:
            return bool(self.pin_memory)
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def decoded_cache(self, pairs: list[tuple[Path, Path, int]]) -> DecodedCache:
        """The decoded cache of these training pairs at the training size (not yet built)."""
        assert self.cache_dir is not None
        check_cache_dir(self.cache_dir, self.root)
        images = [p for drone, sat, _ in pairs for p in (drone, sat)]
        return DecodedCache(self.cache_dir, images, self.image_size)

    def view_recipe(self, view: str) -> ViewRecipe:
        """What one view's training images go through (``dataset.augment``, ``dataset.color_jitter``)."""
        jitter = self.color_jitter.get(view, COLOR_JITTER[view])
        return ViewRecipe(
            self.image_size,
            photometric=self.augment is True,
            rotate=bool(self.augment) and view == "satellite",
            jitter=tuple(jitter),  # type: ignore[arg-type]
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Finish training batches on the device they train on (Lightning's hook).

        They arrive as uint8 (a quarter of the bytes to move), or with ``decode_on=gpu`` as JPEG
        bytes and drawn parameters: decoded, augmented and normalised here.  Evaluation batches
        are already float and pass unchanged.
        """
        if isinstance(batch, (list, tuple)) and len(batch) == 6 and isinstance(batch[2], torch.Tensor):
            assert self.train_set is not None
            recipes = (self.train_set.drone_recipe, self.train_set.satellite_recipe)
            batch = finish_encoded_batch(batch, *recipes, self.train_set.fill)
        if isinstance(batch, (list, tuple)) and len(batch) in (3, 4) and isinstance(batch[0], torch.Tensor):
            drone, satellite, *rest = batch  # labels (and each pair's weight)
            if drone.dtype == torch.uint8:
                return (
                    normalize_batch(drone, self.mean, self.std),
                    normalize_batch(satellite, self.mean, self.std),
                    *rest,
                )
        return batch

    def train_dataloader(self) -> DataLoader:
        """Batches of place-unique pairs, this rank's share of each global batch."""
        assert self.train_set is not None, "call setup('fit') first"
        world_size, rank = self._world()
        sampler = LocationUniqueBatchSampler(self.train_set.labels, self.batch_size, self.seed, world_size, rank)
        return self._train_loader(sampler)

    def _train_loader(self, sampler) -> DataLoader:
        """The training loader over :attr:`train_set`, batched by ``sampler``."""
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self._pins(),
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_encoded if self.decode_on == "gpu" else collate_pairs,
        )

    def _eval_loaders(self, datasets: list[ImageListDataset]) -> list[DataLoader]:
        world_size, rank = self._world()
        loaders = []
        for ds in datasets:
            # DistributedSampler pads with repeats: the LightningModule de-duplicates by dataset index
            sampler = DistributedSampler(ds, world_size, rank, shuffle=False) if world_size > 1 else None
            loaders.append(
                DataLoader(
                    ds,
                    batch_size=self.eval_batch_size,
                    sampler=sampler,
                    shuffle=False,
                    num_workers=self.num_workers,
                    pin_memory=self._pins(),
                )
            )
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        """The query and gallery loaders of the held-out validation places (none: no validation)."""
        return self._eval_loaders(self.val_datasets)  # empty without validation places: no validation

    def test_dataloader(self) -> list[DataLoader]:
        """The query and gallery loaders of :attr:`eval_sets`, then the corrupted queries.

        One loader of corrupted D→S queries follows per :attr:`query_conditions` entry.
        """
        return self._eval_loaders(self.eval_datasets + self._corrupted_queries())

    def _corrupted_queries(self) -> list[CorruptedImageList]:
        if self.query_conditions and not self.corrupted_datasets:
            if ("d2s", "query") not in self.eval_sets:
                raise ConfigError("eval.corruptions: they apply to drone queries; add d2s to dataset.directions")
            clean = self._eval_dataset("test", "d2s", "query")
            resize, normalize = eval_resize(self.image_size), eval_normalize(self.mean, self.std)
            self.corrupted_datasets = [
                CorruptedImageList(clean, resize, normalize, name, severity, self.seed)
                for name, severity in self.query_conditions
            ]
        return self.corrupted_datasets


#: the dataset layouts a config or checkpoint may name (``dataset.name``); see register_datamodule
DATAMODULES: Registry[type[CrossViewDataModule]] = Registry("dataset", "dataset.name")


def register_datamodule(name: str) -> Callable[[type[CrossViewDataModule]], type[CrossViewDataModule]]:
    """Class decorator: make a layout selectable as ``dataset.name=<name>``.

    Checkpoints store this name and plain arguments, so the layout also loads from them.

    Args:
        name: what ``dataset.name`` (and a checkpoint's spec) calls it.

    Returns:
        The decorator; it refuses a name another class has.
    """
    return DATAMODULES.register(name)


@register_datamodule("university1652")
class University1652DataModule(CrossViewDataModule):
    """University-1652: ``root/train/{drone,satellite}``, ``root/test/{query,gallery}_*``."""

    layout = "university1652"

    def read_train(self) -> TrainSplit:
        """``<root>/train/{drone,satellite}/<place>/``."""
        return layouts.u1652_train(self.root)

    def read_eval(self, folder: str) -> list[ImageRecord]:
        """``<root>/test/<folder>/<place>/``."""
        return layouts.u1652_test(self.root, folder)


@register_datamodule("sues200")
class SUES200DataModule(CrossViewDataModule):
    """SUES-200 as downloaded or after the official split, one altitude or several.

    ``root`` may be either layout, or the folder above the download; one altitude per model is the
    paper's protocol.

    Args:
        root: the dataset's folder.
        altitude: 150, 200, 250 or 300 (metres), several of them, or ``"all"``.
        **kwargs: as :class:`CrossViewDataModule`.
    """

    layout = "sues200"

    def __init__(self, root: str | Path, altitude: int | str | Sequence[int] = 150, **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.altitudes = layouts.parse_altitudes(altitude)

    def world_spec_kwargs(self) -> dict:
        """A synthetic world in this layout has SUES-200's four altitudes."""
        return {"altitudes": layouts.SUES200_ALTITUDES}

    def read_train(self) -> TrainSplit:
        """The 120 training places (the official split), at the chosen altitudes."""
        folder, read_train, _ = sues200_readers(self.root)
        return read_train(folder, self.altitudes)

    def read_eval(self, folder: str) -> list[ImageRecord]:
        """One folder of the 80 test places, at the chosen altitudes."""
        root, _, read_test = sues200_readers(self.root)
        return read_test(root, folder, self.altitudes)


@register_datamodule("denseuav")
class DenseUAVDataModule(CrossViewDataModule):
    """DenseUAV as it unpacks (:mod:`mean_geo.data.denseuav`).

    3,033 dense places, drone photos at 80/90/100 m, six satellite tiles a place, a GPS line a
    place; galleries hold every place.
    Its protocol keeps the gallery whole (``drop_unmatched_gallery``, unless ``eval.`` says otherwise) and
    adds its own SDM@K (degrees) and MA@Tm to the metres metrics, from the GPS file.

    Args:
        root: the DenseUAV folder (``train/``, ``test/``, ``Dense_GPS_ALL.txt``).
        heights: the drone heights used (80, 90, 100, several, or ``"all"``).
        **kwargs: as :class:`CrossViewDataModule`.
    """

    layout = "denseuav"
    position_metrics = "denseuav"
    drop_unmatched_gallery = False  # its test ranks the whole gallery, training places included

    def __init__(self, root: str | Path, heights: int | str | Sequence[int] = "all", **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.heights = denseuav.parse_heights(heights)
        self.altitudes = self.heights  # what results and the fingerprint call the chosen heights

    def world_spec_kwargs(self) -> dict:
        """A synthetic world in this layout has DenseUAV's three heights."""
        return {"altitudes": denseuav.HEIGHTS}

    def read_train(self) -> TrainSplit:
        """``<root>/train/{drone,satellite}/<place>/`` at the chosen heights."""
        return denseuav.read_train(self.root, self.heights)

    def read_eval(self, folder: str) -> list[ImageRecord]:
        """``<root>/test/<folder>/<place>/`` (drone folders at the chosen heights)."""
        return denseuav.read_test(self.root, folder, self.heights)

    def training_pairs(self) -> list[tuple[Path, Path, int]]:
        """Each drone photo with the tile cut for its height."""
        return denseuav.train_pairs(self.train_split)

    def coordinate_table(self) -> tuple[str, dict]:
        """The places' positions from the GPS file (``dataset.coordinates_csv`` overrides it)."""
        if self.coordinates_csv:
            return super().coordinate_table()
        return "place", {p: (g.lat, g.lon) for p, g in denseuav.read_place_gps(self.root).items()}


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
    drop_unmatched_gallery = False  # the gallery is every tile

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

    def _test_positives(self) -> dict[Path, tuple[str, ...]]:
        return {r.path: r.positives for r in self.records("test") if r.positives}

    def eval_positives(self, stage: str, direction: str) -> list[list[int]] | None:
        """Per query (dataset order), the gallery indices of its positive tiles (``pair_pos``)."""
        if stage == "val" or direction != "d2s":
            return None
        index = {r.location: i for i, r in enumerate(self.eval_records(stage, direction, "gallery"))}
        positives = self._test_positives()
        return [[index[t] for t in positives[r.path]] for r in self.eval_records(stage, direction, "query")]

    def refinement_ground(self, stage: str) -> RefinementGround | str:
        """Map metres (east, south) of the test photos and the tiles' pixels.

        A photo's point is its footprint centre; a tile pixel's comes from the map geometry of the
        tile's name, whatever size the tile file has.
        """
        records = self.records("test")
        return RefinementGround(
            photos={r.path: r.loc_m for r in records},
            tile_to_ground=gta_uav.tile_pixel_m,
            positives={r.path: frozenset(r.positives) for r in records if r.positives},
        )

    def eval_positions_m(self, stage: str, direction: str, role: str) -> torch.Tensor:
        """``(N, 2)`` metres on the map: a photo's footprint centre, a tile's centre."""
        if role == "gallery":
            where = [gta_uav.tile_centre_m(r.location) for r in self.eval_records(stage, direction, role)]
        else:
            at = {r.path: r.loc_m for r in self.records("test")}
            where = [at[r.path] for r in self.eval_records(stage, direction, role)]
        return torch.tensor(where, dtype=torch.float64)

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
