"""Torch datasets over image records: training pairs and evaluation image lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from mean_geo.data.corruptions import condition_seed, corrupt
from mean_geo.data.layouts import ImageRecord, TrainSplit
from mean_geo.errors import DatasetLayoutError


def load_rgb(path: Path) -> Image.Image:
    """Open an image as RGB as a viewer shows it: EXIF orientation applied, 16-bit greyscale scaled
    to 8 bits (``convert("RGB")`` alone clips it to white).  Decoder errors and images over PIL's
    decompression-bomb limit become one clear line that names the file."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                # 16-bit values (PNG greyscale) -> 8 bits; "I" holds them as 32-bit ints
                img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            return img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise DatasetLayoutError(f"{path}: too large to decode safely ({exc}); downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetLayoutError(f"{path}: cannot be decoded as an image ({exc})") from exc


def make_pairs(split: TrainSplit) -> list[tuple[Path, Path, int]]:
    """Every drone image with its location's satellite image and the location's class label.

    The reference uses the first satellite file of the location (University-1652 has exactly one).
    """
    first_sat: dict[str, Path] = {}
    for r in split.satellite:
        first_sat.setdefault(r.location, r.path)
    label_of = split.label_of
    return [(r.path, first_sat[r.location], label_of[r.location]) for r in split.drone]


class PairedViewsDataset(Dataset):
    """(drone image, satellite image, location label) for training."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path, int]],
        drone_transform: Callable,
        satellite_transform: Callable,
        joint_flip_p: float = 0.5,
    ) -> None:
        self.pairs = list(pairs)
        self.drone_transform = drone_transform
        self.satellite_transform = satellite_transform
        self.joint_flip_p = joint_flip_p

    @property
    def labels(self) -> list[int]:
        return [label for _, _, label in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        drone_path, sat_path, label = self.pairs[index]
        drone, sat = load_rgb(drone_path), load_rgb(sat_path)
        if torch.rand(()) < self.joint_flip_p:  # the same mirror for both views keeps them consistent
            drone = drone.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            sat = sat.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.drone_transform(drone), self.satellite_transform(sat), label


class ImageListDataset(Dataset):
    """(image, location id as int, dataset index) for query/gallery embedding.

    The dataset index lets evaluation drop the samples that DDP's sampler repeats as padding.
    """

    def __init__(self, records: Sequence[ImageRecord], location_ids: Sequence[int], transform: Callable):
        if len(records) != len(location_ids):
            raise ValueError("records and location_ids differ in length")
        self.records = list(records)
        self.location_ids = torch.as_tensor(list(location_ids), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        img = self.transform(load_rgb(self.records[index].path))
        return img, int(self.location_ids[index]), index


class CorruptedImageList(ImageListDataset):
    """An evaluation image list under one corruption and severity (drone queries, robustness
    evaluation): each image resized and scaled to [0, 1], corrupted with its own seeded generator
    (the same in every run and worker), then normalised."""

    def __init__(
        self,
        clean: ImageListDataset,
        resize: Callable,
        normalize: Callable,
        corruption: str,
        severity: int,
        seed: int = 0,
    ) -> None:
        super().__init__(clean.records, clean.location_ids.tolist(), clean.transform)
        self.resize, self.normalize = resize, normalize
        self.corruption, self.severity, self.seed = corruption, severity, seed

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = self.resize(load_rgb(self.records[index].path))
        generator = torch.Generator().manual_seed(condition_seed(self.corruption, self.severity, index, self.seed))
        image = self.normalize(corrupt(image, self.corruption, self.severity, generator))
        return image, int(self.location_ids[index]), index


class ImageFiles(Dataset):
    """Images given by path, in the given order: (image, position).  For galleries and photos that
    carry no labels (an index of tiles, drone photos to localize)."""

    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb(self.paths[i])), i
