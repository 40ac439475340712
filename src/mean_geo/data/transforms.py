"""Evaluation transforms (torchvision transforms v2): resize, then the backbone's normalisation
(ImageNet for ConvNeXt; the backbone's own statistics from timm's data config for others).

Training augmentation lives in :mod:`mean_geo.data.augment` (uint8 kernels, normalised per batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from mean_geo.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD

Stats = Sequence[float] | None


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
