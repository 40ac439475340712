"""Torch datasets over image records: training pairs and unlabelled image files (evaluation sets:
:mod:`mean_geo.data.eval_sets`)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate
from torchvision.io import ImageReadMode, decode_image

from mean_geo.data.augment import ViewRecipe, apply, draw
from mean_geo.data.layouts import TrainSplit
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


#: what torchvision's libjpeg-turbo/libpng decoders read (faster than PIL, and no PIL → tensor copy)
TORCHVISION_FORMATS = ("JPEG", "PNG", "WEBP")


def read_image(path: Path, min_side: int | None = None) -> torch.Tensor:
    """An image as a (3, H, W) uint8 RGB tensor, as :func:`load_rgb` sees it, decoded the fast way.

    The header is read by PIL first (its decompression-bomb limit, the format, the size); JPEG, PNG
    and WebP are then decoded by torchvision, everything else (TIFF, 16-bit greyscale, …) and
    anything torchvision refuses by :func:`load_rgb`, which names the file when it fails too.

    Args:
        path: the image file.
        min_side: the size it will be resized to: a JPEG at least twice that large is decoded at
            1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), never below ``min_side``.

    Returns:
        The image, in HWC memory (what both augmentation kernels read without a copy).
    """
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
            if fmt == "JPEG" and min_side and min(width, height) >= 2 * min_side:
                img.draft("RGB", (max(min_side, width // 8), max(min_side, height // 8)))
                rgb = ImageOps.exif_transpose(img).convert("RGB")
                return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
    except Image.DecompressionBombError as exc:
        raise DatasetLayoutError(f"{path}: too large to decode safely ({exc}); downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetLayoutError(f"{path}: cannot be decoded as an image ({exc})") from exc
    if fmt in TORCHVISION_FORMATS:
        try:
            image = decode_image(
                torch.frombuffer(bytearray(data), dtype=torch.uint8),
                mode=ImageReadMode.RGB,
                apply_exif_orientation=True,
            )
            if image.dtype == torch.uint8:
                return image
        except RuntimeError:
            pass  # e.g. a CMYK JPEG: PIL reads it
    return torch.from_numpy(np.asarray(load_rgb(path)).copy()).permute(2, 0, 1)


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
    """(drone image, satellite image, location label) for training, as uint8 (3, S, S) tensors.

    The batch is normalised where it trains (:func:`mean_geo.data.augment.normalize_batch`, the
    datamodule's ``on_after_batch_transfer``).  Each image's augmentation is drawn here, from torch's
    RNG, and applied by the CPU kernels (:mod:`mean_geo.data.augment`).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path, int]],
        drone_recipe: ViewRecipe,
        satellite_recipe: ViewRecipe,
        joint_flip_p: float = 0.5,
        fill: Sequence[int] = (124, 116, 104),
    ) -> None:
        self.pairs = list(pairs)
        self.drone_recipe = drone_recipe
        self.satellite_recipe = satellite_recipe
        self.joint_flip_p = joint_flip_p
        self.fill = tuple(fill)

    @property
    def labels(self) -> list[int]:
        return [label for _, _, label in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, path: Path, size: int) -> torch.Tensor:
        """One image as uint8 (3, H, W), before augmentation (a decoded cache overrides this)."""
        return read_image(path, size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        drone_path, sat_path, label = self.pairs[index]
        drone = self.load(drone_path, self.drone_recipe.size)
        sat = self.load(sat_path, self.satellite_recipe.size)
        if torch.rand(()) < self.joint_flip_p:  # the same mirror for both views keeps them consistent
            drone, sat = drone.flip(-1), sat.flip(-1)
        drone = apply(drone, draw(self.drone_recipe), self.drone_recipe, self.fill)
        sat = apply(sat, draw(self.satellite_recipe), self.satellite_recipe, self.fill)
        return drone, sat, label


#: the keys of a training batch; ``weight`` only where pairs carry one (GTA-UAV's footprint IoU)
PAIR_KEYS = ("drone", "satellite", "label", "weight")


def collate_pairs(items: Sequence[tuple]) -> dict[str, torch.Tensor]:
    """Training pairs into a batch, the images as (B, 3, S, S) uint8 in channels-last memory.

    The augmentation leaves each image in HWC memory (what the decoders and OpenCV write); stacking
    them that way is a straight copy, where stacking them as CHW gathered every byte (16 images of
    384 px: 0.24 ms instead of 4 ms of a worker's time).  :func:`~mean_geo.data.augment.normalize_batch`
    makes the float batch contiguous on the device.

    Args:
        items: ``(drone, satellite, label[, weight])`` tuples of :class:`PairedViewsDataset`.

    Returns:
        ``{"drone", "satellite", "label"[, "weight"]}``: the images stacked, the rest collated as
        ``default_collate`` does.
    """
    drones, satellites, *rest = zip(*items, strict=True)

    def stack(images: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)

    batch = {"drone": stack(drones), "satellite": stack(satellites)}
    batch.update({key: default_collate(list(column)) for key, column in zip(PAIR_KEYS[2:], rest, strict=False)})
    return batch


class WeightedPairsDataset(PairedViewsDataset):
    """:class:`PairedViewsDataset` whose pairs each carry a weight (GTA-UAV: the footprint's IoU
    with the tile), returned fourth for the weighted InfoNCE."""

    def __init__(self, pairs: Sequence[tuple[Path, Path, int]], weights: Sequence[float], *args, **kwargs) -> None:
        super().__init__(pairs, *args, **kwargs)
        if len(weights) != len(self.pairs):
            raise ValueError(f"{len(weights)} weights for {len(self.pairs)} pairs")
        self.weights = [float(w) for w in weights]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        return (*super().__getitem__(index), self.weights[index])


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
