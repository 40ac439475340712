"""``dataset.decode_on=gpu``: workers read bytes and draw the augmentation; the device decodes and augments.

On a GPU node the CPU workers cannot decode and augment as fast as the GPU trains (docs/benchmarks.md,
``loader 384px``).  Here a worker only reads a JPEG's bytes and draws the image's parameters
(:func:`mean_geo.data.augment.draw`, the same draw as the CPU path, from the worker's seeded RNG);
the batch's JPEGs are decoded together on the device (``torchvision.io.decode_jpeg(..., device=...)``:
nvJPEG on CUDA) and each image is augmented there by torchvision's ops on tensors
(:func:`mean_geo.data.augment.apply` with ``kernels="torch"``), in the datamodule's
``on_after_batch_transfer``.  The same code runs on CPU tensors, which is how it is tested.

What a GPU decoder cannot read is decoded in the worker and travels as a uint8 tensor: files that
are not baseline JPEGs (PNG satellite tiles of SUES-200, TIFF) and JPEGs whose EXIF orientation is
not upright (torchvision applies orientation on the CPU only).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mean_geo.data.augment import Draw, ViewRecipe, apply, draw
from mean_geo.data.datasets import PairedViewsDataset, read_image
from mean_geo.data.jpeg_codec import decode_batch, recompress

DECODE_ON = ("cpu", "gpu")
_EXIF_ORIENTATION = 0x0112

#: one image on its way to the device: a JPEG's bytes, or a uint8 (3, H, W) image decoded in the worker
Encoded = np.ndarray | torch.Tensor


def encode(path: Path, min_side: int) -> Encoded:
    """A JPEG's bytes when the device can decode it as the CPU path would; else the decoded image.

    Args:
        path: the image file.
        min_side: the training size (what the worker-side decode may reduce to).

    Returns:
        A 1-d uint8 array of file bytes, or a (3, H, W) uint8 tensor.
    """
    data = Path(path).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            device_decodable = (
                img.format == "JPEG"
                and img.mode in ("RGB", "L")
                and img.getexif().get(_EXIF_ORIENTATION, 1) == 1
                and min(img.size) < 2 * min_side  # larger ones decode faster at reduced scale, here
            )
    except Exception:  # noqa: BLE001 - read_image names the file and the reason
        device_decodable = False
    if device_decodable:
        return np.frombuffer(data, dtype=np.uint8)
    return read_image(path, min_side)


class EncodedPairsDataset(PairedViewsDataset):
    """The paired dataset of ``decode_on=gpu``: (drone, satellite, label, drone draw, satellite draw,
    mirrored) with the images as :func:`encode` leaves them; batch them with :func:`collate_encoded`."""

    def __getitem__(self, index: int) -> tuple:  # type: ignore[override]
        drone_path, sat_path, label = self.pairs[index]
        flip = bool(torch.rand(()) < self.joint_flip_p)
        return (
            encode(drone_path, self.drone_recipe.size),
            encode(sat_path, self.satellite_recipe.size),
            label,
            draw(self.drone_recipe),
            draw(self.satellite_recipe),
            flip,
        )


#: the keys of a ``decode_on=gpu`` batch before :func:`finish_encoded_batch`
ENCODED_KEYS = ("drone_encoded", "satellite_encoded", "label", "drone_draws", "satellite_draws", "flips")


def collate_encoded(items: Sequence[tuple]) -> dict:
    """``{drone_encoded, satellite_encoded, label, drone_draws, satellite_draws, flips}``: lists, and
    the labels as a tensor (the only tensor Lightning moves; bytes stay on the CPU, where the decoder
    reads them)."""
    drones, sats, labels, drone_draws, sat_draws, flips = zip(*items, strict=True)
    columns = (list(drones), list(sats), torch.as_tensor(labels), list(drone_draws), list(sat_draws), list(flips))
    return dict(zip(ENCODED_KEYS, columns, strict=True))


def decode_and_augment(
    images: Sequence[Encoded],
    draws: Sequence[Draw],
    flips: Sequence[bool],
    recipe: ViewRecipe,
    fill: Sequence[int],
    device: torch.device,
) -> torch.Tensor:
    """One view's batch: JPEGs decoded together on ``device``, each image mirrored and augmented there.

    Args:
        images: per image, JPEG bytes or a decoded uint8 tensor (:func:`encode`).
        draws: per image, its augmentation parameters (drawn in the worker).
        flips: per image, whether the pair is mirrored.
        recipe: the view's recipe.
        fill: the erased patch's RGB value.
        device: where to decode and augment.

    Returns:
        (B, 3, S, S) uint8 on ``device``.
    """
    jpeg_at = [i for i, im in enumerate(images) if isinstance(im, np.ndarray)]
    decoded: list[torch.Tensor | None] = [None] * len(images)
    data = [torch.from_numpy(np.array(images[i])) for i in jpeg_at]  # writable copies of the bytes
    for i, image in zip(jpeg_at, decode_batch(data, device), strict=True):
        decoded[i] = image
    views = []
    for i, image in enumerate(images):
        tensor = decoded[i] if decoded[i] is not None else torch.as_tensor(image).to(device, non_blocking=True)
        views.append(tensor.flip(-1) if flips[i] else tensor)
    # the recompression of the whole batch at once (one encode per quality, one copy to the host)
    again = [i for i, d in enumerate(draws) if d.jpeg_quality is not None]
    for i, image in zip(
        again, recompress([views[i] for i in again], [draws[i].jpeg_quality for i in again]), strict=True
    ):
        views[i] = image
    return torch.stack(
        [
            apply(view, replace(d, jpeg_quality=None), recipe, fill, kernels="torch")
            for view, d in zip(views, draws, strict=True)
        ]
    )


def finish_encoded_batch(
    batch: dict, drone_recipe: ViewRecipe, satellite_recipe: ViewRecipe, fill: Sequence[int]
) -> dict[str, torch.Tensor]:
    """A ``decode_on=gpu`` batch (:func:`collate_encoded`) as uint8 views on the labels' device.

    What training runs in the datamodule's ``on_after_batch_transfer`` and what the bench measures.

    Returns:
        ``{"drone", "satellite", "label"}``: the views ``(B, 3, S, S)`` uint8.
    """
    labels, flips = batch["label"], batch["flips"]
    device = labels.device
    drone = decode_and_augment(batch["drone_encoded"], batch["drone_draws"], flips, drone_recipe, fill, device)
    satellite = decode_and_augment(
        batch["satellite_encoded"], batch["satellite_draws"], flips, satellite_recipe, fill, device
    )
    return {"drone": drone, "satellite": satellite, "label": labels}
