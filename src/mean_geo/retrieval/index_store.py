"""The gallery index file: L2-normalised tile embeddings (safetensors) and what they are.

Its metadata holds the tile paths, ids, coordinates where known and the fingerprint of the model
that embedded them.

An index is data from a file that may come from someone else: every metadata field is checked
for kind and size when read, and nothing in it is executed or imported.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mean_geo.data.coordinates import Coords
from mean_geo.data.numbers import is_pixel_map
from mean_geo.errors import MeanGeoError, require_finite
from mean_geo.utils.atomic import atomic_path

INDEX_FORMAT = "mean_geo-index/1"


@dataclass
class TileFeatures:
    """Local features of every tile, stored in the index.

    Refinement then pays only for the photo and its matches; tile ``i``'s keypoints are rows
    ``offsets[i]:offsets[i + 1]``.
    """

    matcher: str
    max_side: int  # the tiles were read at most this many pixels a side (keypoints in those pixels)
    xy: torch.Tensor  # (M, 2) float32
    descriptors: torch.Tensor  # (M, D)
    offsets: torch.Tensor  # (tiles + 1,) int64
    sizes: torch.Tensor  # (tiles, 2) int64: width, height the keypoints are in

    def of(self, i: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Tile ``i``'s keypoints, descriptors and the (width, height) they are in."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.xy[lo:hi], self.descriptors[lo:hi], (int(self.sizes[i, 0]), int(self.sizes[i, 1]))


@dataclass
class GalleryIndex:
    """A gallery index as read: its embeddings, tiles and the model it is for."""

    embeddings: torch.Tensor
    #: {"path": str, "id": str, "latlon": [lat, lon] | None, "geometry": [A, D, B, E, C, F] | None}
    #: (geometry: the tile's pixel-centre -> lon/lat map, world-file order; absent in older indexes)
    tiles: list[dict]
    fingerprint: str
    image_size: int
    flip_tta: bool = False  # tiles embedded with their mirror images; localize embeds photos alike
    features: TileFeatures | None = None


def tile_id(path: Path, root: Path) -> str:
    """Dataset galleries keep one folder per place (``<id>/<image>``); elsewhere the file stem."""
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else path.stem


def write_index(
    out: Path,
    embeddings: torch.Tensor,
    paths: list[Path],
    root: Path,
    coords: list[Coords | None],
    fingerprint: str,
    image_size: int,
    flip_tta: bool = False,
    geometries: list[list[float] | None] | None = None,
    features: TileFeatures | None = None,
) -> Path:
    """Write the index atomically (a partial name, then a rename): complete or absent."""
    geometries = geometries or [None] * len(paths)
    tiles = [
        {"path": str(p), "id": tile_id(p, root), "latlon": c, "geometry": g}
        for p, c, g in zip(paths, coords, geometries, strict=True)
    ]
    metadata = {
        "format": INDEX_FORMAT,
        "fingerprint": fingerprint,
        "image_size": str(image_size),
        "flip_tta": "true" if flip_tta else "false",
        "root": str(root),
        "tiles": json.dumps(tiles),
    }
    require_finite(
        embeddings, f"index {out}: tile embeddings", "not written: the model gives NaN/inf (a diverged run?)"
    )
    tensors = {"embeddings": embeddings.contiguous()}
    if features is not None:
        metadata["features"] = json.dumps({"matcher": features.matcher, "max_side": features.max_side})
        tensors.update(
            {
                "features_xy": features.xy.contiguous(),
                "features_descriptors": features.descriptors.contiguous(),
                "features_offsets": features.offsets.contiguous(),
                "features_sizes": features.sizes.contiguous(),
            }
        )
    with atomic_path(out) as partial:
        save_file(tensors, str(partial), metadata=metadata)
    return out


def read_index(path: str | Path) -> GalleryIndex:
    """Read and check an index written by ``python -m mean_geo.index``.

    Args:
        path: the index file.

    Returns:
        The index, every metadata field checked for kind and size.

    Raises:
        MeanGeoError: no such file, not an index, or a field that does not hold what it should.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MeanGeoError(f"index={path}: no such index file (build one with python -m mean_geo.index)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            embeddings = fh.get_tensor("embeddings")
            stored = {k: fh.get_tensor(k) for k in fh.keys() if k.startswith("features_")}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001 - any read error is the user's file
        raise MeanGeoError(f"index={path}: not a mean_geo index ({type(exc).__name__})") from None
    if meta.get("format") != INDEX_FORMAT:
        raise MeanGeoError(f"index={path}: not a mean_geo index (format {meta.get('format')!r})")
    index = _checked_index(path, meta, embeddings)
    if "features" in meta:
        index.features = _checked_features(path, meta["features"], stored, len(index.tiles))
    return index


def _is_geometry(value: object) -> bool:
    """None, or a tile's pixel -> ground map as JSON gives it (a list: :func:`is_pixel_map`)."""
    return value is None or (isinstance(value, list) and is_pixel_map(value))


def _checked_features(path: Path, text: str, stored: dict[str, torch.Tensor], tiles: int) -> TileFeatures:
    def bad(what: str) -> MeanGeoError:
        return MeanGeoError(f"index={path}: its tile features {what}; rebuild it with python -m mean_geo.index")

    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        raise bad("description is not JSON") from None
    if not (isinstance(info, dict) and isinstance(info.get("matcher"), str) and isinstance(info.get("max_side"), int)):
        raise bad("description is not {matcher, max_side}")
    need = ("features_xy", "features_descriptors", "features_offsets", "features_sizes")
    if any(k not in stored for k in need):
        raise bad("are incomplete")
    xy, desc, offsets, sizes = (stored[k] for k in need)
    ok = xy.ndim == 2 and xy.shape[1] == 2 and desc.ndim == 2 and desc.shape[0] == xy.shape[0]
    ok = ok and offsets.shape == (tiles + 1,) and sizes.shape == (tiles, 2) and offsets.dtype == torch.int64
    ok = (
        ok and int(offsets[0]) == 0 and int(offsets[-1]) == xy.shape[0] and bool(torch.all(offsets[1:] >= offsets[:-1]))
    )
    if not ok or not bool(torch.isfinite(xy).all()):
        raise bad("do not fit the tiles")
    return TileFeatures(info["matcher"], info["max_side"], xy, desc, offsets, sizes)


def _is_latlon(value: object) -> bool:
    """None, or [lat, lon] in degrees: finite numbers on the globe."""
    if value is None:
        return True
    if not (isinstance(value, list) and len(value) == 2):
        return False
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return False
    return abs(value[0]) <= 90 and abs(value[1]) <= 180


def _checked_index(path: Path, meta: dict[str, str], embeddings: torch.Tensor) -> GalleryIndex:
    """Every metadata field is checked for kind and size."""

    def bad(what: str) -> MeanGeoError:
        return MeanGeoError(f"index={path}: {what}; rebuild it with python -m mean_geo.index")

    if embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise bad(f"embeddings of shape {tuple(embeddings.shape)} ({embeddings.dtype}), expected (tiles, dim) floats")
    require_finite(embeddings, f"index={path}: tile embeddings", "rebuild it with python -m mean_geo.index")
    if meta.get("flip_tta", "false") not in ("true", "false"):  # absent before 0.3: no flip
        raise bad("metadata 'flip_tta' is neither 'true' nor 'false'")
    if not re.fullmatch(r"[0-9a-f]{16}", meta.get("fingerprint", "")):
        raise bad("metadata 'fingerprint' is not a model fingerprint")
    if not re.fullmatch(r"[0-9]{1,4}", meta.get("image_size", "")) or not 8 <= int(meta["image_size"]) <= 4096:
        raise bad("metadata 'image_size' is not a whole number of pixels (8..4096)")
    try:
        tiles = json.loads(meta.get("tiles", ""))
    except json.JSONDecodeError:
        raise bad("metadata 'tiles' is not JSON") from None
    if not isinstance(tiles, list) or len(tiles) != embeddings.shape[0]:
        raise bad(f"metadata 'tiles' is not a list of {embeddings.shape[0]} tiles")
    for i, tile in enumerate(tiles):
        ok = isinstance(tile, dict) and set(tile) <= {"path", "id", "latlon", "geometry"}
        ok = ok and isinstance(tile.get("path"), str) and isinstance(tile.get("id"), str)
        if not (ok and _is_latlon(tile.get("latlon")) and _is_geometry(tile.get("geometry"))):
            raise bad(f"tile {i} in metadata 'tiles' is not {{path, id, latlon, geometry}}")
    return GalleryIndex(embeddings, tiles, meta["fingerprint"], int(meta["image_size"]), meta.get("flip_tta") == "true")
