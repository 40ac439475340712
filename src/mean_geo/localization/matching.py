"""Local feature matching between a drone photo and a satellite tile.

Two kinds of matcher, one interface: ``features(image)`` once per image (a tile's can be computed
when the index is built and stored in it), then ``match(a, b)`` per pair, giving corresponding
pixel positions (x right, y down, pixel centres at whole numbers: a world file's convention).

- ``sift`` (default) and ``orb``: OpenCV, no weights; nearest neighbours with Lowe's ratio test.
- ``loftr``: kornia's detector-free LoFTR (``pip install mean_geo[match]``), from a weights file the
  user names (``--matcher-weights``): nothing is downloaded at run time, and a file holding another
  model's weights is refused by name.  Its "features" are the grey image at the matcher's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mean_geo.data.datasets import load_rgb
from mean_geo.errors import CheckpointError, MeanGeoError

#: Lowe's ratio test: keep a match whose best distance is below this share of the second best
RATIO = 0.8
MAX_FEATURES = 2000

#: photos and tiles are matched at most this many pixels a side (the bench's 512 px)
MAX_SIDE = 512


def read_for_matching(path: str | Path, max_side: int = MAX_SIDE) -> tuple[np.ndarray, float, float]:
    """An image as RGB uint8, shrunk (never enlarged) to at most ``max_side`` pixels a side, and
    the scale of each axis (new / original)."""
    image = load_rgb(Path(path))
    w, h = image.size
    factor = min(1.0, max_side / max(w, h))
    if factor < 1.0:
        image = image.resize((max(1, round(w * factor)), max(1, round(h * factor))))
    return np.asarray(image), image.size[0] / w, image.size[1] / h


@dataclass
class Features:
    """What a matcher keeps of one image.

    Attributes:
        xy: ``(N, 2)`` keypoint positions in the image's own pixels (float32).
        descriptors: ``(N, D)`` descriptors (SIFT float32, ORB uint8); for a detector-free matcher,
            the grey image it matches, ``(H, W)`` float32 in [0, 1].
        size: ``(width, height)`` of the image the positions are in.
    """

    xy: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]


class Matcher(Protocol):
    name: str

    def features(self, image: np.ndarray) -> Features:
        """``image``: ``(H, W, 3)`` uint8 RGB."""

    def match(self, a: Features, b: Features) -> tuple[np.ndarray, np.ndarray]:
        """Corresponding points ``(M, 2)`` in ``a``'s and ``b``'s pixels."""


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


class OpenCVMatcher:
    """SIFT or ORB keypoints, brute-force nearest neighbours, Lowe's ratio test."""

    def __init__(self, name: str = "sift", max_features: int = MAX_FEATURES, ratio: float = RATIO) -> None:
        import cv2

        self.name, self.ratio = name, ratio
        if name == "sift":
            self._detector, self._norm = cv2.SIFT_create(nfeatures=max_features), cv2.NORM_L2
        elif name == "orb":
            self._detector, self._norm = cv2.ORB_create(nfeatures=max_features), cv2.NORM_HAMMING
        else:
            raise MeanGeoError(f"matcher '{name}': OpenCV matchers are sift and orb")

    def features(self, image: np.ndarray) -> Features:
        keypoints, descriptors = self._detector.detectAndCompute(_grey(image), None)
        xy = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
        width = 128 if self.name == "sift" else 32
        dtype = np.float32 if self.name == "sift" else np.uint8
        descriptors = np.zeros((0, width), dtype) if descriptors is None else descriptors.astype(dtype)
        return Features(xy, descriptors, (image.shape[1], image.shape[0]))

    def match(self, a: Features, b: Features) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        empty = np.zeros((0, 2), np.float32)
        if len(a.xy) < 2 or len(b.xy) < 2:
            return empty, empty
        pairs = cv2.BFMatcher(self._norm).knnMatch(a.descriptors, b.descriptors, k=2)
        kept = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        if not kept:
            return empty, empty
        return a.xy[[m.queryIdx for m in kept]], b.xy[[m.trainIdx for m in kept]]


class LoFTRMatcher:
    """kornia's LoFTR from a local weights file: matches a pair at ``size`` px (a multiple of 8)."""

    name = "loftr"

    def __init__(self, weights: str | Path, size: int = 256, option: str = "--matcher-weights") -> None:
        try:
            import kornia.feature as KF
            import torch
        except ImportError:
            raise MeanGeoError("matcher loftr needs kornia: pip install 'mean_geo[match]'") from None
        self.size = size
        self._model = KF.LoFTR(pretrained=None).eval()
        self._model.load_state_dict(read_matcher_weights(weights, self._model.state_dict(), option))
        self._torch = torch

    def features(self, image: np.ndarray) -> Features:
        import cv2

        grey = cv2.resize(_grey(image), (self.size, self.size), interpolation=cv2.INTER_AREA)
        return Features(np.zeros((0, 2), np.float32), grey.astype(np.float32) / 255.0, (image.shape[1], image.shape[0]))

    def match(self, a: Features, b: Features) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self._model(
                {
                    "image0": torch.from_numpy(a.descriptors)[None, None],
                    "image1": torch.from_numpy(b.descriptors)[None, None],
                }
            )
        pa, pb = out["keypoints0"].numpy(), out["keypoints1"].numpy()
        # back to each image's own pixels (pixel centres: (x + 0.5) · scale - 0.5)
        scale_a = np.array(a.size, np.float32) / self.size
        scale_b = np.array(b.size, np.float32) / self.size
        return ((pa + 0.5) * scale_a - 0.5).astype(np.float32), ((pb + 0.5) * scale_b - 0.5).astype(np.float32)


def read_matcher_weights(path: str | Path, expected: dict, option: str = "--matcher-weights") -> dict:
    """A matcher's state dict from a ``.safetensors`` or ``.pt``/``.pth`` file, loaded without running
    code (safetensors, or ``torch.load(weights_only=True)``), checked against the model's own keys
    and shapes.

    Raises:
        CheckpointError: a missing, unreadable or corrupt file, or another model's weights (one line).
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{option} {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt file of any kind: one line
        raise CheckpointError(f"{option} {path}: not a readable weights file ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the authors' release wraps it
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{option} {path}: expected a state dict of tensors")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[0]
        raise CheckpointError(
            f"{option} {path}: not LoFTR's weights ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} of another shape, e.g. '{example}')"
        )
    return state


MATCHERS = ("sift", "orb", "loftr")


def build_matcher(
    name: str, weights: str | Path | None = None, options: tuple[str, str] = ("--matcher", "--matcher-weights")
) -> Matcher:
    """A matcher by name.

    Args:
        name: one of :data:`MATCHERS`.
        weights: the learned matcher's weights file (required for ``loftr``, refused otherwise).
        options: how the user named the two (errors say it their way).

    Raises:
        MeanGeoError: an unknown name, or weights missing or given where none are used.
    """
    option, weights_option = options
    if name not in MATCHERS:
        raise MeanGeoError(f"{option} {name}: expected one of {', '.join(MATCHERS)}")
    if name == "loftr":
        if weights is None:
            raise MeanGeoError(f"{option} loftr: give its weights file with {weights_option} (nothing is downloaded)")
        return LoFTRMatcher(weights, option=weights_option)
    if weights is not None:
        raise MeanGeoError(f"{weights_option}: matcher {name} uses no weights")
    return OpenCVMatcher(name)
