"""The Lightning side of every cross-view dataset: loaders and batch finishing.

Train: location-unique batches of training pairs (``{"drone", "satellite", "label"[, "weight"]}``),
finished on the device they train on.  Validation/test: one loader per evaluation set, in the order
of :meth:`CrossViewDataModule.eval_keys`, each batch naming its set (``batch["key"]``) and carrying
each image's truth (:mod:`mean_geo.data.eval_sets`).  A dataset's own file in this package reads its
layout (the ``read_*`` hooks) and states its protocol (:class:`~mean_geo.retrieval.options.DatasetProtocol`).

Validation never looks at the test split: ``val_locations`` (a share of the *training* places,
chosen by the seed) is held out of training and serves as query and gallery for model selection.
With 0 there is no validation, and the last checkpoint is the one tested (the authors' protocol).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, DistributedSampler

from mean_geo.data.augment import COLOR_JITTER, ViewRecipe, checked_jitter, mean_fill, normalize_batch
from mean_geo.data.coordinates import read_coordinates_csv, read_ground_sizes
from mean_geo.data.datasets import PairedViewsDataset, collate_pairs, make_pairs
from mean_geo.data.decoded_cache import CACHE_KINDS, CachedPairsDataset, DecodedCache, check_cache_dir
from mean_geo.data.device_decode import DECODE_ON, EncodedPairsDataset, collate_encoded, finish_encoded_batch
from mean_geo.data.eval_sets import (
    ROLES,
    CollateEval,
    CorruptedEvalImages,
    EvalImages,
    EvalKey,
    altitudes_of,
    footprints_of,
    place_ids,
    positions_of,
    split_off_validation,
)
from mean_geo.data.layouts import DIRECTIONS, ImageRecord, TrainSplit
from mean_geo.data.official_counts import differences_of
from mean_geo.data.samplers import LocationUniqueBatchSampler
from mean_geo.data.transforms import eval_normalize, eval_resize, eval_transform
from mean_geo.errors import ConfigError, MeanGeoError, whole_number
from mean_geo.retrieval.options import DatasetDescription, DatasetProtocol, EvalOptions
from mean_geo.synthetic.writer import WorldSpec, write_world

log = logging.getLogger(__name__)


@rank_zero_only
def _warn_once(message: str) -> None:
    log.warning(message)


class CrossViewDataModule(L.LightningDataModule):
    """Training pairs and evaluation sets of a cross-view dataset; subclasses read their layout.

    A subclass implements :meth:`read_train` and :meth:`read_eval`, states its :attr:`protocol` and
    registers itself with :func:`mean_geo.datamodules.register_datamodule`; everything else
    (sampling, transforms, loaders, the synthetic world, coordinates) is shared.

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
        eval_options: the run's resolved evaluation options: the corrupted D->S query sets its test
            loaders serve (``eval.corruptions``).  Never read from a config or checkpoint file.

    Raises:
        ConfigError: a direction or a size that cannot be.
    """

    layout: str = ""
    #: the name ``dataset.name`` selects this class by (set by register_datamodule)
    dataset_name: str = ""
    #: how the dataset is evaluated (gallery convention, position metrics, positive sets)
    protocol: DatasetProtocol = DatasetProtocol()

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
        eval_options: EvalOptions | None = None,
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
        self.color_jitter = checked_jitter(color_jitter)
        self.joint_flip_p = joint_flip_p
        self.pin_memory = pin_memory
        # only a synthetic dataset is ever written: a real dataset's root is read, never created or
        # filled (an experiment's world settings can survive a dataset=... switch on the command line)
        self.synthetic = synthetic
        self.synthesize = dict(synthesize) if synthesize and synthetic else None
        self.world_spec: WorldSpec | None = None
        if self.synthesize is not None:  # checked now: a wrong field stops before any work
            try:
                self.world_spec = WorldSpec(layout=self.layout, **{**self.world_spec_kwargs(), **self.synthesize})
            except MeanGeoError as exc:  # the spec names its own field; the user wrote dataset.synthesize.<field>
                raise type(exc)(f"dataset.synthesize.{exc}") from None
        if not 0.0 <= val_locations < 1.0:
            raise ConfigError(f"dataset.val_locations={val_locations}: expected a share of training places in [0, 1)")
        self.val_locations = val_locations
        # the backbone's input statistics (the entry point fills them from timm; None = ImageNet)
        self.mean, self.std = mean, std
        # where places lie (distance metrics): a place,lat,lon or path,lat,lon CSV; by default the
        # root's coordinates.csv when there is one (a synthetic world writes it)
        self.coordinates_csv = coordinates_csv
        self._coordinates: tuple[str, dict] | None = None
        self._ground_sizes: dict[str, float] = {}
        self._full_train: TrainSplit | None = None
        self._train_split: TrainSplit | None = None
        self._val_split: TrainSplit | None = None
        self.train_set: PairedViewsDataset | None = None
        #: the clean evaluation sets of the test split and of the validation places (eval_keys order)
        self.eval_datasets: list[EvalImages] = []
        self.val_datasets: list[EvalImages] = []
        #: (corruption, severity) of each extra test set of corrupted D→S queries (robustness)
        self.query_conditions: tuple[tuple[str, int], ...] = eval_options.corruptions if eval_options else ()
        self.corrupted_datasets: list[CorruptedEvalImages] = []

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
        if self.world_spec is not None:
            write_world(self.world_spec, self.root)
        if self.cache == "uint8":  # once per node; every rank's setup then finds it built
            self.decoded_cache(self.training_pairs()).build(max(1, self.num_workers))

    def eval_keys(self, stage: str = "test") -> list[EvalKey]:
        """The evaluation sets of ``stage``, in the order of its loaders.

        Per direction its query and gallery set; in the test stage the corrupted D→S query sets follow.
        """
        clean = [EvalKey(d, role) for d in self.directions for role in ROLES]
        if stage != "test":
            return clean
        return clean + [EvalKey("d2s", "query", condition) for condition in self.query_conditions]

    @property
    def train_split(self) -> TrainSplit:
        """The places trained on (all training places less the validation share)."""
        if self._train_split is None:
            self._full_train = self.read_train()
            self._train_split, self._val_split = split_off_validation(self._full_train, self.val_locations, self.seed)
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
        folders = [DIRECTIONS[k.direction][ROLES.index(k.role)] for k in self.eval_keys("val")]
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
            keys = self.eval_keys("val")  # the clean sets
            folders = [DIRECTIONS[k.direction][ROLES.index(k.role)] for k in keys]
            records = {f: self.read_eval(f) for f in dict.fromkeys(folders)}
            self.eval_datasets = self.eval_images("test", keys, [records[f] for f in folders])
            if stage in (None, "fit"):
                self.train_split  # noqa: B018 - read (once) for the comparison with the release
                self.warn_if_not_official()
        if stage in (None, "fit", "validate") and not self.val_datasets and self.val_split is not None:
            views = {"drone": self.val_split.drone, "satellite": self.val_split.satellite}
            roles = {"d2s": ("drone", "satellite"), "s2d": ("satellite", "drone")}
            keys = self.eval_keys("val")
            self.val_datasets = self.eval_images(
                "val", keys, [views[roles[k.direction][ROLES.index(k.role)]] for k in keys]
            )

    def eval_images(self, stage: str, keys: list[EvalKey], record_lists: list[list[ImageRecord]]) -> list[EvalImages]:
        """The evaluation sets of one stage, each image with its place id and truth."""
        ids = place_ids(record_lists)
        transform = eval_transform(self.image_size, self.mean, self.std)
        truths = self.eval_truth(stage, dict(zip(keys, record_lists, strict=True)))
        return [
            EvalImages(key, records, [ids[r.location] for r in records], transform, truths[key])
            for key, records in zip(keys, record_lists, strict=True)
        ]

    def eval_truth(self, stage: str, sets: dict[EvalKey, list[ImageRecord]]) -> dict[EvalKey, dict[str, torch.Tensor]]:
        """What the dataset knows of every image of ``stage``'s sets, as per-image tensors.

        Every layout: the altitude (NaN where none) and, where a coordinates table knows places or
        images, the latitude/longitude (NaN rows where it does not).  A layout that knows more (GTA-UAV:
        map metres, positive tiles) adds it.

        Args:
            stage: ``val`` or ``test``.
            sets: the records of each set.

        Returns:
            Per set, its truth (:mod:`mean_geo.data.eval_sets`).
        """
        if self._coordinates is None:  # read once, not at every evaluation
            self._coordinates = self.coordinate_table()
            self._ground_sizes = self.ground_sizes()
        out = {}
        for key, records in sets.items():
            truth = {"altitude": altitudes_of(records)}
            latlon = positions_of(records, self._coordinates, self.root)
            if latlon is not None:
                truth["latlon"] = latlon
                if key == ("d2s", "gallery", None):  # satellite tiles: their footprints, where sized
                    footprints = footprints_of(records, self._coordinates, self._ground_sizes, self.root)
                    if footprints is not None:
                        truth["footprint"] = footprints
            out[key] = truth
        return out

    def ground_sizes(self) -> dict[str, float]:
        """``{key: metres per pixel}`` of the coordinates CSV's ``m_per_px`` column (north-up tiles)."""
        source = Path(self.coordinates_csv).expanduser() if self.coordinates_csv else self.root / "coordinates.csv"
        return read_ground_sizes(source) if source.suffix.lower() == ".csv" and source.is_file() else {}

    def eval_datasets_for(self, stage: str) -> list[EvalImages]:
        """The clean query/gallery sets (in :meth:`eval_keys` order) that ``stage`` evaluates."""
        return self.val_datasets if stage == "val" else self.eval_datasets

    def eval_set(self, stage: str, key: EvalKey) -> EvalImages:
        """One evaluation set of ``stage`` (a clean one, or the test's corrupted queries)."""
        if key.condition is not None:
            return self._corrupted_queries()[self.query_conditions.index(key.condition)]
        return self.eval_datasets_for(stage)[self.eval_keys("val").index(key)]

    def describe(self) -> DatasetDescription:
        """What results and the protocol fingerprint say of the evaluated data."""
        altitudes = getattr(self, "altitudes", None)
        return DatasetDescription(
            name=self.dataset_name or self.layout or type(self).__name__,
            layout=self.layout or type(self).__name__,
            synthetic=bool(self.synthetic),
            altitudes=tuple(altitudes) if altitudes is not None else None,
            image_size=self.image_size,
            root=self.root,
        )

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
        (``batch["key"]``) are already float and pass unchanged.
        """
        if not isinstance(batch, dict) or "key" in batch:
            return batch
        if "drone_encoded" in batch:
            assert self.train_set is not None
            recipes = (self.train_set.drone_recipe, self.train_set.satellite_recipe)
            batch = finish_encoded_batch(batch, *recipes, self.train_set.fill)
        if "drone" in batch and batch["drone"].dtype == torch.uint8:
            batch = {
                **batch,
                "drone": normalize_batch(batch["drone"], self.mean, self.std),
                "satellite": normalize_batch(batch["satellite"], self.mean, self.std),
            }
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

    def _eval_loaders(self, datasets: list[EvalImages]) -> list[DataLoader]:
        world_size, rank = self._world()
        loaders = []
        for ds in datasets:
            # DistributedSampler pads with repeats: the evaluator drops them by dataset index
            sampler = DistributedSampler(ds, world_size, rank, shuffle=False) if world_size > 1 else None
            loaders.append(
                DataLoader(
                    ds,
                    batch_size=self.eval_batch_size,
                    sampler=sampler,
                    shuffle=False,
                    num_workers=self.num_workers,
                    pin_memory=self._pins(),
                    collate_fn=CollateEval(ds.key),
                )
            )
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        """The query and gallery loaders of the held-out validation places (none: no validation)."""
        return self._eval_loaders(self.val_datasets)  # empty without validation places: no validation

    def test_dataloader(self) -> list[DataLoader]:
        """The loaders of :meth:`eval_keys` ("test"): query and gallery sets, then the corrupted queries."""
        return self._eval_loaders(self.eval_datasets + self._corrupted_queries())

    def _corrupted_queries(self) -> list[CorruptedEvalImages]:
        if self.query_conditions and not self.corrupted_datasets:
            clean = self.eval_set("test", EvalKey("d2s", "query"))
            resize, normalize = eval_resize(self.image_size), eval_normalize(self.mean, self.std)
            self.corrupted_datasets = [
                CorruptedEvalImages(clean, resize, normalize, name, severity, self.seed)
                for name, severity in self.query_conditions
            ]
        return self.corrupted_datasets
