"""decode_on=gpu's codec work (mean_geo.data.jpeg_codec): 4:2:0 colour like libjpeg, batched calls,
the caller's stream drained before nvJPEG decodes, a bad file not failing its batch.

The CUDA codecs cannot run here: their surroundings run on the fake CUDA device, with torchvision's
CUDA entry points replaced by CPU stand-ins that record how they are called."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import decode_jpeg, encode_jpeg

from mean_geo.data import jpeg_codec
from mean_geo.data.jpeg_codec import recompress, subsample_chroma_420
from tests.helpers.fake_device import FakeCuda, FakeCudaMode


def colourful(seed: int, size: int = 64) -> torch.Tensor:
    """Fine colour detail (what 4:2:0 loses): smooth luma, chroma changing from pixel to pixel."""
    rng = np.random.default_rng(seed)
    base = np.linspace(60, 190, size)[None, :, None] * np.ones((size, 1, 3))
    image = base + rng.uniform(-60, 60, (size, size, 1)) * np.array([1.0, -0.6, 0.2])
    return torch.from_numpy(np.clip(image, 0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()


def pil_jpeg(image: torch.Tensor, quality: int, subsampling: int) -> torch.Tensor:
    """libjpeg through PIL, with the chroma subsampling chosen (0: 4:4:4, 2: 4:2:0)."""
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality, subsampling=subsampling)
    return decode_jpeg(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_444_encoder_fed_subsampled_chroma_gives_what_libjpeg_420_gives(seed):
    """The CPU path (torchvision's libjpeg, 4:2:0) against a 4:4:4 encoder as nvJPEG is: with the
    chroma subsampled first, within ~2 grey levels of the CPU path (measured); without, ~17 (8x further)."""
    image = colourful(seed, 66)  # an odd half-size edge: padded as libjpeg pads
    cpu_path = decode_jpeg(encode_jpeg(image, quality=95)).int()
    assert (cpu_path - pil_jpeg(image, 95, 2).int()).abs().float().mean() < 0.5  # torchvision's CPU encoder: 4:2:0
    emulated = pil_jpeg(subsample_chroma_420(image), 95, 0).int()
    plain_444 = pil_jpeg(image, 95, 0).int()
    assert (emulated - cpu_path).abs().float().mean() < 3.0  # measured ~2.0 (a few grey levels of rounding)
    assert (plain_444 - cpu_path).abs().float().mean() > 5 * (emulated - cpu_path).abs().float().mean()  # ~8x


def test_chroma_subsampling_keeps_luma_and_flat_colour():
    grey = torch.arange(64, dtype=torch.uint8).repeat(3, 64, 1)  # no chroma at all: unchanged
    assert (subsample_chroma_420(grey).int() - grey.int()).abs().max() <= 1
    flat = torch.tensor([200, 40, 90], dtype=torch.uint8).view(3, 1, 1).expand(3, 10, 10).contiguous()
    assert (subsample_chroma_420(flat).int() - flat.int()).abs().max() <= 1
    batch = torch.stack([colourful(3, 16), colourful(4, 16)])
    assert torch.equal(subsample_chroma_420(batch)[1], subsample_chroma_420(batch[1]))


class CudaStandIns:
    """torchvision's CUDA encode/decode and the stream sync, run on the CPU and recorded."""

    def __init__(self, reject: set[int] = frozenset()):
        self.calls: list[tuple] = []
        self.reject = reject

    def encode_jpeg(self, images, quality):
        assert all(isinstance(i, FakeCuda) for i in images)
        self.calls.append(("encode", len(images), quality))
        return [FakeCuda(bytes_of(pil_jpeg_bytes(i.as_subclass(torch.Tensor), quality))) for i in images]

    def decode_jpeg(self, data, mode=None, device=None):
        items = data if isinstance(data, list) else [data]
        assert all(type(d) is torch.Tensor for d in items), "nvJPEG reads its input from the host"
        self.calls.append(("decode", len(items), None if device is None else str(device)))
        if device is not None and any(len(d) in self.reject for d in items):
            raise RuntimeError("nvjpeg: unsupported")
        out = [decode_jpeg(d) for d in items]
        out = [FakeCuda(o) for o in out] if device is not None else out
        return out if isinstance(data, list) else out[0]

    def synchronize(self):
        self.calls.append(("sync",))


def pil_jpeg_bytes(image: torch.Tensor, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def bytes_of(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


@pytest.fixture
def cuda(monkeypatch):
    stand_ins = CudaStandIns()
    monkeypatch.setattr(jpeg_codec, "encode_jpeg", stand_ins.encode_jpeg)
    monkeypatch.setattr(jpeg_codec, "decode_jpeg", stand_ins.decode_jpeg)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stand_ins)
    return stand_ins


def test_a_batch_is_recompressed_with_one_encode_per_quality_and_one_decode(cuda):
    images = [colourful(i, 32) for i in range(6)]
    qualities = [95, 90, 95, 100, 90, 95]
    with FakeCudaMode():
        out = recompress([i.cuda() for i in images], qualities)
    assert all(isinstance(o, FakeCuda) for o in out) and [o.shape for o in out] == [i.shape for i in images]
    assert cuda.calls == [("encode", 2, 90), ("encode", 3, 95), ("encode", 1, 100), ("sync",), ("decode", 6, "cuda:0")]
    for image, quality, found in zip(images, qualities, out, strict=True):  # each its own quality, 4:2:0 colour
        expected = pil_jpeg(subsample_chroma_420(image), quality, 0)
        assert torch.equal(found.as_subclass(torch.Tensor), expected)


def test_the_callers_stream_is_drained_before_nvjpeg_decodes(cuda):
    data = [bytes_of(pil_jpeg_bytes(colourful(i, 16), 90)) for i in range(3)]
    with FakeCudaMode():
        jpeg_codec.decode_batch(data, torch.device("cuda", 0))
    assert cuda.calls == [("sync",), ("decode", 3, "cuda:0")]
    cuda.calls.clear()
    jpeg_codec.decode_batch(data, torch.device("cpu"))  # nothing to drain on the CPU
    assert cuda.calls == [("decode", 3, "cpu")] or cuda.calls == [("decode", 3, None)]


def test_a_file_nvjpeg_rejects_does_not_fail_its_batch(cuda):
    data = [bytes_of(pil_jpeg_bytes(colourful(i, 16 + 8 * i), 90)) for i in range(3)]
    cuda.reject = {len(data[1])}
    with FakeCudaMode():
        out = jpeg_codec.decode_batch(data, torch.device("cuda", 0))
    assert [o.shape[-1] for o in out] == [16, 24, 32] and all(isinstance(o, FakeCuda) for o in out)
    assert ("decode", 1, None) in cuda.calls  # the rejected one, decoded on the CPU and moved
