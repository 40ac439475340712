"""JPEG recompression and decoding on the device, batched, as the CPU path's libjpeg would do them.

Three things the GPU codecs of torchvision 0.29 do differently from the CPU path, handled here:

- **Chroma.** The CPU encoder (libjpeg) stores colour at half resolution (4:2:0), the authors'
  albumentations pipeline too; torchvision's nvJPEG encoder hard-codes 4:4:4, which keeps all the
  colour detail the augmentation is meant to lose.  :func:`subsample_chroma_420` takes that detail
  out first, as libjpeg does (2×2 box average of Cb and Cr, then its "fancy" triangle upsampling,
  which is bilinear with half-pixel centres), so the 4:4:4 encoder stores 4:2:0 colour.
- **Syncs.** One encode call per distinct quality and one copy of all the bytes to the host per
  batch, instead of an encode → copy → decode round trip per image.
- **Streams and bad files.** See :func:`decode_batch`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

# JPEG's full-range BT.601 YCbCr (JFIF), the colour space libjpeg converts to
_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float32
)
_YCBCR_TO_RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=torch.float32)


def subsample_chroma_420(image: torch.Tensor) -> torch.Tensor:
    """Keep only the colour detail a 4:2:0 JPEG keeps.

    Args:
        image: ``(3, H, W)`` or ``(B, 3, H, W)`` uint8 RGB, any device.

    Returns:
        The same shape, dtype and device: luma untouched, chroma averaged over 2×2 blocks (edges
        replicated to an even size, as libjpeg pads) and upsampled back by libjpeg's triangle filter.
    """
    batched = image if image.dim() == 4 else image[None]
    h, w = batched.shape[-2:]
    x = batched.float()
    to_ycc, to_rgb = _colour_matrices(x.device)
    ycc = torch.einsum("ij,bjhw->bihw", to_ycc, x)
    chroma = F.pad(ycc[:, 1:], (0, w % 2, 0, h % 2), mode="replicate")
    chroma = F.interpolate(F.avg_pool2d(chroma, 2), scale_factor=2, mode="bilinear", align_corners=False)
    ycc = torch.cat([ycc[:, :1], chroma[..., :h, :w]], dim=1)
    rgb = torch.einsum("ij,bjhw->bihw", to_rgb, ycc).round_().clamp_(0, 255).to(torch.uint8)
    return rgb if image.dim() == 4 else rgb[0]


@functools.lru_cache(maxsize=8)
def _colour_matrices(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The two conversion matrices on ``device``, copied there once (not once per image)."""
    return _RGB_TO_YCBCR.to(device), _YCBCR_TO_RGB.to(device)


def decode_batch(data: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG bytes (CPU uint8 tensors) decoded together on ``device`` as RGB.

    On CUDA, torchvision 0.29's batched nvJPEG decode allocates its outputs on the caller's stream
    but decodes on a private stream that does not wait for the work queued on the caller's: memory
    that queued kernels still use can be overwritten (pytorch/vision#9606 measured corruption in
    199 of 200 iterations on an H100; draining the caller's stream first fixed every one).  So the
    caller's stream is drained first: one host sync per batch, not per image.

    A file nvJPEG rejects does not fail the batch: the batch is decoded image by image, and what the
    device cannot read is decoded on the CPU and moved.
    """
    if not data:
        return []
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    try:
        return list(decode_jpeg(list(data), mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out = []
        for one in data:
            try:
                out.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(decode_jpeg(one, mode=ImageReadMode.RGB).to(device))
        return out


def recompress(images: Sequence[torch.Tensor], qualities: Sequence[int]) -> list[torch.Tensor]:
    """Each ``(3, H, W)`` uint8 image re-encoded as a JPEG at its quality and decoded, where it is.

    On the CPU, libjpeg image by image (4:2:0 by itself).  Elsewhere: chroma subsampled to 4:2:0
    (:func:`subsample_chroma_420`), one encode call per distinct quality, one copy of all the bytes to
    the host (the decoder reads them there), one batched decode.
    """
    if len(images) != len(qualities):
        raise ValueError(f"{len(images)} images but {len(qualities)} qualities")
    if not images:
        return []
    device = images[0].device
    if device.type == "cpu":
        return [decode_jpeg(encode_jpeg(image, quality=q)) for image, q in zip(images, qualities, strict=True)]
    encoded: list[torch.Tensor | None] = [None] * len(images)
    for quality in sorted(set(qualities)):
        at = [i for i, q in enumerate(qualities) if q == quality]
        for i, data in zip(
            at, encode_jpeg([subsample_chroma_420(images[i]) for i in at], quality=quality), strict=True
        ):
            encoded[i] = data
    sizes = [int(e.numel()) for e in encoded]  # shapes are known on the host: no sync
    on_host = torch.cat(encoded).cpu().split(sizes)  # type: ignore[arg-type]
    return decode_batch(on_host, device)
