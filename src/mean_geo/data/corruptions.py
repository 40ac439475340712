"""Weather, light and camera corruptions of drone photos, severities 1–5 (the SUES-200 /
University-WX "uncertainty" setting), in torch ops and deterministic per image.

Why not ``imagecorruptions`` (PyPI, Hendrycks & Dietterich's ImageNet-C code)?  Its last release
(1.1.2, 2020) calls scikit-image's ``gaussian(..., multichannel=True)``, an argument scikit-image no
longer has; it pulls OpenCV and scikit-image; it draws from NumPy's *global* random state (not
reproducible per image under data-loader workers); and it has no rain, low light or over-exposure.

Every corruption works on a float ``(3, H, W)`` image in [0, 1] at the evaluated size, with lengths
relative to the image width (so severity means the same at 64 and at 512 px), and draws only from
the generator it is given: :func:`condition_seed` seeds one per (corruption, severity, image), so an
image is corrupted identically in every run, batch order and worker.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from mean_geo.errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)


def _level(values: tuple[float, ...], severity: int) -> float:
    return values[severity - 1]


def _smooth_field(h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """A cloud-like field in [0, 1]: three octaves of coarse noise, upsampled bicubically."""
    field = torch.zeros(1, 1, h, w)
    for cells, weight in ((3, 1.0), (6, 0.5), (12, 0.25)):
        coarse = torch.rand(1, 1, cells, cells, generator=generator)
        field += weight * F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    field = field[0, 0]
    return (field - field.min()) / (field.max() - field.min()).clamp(min=1e-6)


def _streaks(h: int, w: int, count: int, length: int, angle: float, generator: torch.Generator) -> torch.Tensor:
    """``count`` straight streaks of ``length`` pixels at ``angle`` (radians from vertical), drawn
    at once: every point of every streak placed with one ``index_put_``."""
    start = torch.rand(count, 2, generator=generator) * torch.tensor([h + length, w + length]) - length / 2
    steps = torch.arange(length, dtype=torch.float32)
    ys = (start[:, :1] + steps * math.cos(angle)).round().long()
    xs = (start[:, 1:] + steps * math.sin(angle)).round().long()
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    layer = torch.zeros(h, w)
    layer.index_put_((ys[inside], xs[inside]), torch.ones(int(inside.sum())), accumulate=True)
    return layer.clamp(max=1.0)


def _falling(
    image: torch.Tensor, density: float, length: float, max_angle: float, generator: torch.Generator
) -> torch.Tensor:
    """Rain or snow: ``density`` streaks per pixel, ``length`` × the width long, all at one angle
    drawn within ``±max_angle`` degrees of vertical."""
    h, w = image.shape[-2:]
    angle = math.radians(float(torch.empty(()).uniform_(-max_angle, max_angle, generator=generator)))
    return _streaks(h, w, max(1, round(density * h * w)), max(2, round(length * w)), angle, generator)


def _line_kernel(length: int, angle: float) -> torch.Tensor:
    """A normalised ``length × length`` kernel: a line through its centre at ``angle``."""
    kernel = torch.zeros(length, length)
    centre = (length - 1) / 2
    t = torch.linspace(-centre, centre, 4 * length)
    ys = (centre + t * math.sin(angle)).round().long().clamp(0, length - 1)
    xs = (centre + t * math.cos(angle)).round().long().clamp(0, length - 1)
    kernel[ys, xs] = 1.0
    return kernel / kernel.sum()


def _convolve(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    pad = kernel.shape[-1] // 2
    padded = F.pad(image[None], (pad, pad, pad, pad), mode="replicate")
    weight = kernel[None, None].expand(image.shape[0], 1, *kernel.shape)
    return F.conv2d(padded, weight, groups=image.shape[0])[0]


def _screen(image: torch.Tensor, layer: torch.Tensor, strength: float) -> torch.Tensor:
    """Light added on top of the photo (a screen blend), as rain and snowflakes catch the light."""
    return 1.0 - (1.0 - image) * (1.0 - strength * layer)


def fog(image: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """A bright haze of uneven thickness that washes out contrast."""
    h, w = image.shape[-2:]
    field = _smooth_field(h, w, generator)
    thickness = _level((0.3, 0.45, 0.6, 0.72, 0.85), severity) * (0.6 + 0.4 * field)
    haze = 0.75 + 0.25 * field
    return image * (1 - thickness) + haze * thickness


def rain(image: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Slanted bright streaks over a slightly darkened, softened scene."""
    density, lengths = (0.004, 0.007, 0.010, 0.014, 0.018), (0.06, 0.08, 0.10, 0.12, 0.14)
    layer = _falling(image, _level(density, severity), _level(lengths, severity), 20, generator)
    layer = _convolve(layer[None], torch.full((3, 3), 1 / 9))[0].clamp(max=1.0)
    overcast = TF.gaussian_blur(image, [3, 3], [0.6]) * (1.0 - 0.05 * severity)
    return _screen(overcast, layer, _level((0.5, 0.6, 0.7, 0.8, 0.9), severity))


def snow(image: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Falling flakes over a scene whitened by snow cover."""
    density, lengths = (0.005, 0.01, 0.015, 0.02, 0.025), (0.01, 0.015, 0.02, 0.03, 0.04)
    flakes = _falling(image, _level(density, severity), _level(lengths, severity), 45, generator)
    if severity >= 4:  # larger flakes
        flakes = F.max_pool2d(flakes[None, None], 3, stride=1, padding=1)[0, 0]
    grey = image.mean(dim=0, keepdim=True)
    cover = _level((0.1, 0.2, 0.3, 0.4, 0.5), severity)
    whitened = image * (1 - cover) + cover * torch.maximum(image, (grey * 1.5 + 0.5).clamp(max=1.0))
    return _screen(whitened, TF.gaussian_blur(flakes[None], [3, 3], [0.5])[0], 0.9)


def dark(image: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Low light: a darker, more contrasted exposure with sensor noise."""
    gain = _level((0.6, 0.45, 0.33, 0.24, 0.17), severity)
    gamma = _level((1.1, 1.2, 1.35, 1.5, 1.65), severity)
    noise = _level((0.01, 0.015, 0.02, 0.03, 0.04), severity)
    return gain * image.clamp(min=0) ** gamma + noise * torch.randn(image.shape, generator=generator)


def overexpose(image: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Too much light: brightness and an offset that clip the highlights to white."""
    gain = _level((1.3, 1.5, 1.7, 1.9, 2.1), severity)
    offset = _level((0.03, 0.06, 0.09, 0.12, 0.15), severity)
    return image * gain + offset


def motion_blur(image: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """The drone moving during the exposure: a line kernel in a random direction."""
    w = image.shape[-1]
    length = max(3, round(_level((0.03, 0.05, 0.08, 0.11, 0.15), severity) * w)) | 1  # odd
    angle = math.radians(float(torch.empty(()).uniform_(0, 180, generator=generator)))
    return _convolve(image, _line_kernel(length, angle))


def jpeg(image: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Strong JPEG compression (a low-bandwidth video link)."""
    quality = int(_level((30, 20, 14, 10, 7), severity))
    pil = Image.fromarray((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return TF.to_dtype(TF.pil_to_tensor(decoded.convert("RGB")), torch.float32, scale=True)


def noise(image: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian sensor noise."""
    sigma = _level((0.04, 0.06, 0.08, 0.11, 0.15), severity)
    return image + sigma * torch.randn(image.shape, generator=generator)


def blur(image: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Out of focus: a Gaussian blur."""
    sigma = _level((0.008, 0.012, 0.017, 0.024, 0.032), severity) * image.shape[-1]
    size = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(image, [size, size], [sigma])


CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "fog": fog,
    "rain": rain,
    "snow": snow,
    "dark": dark,
    "overexpose": overexpose,
    "motion_blur": motion_blur,
    "jpeg": jpeg,
    "noise": noise,
    "blur": blur,
}


def condition_seed(name: str, severity: int, index: int, seed: int = 0) -> int:
    """The same seed for the same (corruption, severity, image) in every process and run."""
    return zlib.crc32(f"{seed}:{name}:{severity}:{index}".encode())


def corrupt(image: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``image`` (float, ``(3, H, W)``, [0, 1]) under ``name`` at ``severity`` (1–5), in [0, 1]."""
    return CORRUPTIONS[name](image, severity, generator).clamp(0.0, 1.0)


def query_conditions(corruptions, severities) -> list[tuple[str, int]]:
    """``eval.corruptions`` × ``eval.severities`` as checked (name, severity) pairs."""
    names = [corruptions] if isinstance(corruptions, str) else list(corruptions or [])
    if names == ["all"]:
        names = list(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ConfigError(f"eval.corruptions: unknown {unknown}; expected any of {list(CORRUPTIONS)} (or all)")
    levels = [severities] if isinstance(severities, int) else list(severities or [])
    bad = [s for s in levels if isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES]
    if bad or (names and not levels):
        raise ConfigError(f"eval.severities={levels}: expected whole numbers from 1 to 5, e.g. [1,3,5]")
    return [(name, severity) for name in dict.fromkeys(names) for severity in sorted(set(levels))]
