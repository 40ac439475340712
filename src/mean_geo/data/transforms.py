"""Per-view augmentation pipelines (torchvision transforms v2), after the reference recipe.

Reference (albumentations in the authors' code; spec §5): JPEG quality 90-100 (p 0.5) → resize →
colour jitter (p 0.5; contrast 0.3 satellite / 0.7 drone) → blur or sharpen (p 0.3) → grid or coarse
dropout (p 0.3) → satellite only: random 90° rotation (p 1) → normalisation (ImageNet for ConvNeXt;
the backbone's own statistics from timm's data config for others).  The joint
horizontal flip of both views happens in the paired dataset, before these.
Differences: torchvision has no GridDropout; coarse dropout is RandomErasing of one 2-10 % patch.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomRotate90(torch.nn.Module):
    """Rotate by k·90°, k uniform in {0, 1, 2, 3} (exact for square images; no interpolation)."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 4, ()).item())
        return torch.rot90(img, k, dims=(-2, -1)) if k else img


class RandomJPEG(torch.nn.Module):
    """Re-encode a PIL image as JPEG with a random quality (torchvision's v2.JPEG relies on the
    deprecated ``torchvision.io`` codecs)."""

    def __init__(self, quality: tuple[int, int] = (90, 100)) -> None:
        super().__init__()
        self.quality = quality

    def forward(self, img: Image.Image) -> Image.Image:
        q = int(torch.randint(self.quality[0], self.quality[1] + 1, ()).item())
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=q)
        buf.seek(0)
        return Image.open(buf).convert("RGB")


Stats = Sequence[float] | None

#: colour jitter (brightness, contrast, saturation, hue) per view: MEAN's, DAC's and CAMP's values
#: (Sample4Geo's are 0.15 for all four, both views: ``dataset.color_jitter`` in its method file)
COLOR_JITTER = {"satellite": (0.15, 0.3, 0.3, 0.3), "drone": (0.15, 0.7, 0.3, 0.3)}


def _finish(mean: Stats = None, std: Stats = None) -> list:
    """To float, then the backbone's own normalisation (timm's data config; ImageNet by default)."""
    return [v2.ToDtype(torch.float32, scale=True), eval_normalize(mean, std)]


def eval_transform(image_size: int, mean: Stats = None, std: Stats = None) -> v2.Compose:
    """Resize + normalise, no augmentation (the reference evaluates without TTA)."""
    return v2.Compose([eval_resize(image_size), eval_normalize(mean, std)])


def eval_resize(image_size: int) -> v2.Compose:
    """The first half of :func:`eval_transform`: resized, as float in [0, 1] (where corruptions apply)."""
    return v2.Compose(
        [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True), v2.ToDtype(torch.float32, scale=True)]
    )


def eval_normalize(mean: Stats = None, std: Stats = None) -> v2.Normalize:
    """The second half of :func:`eval_transform`: the backbone's input statistics."""
    return v2.Normalize(list(mean or IMAGENET_MEAN), list(std or IMAGENET_STD))


def train_transform(
    image_size: int,
    view: str,
    augment: bool | str = True,
    mean: Stats = None,
    std: Stats = None,
    jitter: Sequence[float] | None = None,
) -> v2.Compose:
    """Training pipeline of one view ("drone" or "satellite").  ``augment="geometric"`` keeps only
    what changes no pixel's value: the satellite's random 90° turns (and, in the paired dataset,
    the joint mirror of both views) — for short runs from scratch, which the photometric part slows.
    ``jitter``: (brightness, contrast, saturation, hue); default :data:`COLOR_JITTER` of the view."""
    if view not in ("drone", "satellite"):
        raise ValueError(f"view must be 'drone' or 'satellite', got {view!r}")
    photometric = augment is True
    steps: list = [v2.RandomApply([RandomJPEG((90, 100))], p=0.5)] if photometric else []
    steps += [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
    if photometric:
        brightness, contrast, saturation, hue = jitter if jitter is not None else COLOR_JITTER[view]
        steps += [
            v2.RandomApply([v2.ColorJitter(brightness, contrast, saturation, hue)], p=0.5),
            v2.RandomApply(
                [v2.RandomChoice([v2.GaussianBlur(5, sigma=(0.1, 1.5)), v2.RandomAdjustSharpness(2.0, p=1.0)])],
                p=0.3,
            ),
        ]
    steps += _finish(mean, std)
    if photometric:
        steps.append(v2.RandomErasing(p=0.3, scale=(0.02, 0.1), value=0))
    if augment and view == "satellite":
        steps.append(RandomRotate90())
    return v2.Compose(steps)
