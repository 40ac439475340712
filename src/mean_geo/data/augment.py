"""Training augmentation in uint8, as parameters drawn once and applied by one of two kernels.

The recipe is the authors' list (spec §5, albumentations in their code): JPEG recompression
(quality 90-100, p 0.5) → resize → colour jitter (p 0.5; brightness, contrast, saturation and hue
in a random order, as torchvision's ``ColorJitter``) → Gaussian blur (5 px, σ 0.1-1.5) or
sharpening (factor 2), p 0.3 → one erased patch of 2-10 % of the image filled with the
normalisation mean (p 0.3) → satellite only: a random number of 90° turns.  The joint mirror of
both views is the paired dataset's (before these); normalisation to the backbone's statistics is
done on the whole batch, on the device it trains on (:func:`normalize_batch`), so workers hand over
uint8 images: a quarter of the bytes, and none of the per-pixel float work.

Why two kernels: the parameters of an image are drawn by :func:`draw` (torch's RNG, so the
DataLoader's per-worker seeds apply), then :func:`apply` runs them either with OpenCV on the CPU
(``kernels="cv2"``: hue rotation, blur and sharpening are 10-40× faster than torchvision's CPU
versions, and the whole pipeline is measured against the authors' in ``python -m mean_geo.bench
--only "loader 384px"``) or with torchvision's functional ops on any device (``kernels="torch"``:
the GPU path, ``dataset.decode_on=gpu``).  The same draws give the same augmentation up to uint8
rounding and OpenCV's 8-bit hue (1/256 of a turn): the distribution is the draw's, not the kernel's.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import get_worker_info

from mean_geo.data.jpeg_codec import recompress
from mean_geo.errors import ConfigError
from mean_geo.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD

#: colour jitter (brightness, contrast, saturation, hue) per view: MEAN's, DAC's and CAMP's values
#: (Sample4Geo's are 0.15 for all four, both views: ``dataset.color_jitter`` in its method file)
COLOR_JITTER = {"satellite": (0.15, 0.3, 0.3, 0.3), "drone": (0.15, 0.7, 0.3, 0.3)}
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
#: torchvision's sharpness kernel (PIL's SMOOTH filter), applied to the image's interior
_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0
KERNELS = ("cv2", "torch")


@dataclass(frozen=True)
class ViewRecipe:
    """What one view's training images go through (probabilities and ranges of the authors' list).

    ``photometric=False, rotate=True`` is ``dataset.augment=geometric`` for the satellite view: only
    what moves pixels without changing a value.
    """

    size: int
    photometric: bool = True
    rotate: bool = False
    jitter: tuple[float, float, float, float] = (0.15, 0.3, 0.3, 0.3)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (90, 100)
    jitter_p: float = 0.5
    filter_p: float = 0.3
    blur_kernel: int = 5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    sharpness: float = 2.0
    erase_p: float = 0.3
    erase_scale: tuple[float, float] = (0.02, 0.1)
    erase_ratio: tuple[float, float] = (0.3, 3.3)


@dataclass
class Draw:
    """One image's random parameters: ``None`` where an op was not drawn."""

    jpeg_quality: int | None = None
    jitter: list[tuple[str, float]] | None = None  # (op, factor) in the order applied
    filter: tuple[str, float] | None = None  # ("blur", sigma) or ("sharpen", factor)
    erase: tuple[int, int, int, int] | None = None  # top, left, height, width at the output size
    turns: int = 0
    ops: list[str] = field(default_factory=list)  # what was drawn, for tests and the bench


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _erase_box(recipe: ViewRecipe) -> tuple[int, int, int, int] | None:
    """torchvision's RandomErasing box: area share and log-uniform aspect, 10 tries to fit."""
    side = recipe.size
    area = side * side
    log_ratio = (math.log(recipe.erase_ratio[0]), math.log(recipe.erase_ratio[1]))
    for _ in range(10):
        erase_area = area * _uniform(*recipe.erase_scale)
        aspect = math.exp(_uniform(*log_ratio))
        h, w = round(math.sqrt(erase_area * aspect)), round(math.sqrt(erase_area / aspect))
        if h < side and w < side:
            top = int(torch.randint(0, side - h + 1, ()))
            left = int(torch.randint(0, side - w + 1, ()))
            return top, left, h, w
    return None


def draw(recipe: ViewRecipe) -> Draw:
    """Draw one image's parameters from torch's global RNG (seeded per DataLoader worker)."""
    d = Draw()
    if recipe.photometric:
        if torch.rand(()) < recipe.jpeg_p:
            d.jpeg_quality = int(torch.randint(recipe.jpeg_quality[0], recipe.jpeg_quality[1] + 1, ()))
            d.ops.append("jpeg")
        if torch.rand(()) < recipe.jitter_p:
            b, c, s, h = recipe.jitter
            ranges = {
                "brightness": (max(0.0, 1 - b), 1 + b),
                "contrast": (max(0.0, 1 - c), 1 + c),
                "saturation": (max(0.0, 1 - s), 1 + s),
                "hue": (-h, h),
            }
            order = [JITTER_OPS[i] for i in torch.randperm(4).tolist()]
            d.jitter = [(op, _uniform(*ranges[op])) for op in order if ranges[op][0] != ranges[op][1]]
            d.ops.append("jitter")
        if torch.rand(()) < recipe.filter_p:
            if torch.rand(()) < 0.5:
                d.filter = ("blur", _uniform(*recipe.blur_sigma))
            else:
                d.filter = ("sharpen", recipe.sharpness)
            d.ops.append(d.filter[0])
        if torch.rand(()) < recipe.erase_p:
            d.erase = _erase_box(recipe)
            if d.erase is not None:
                d.ops.append("erase")
    if recipe.rotate:
        d.turns = int(torch.randint(0, 4, ()))
    return d


def apply(
    image: torch.Tensor, d: Draw, recipe: ViewRecipe, fill: Sequence[int], kernels: str | None = None
) -> torch.Tensor:
    """Apply one image's draw.

    Args:
        image: (3, H, W) uint8 RGB, any device (torchvision's decoders return HWC memory, which
            both kernels use without a copy).
        d: its parameters (:func:`draw`).
        recipe: the view's recipe (the output size).
        fill: the erased patch's RGB value, the normalisation mean in 0-255 (what the reference's
            erasing to 0 after normalisation amounts to).
        kernels: ``cv2`` (CPU only) or ``torch``; by default cv2 on the CPU, torch elsewhere.

    Returns:
        (3, size, size) uint8, on the image's device.
    """
    original = image
    kernels = kernels or ("cv2" if image.device.type == "cpu" else "torch")
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
    if d.jpeg_quality is not None:
        image = _jpeg(image, d.jpeg_quality)
    if image.shape[-2:] != (recipe.size, recipe.size):
        image = TF.resize(image, [recipe.size, recipe.size], antialias=True)
    if kernels == "cv2" and (d.jitter or d.filter):
        _one_opencv_thread_per_worker()
        hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        for op, factor in d.jitter or []:
            hwc = _CV2_JITTER[op](hwc, factor)
        if d.filter is not None:
            kind, value = d.filter
            hwc = _cv2_blur(hwc, recipe.blur_kernel, value) if kind == "blur" else _cv2_sharpen(hwc, value)
        image = torch.from_numpy(hwc).permute(2, 0, 1)
    elif d.jitter or d.filter:
        for op, factor in d.jitter or []:
            image = _TORCH_JITTER[op](image, factor)
        if d.filter is not None and d.filter[0] == "blur":
            k = recipe.blur_kernel
            image = TF.gaussian_blur(image, [k, k], [d.filter[1], d.filter[1]])
        elif d.filter is not None:
            image = TF.adjust_sharpness(image, d.filter[1])
    if d.erase is not None:
        top, left, h, w = d.erase
        image = image.clone() if image is original else image  # the caller's tensor stays as it was
        for channel, value in enumerate(fill):  # Python scalars: no host-to-device copy on a GPU
            image[channel, top : top + h, left : left + w] = int(value)
    if d.turns:
        image = torch.rot90(image, d.turns, dims=(-2, -1))
    return image


def _one_opencv_thread_per_worker() -> None:
    """A DataLoader worker is one core's work: OpenCV's own thread pool (one thread per core by
    default) in each of N workers would oversubscribe the CPU, as torch's would (which the
    DataLoader holds to one thread per worker).  A forked worker is already at one (see
    :func:`_stop_opencv_pool_before_fork`); a spawned one starts a fresh pool, safe to resize."""
    if get_worker_info() is not None and cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


_threads_before_fork: list[int] = []


def _stop_opencv_pool_before_fork() -> None:
    """OpenCV's thread pool does not survive ``fork()``: the child inherits the pool's state but not
    its threads, and its first OpenCV call (or ``setNumThreads``) waits for them forever.  So the
    pool is stopped in the parent, where its threads exist, before every fork (a DataLoader
    starting its workers), and restarted in the parent after; the child runs OpenCV on one thread."""
    threads = cv2.getNumThreads()
    _threads_before_fork.append(threads)
    if threads != 1:
        cv2.setNumThreads(1)


def _restart_opencv_pool_after_fork() -> None:
    threads = _threads_before_fork.pop() if _threads_before_fork else 1
    if threads != 1:
        cv2.setNumThreads(threads)


def _forget_parent_threads_in_child() -> None:
    _threads_before_fork.clear()


os.register_at_fork(
    before=_stop_opencv_pool_before_fork,
    after_in_parent=_restart_opencv_pool_after_fork,
    after_in_child=_forget_parent_threads_in_child,
)


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Re-encode at ``quality`` (libjpeg-turbo through torchvision; nvJPEG, with 4:2:0 chroma, for
    CUDA tensors: :mod:`mean_geo.data.jpeg_codec`, which batches it for ``decode_on=gpu``)."""
    return recompress([image], [quality])[0]


def _lut(hwc: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(hwc, np.clip(table, 0, 255).astype(np.uint8))


def _cv2_brightness(hwc: np.ndarray, factor: float) -> np.ndarray:
    # torchvision: clamp(x * f) then truncation to uint8
    return _lut(hwc, np.arange(256, dtype=np.float32) * factor)


def _cv2_contrast(hwc: np.ndarray, factor: float) -> np.ndarray:
    mean = float(cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY).mean())
    return _lut(hwc, np.arange(256, dtype=np.float32) * factor + mean * (1 - factor))


def _cv2_saturation(hwc: np.ndarray, factor: float) -> np.ndarray:
    gray = cv2.cvtColor(cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    blend = cv2.addWeighted(hwc, factor, gray, 1 - factor, 0, dtype=cv2.CV_32F)
    return np.clip(blend, 0, 255, out=blend).astype(np.uint8)  # truncated, as torchvision's uint8 blend


def _cv2_hue(hwc: np.ndarray, factor: float) -> np.ndarray:
    hsv = cv2.cvtColor(hwc, cv2.COLOR_RGB2HSV_FULL)  # hue as 0-255 for a full turn
    shift = round(factor * 256)
    table = np.stack([(np.arange(256) + shift) % 256, np.arange(256), np.arange(256)], axis=-1)
    hsv = cv2.LUT(hsv, table.astype(np.uint8).reshape(256, 1, 3))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)


def _cv2_blur(hwc: np.ndarray, kernel: int, sigma: float) -> np.ndarray:
    # torchvision pads by reflection without repeating the edge: OpenCV's REFLECT_101
    return cv2.GaussianBlur(hwc, (kernel, kernel), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def _cv2_sharpen(hwc: np.ndarray, factor: float) -> np.ndarray:
    smooth = cv2.filter2D(hwc, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE)
    smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = hwc[0], hwc[-1], hwc[:, 0], hwc[:, -1]
    return cv2.addWeighted(hwc, factor, smooth, 1 - factor, 0)


_CV2_JITTER = {
    "brightness": _cv2_brightness,
    "contrast": _cv2_contrast,
    "saturation": _cv2_saturation,
    "hue": _cv2_hue,
}
_TORCH_JITTER = {
    "brightness": TF.adjust_brightness,
    "contrast": TF.adjust_contrast,
    "saturation": TF.adjust_saturation,
    "hue": TF.adjust_hue,
}


def mean_fill(mean: Sequence[float] | None) -> tuple[int, int, int]:
    """The normalisation mean as a uint8 RGB value (an erased patch becomes 0 once normalised)."""
    return tuple(round(255 * m) for m in (mean or IMAGENET_MEAN))  # type: ignore[return-value]


def normalize_batch(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float32 normalised to the backbone's statistics, on the images' device.

    Args:
        images: a batch of uint8 images (anything floating is returned unchanged: already normal).
        mean: the backbone's per-channel mean in [0, 1] (None: ImageNet's).
        std: the backbone's per-channel std in [0, 1] (None: ImageNet's).

    Returns:
        The float32 batch the model takes.
    """
    if images.is_floating_point():
        return images
    scale, shift = _normalizer(tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD), images.device)
    # (x / 255 - mean) / std as one multiply and one subtract, in place on the float copy, which is
    # contiguous whatever the batch's memory (collate_pairs hands over channels-last uint8)
    floats = images.to(torch.float32, memory_format=torch.contiguous_format)
    return floats.mul_(scale).sub_(shift)


@functools.lru_cache(maxsize=16)
def _normalizer(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """``1 / (255 std)`` and ``mean / std`` on ``device``, made once: building them per batch copied
    them from the host, a sync per batch on a GPU."""
    mean_t = torch.tensor(list(mean), device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std), device=device).view(1, 3, 1, 1)
    return 1.0 / (255.0 * std_t), mean_t / std_t


def checked_jitter(value: dict[str, list[float]] | None) -> dict[str, tuple[float, ...]]:
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
