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
from mean_geo.errors import MeanGeoError, require_finite
from mean_geo.utils.atomic import atomic_path

INDEX_FORMAT = "mean_geo-index/1"


@dataclass
class GalleryIndex:
    """A gallery index as read: its embeddings, tiles and the model it is for."""

    embeddings: torch.Tensor
    tiles: list[dict]  # {"path": str, "id": str, "latlon": [lat, lon] | None}
    fingerprint: str
    image_size: int
    flip_tta: bool = False  # tiles embedded with their mirror images; localize embeds photos alike


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
) -> Path:
    """Write the index atomically (a partial name, then a rename): complete or absent."""
    metadata = {
        "format": INDEX_FORMAT,
        "fingerprint": fingerprint,
        "image_size": str(image_size),
        "flip_tta": "true" if flip_tta else "false",
        "root": str(root),
        "tiles": json.dumps(
            [{"path": str(p), "id": tile_id(p, root), "latlon": c} for p, c in zip(paths, coords, strict=True)]
        ),
    }
    require_finite(
        embeddings, f"index {out}: tile embeddings", "not written: the model gives NaN/inf (a diverged run?)"
    )
    with atomic_path(out) as partial:
        save_file({"embeddings": embeddings.contiguous()}, str(partial), metadata=metadata)
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
    except Exception as exc:  # noqa: BLE001 - any read error is the user's file
        raise MeanGeoError(f"index={path}: not a mean_geo index ({type(exc).__name__})") from None
    if meta.get("format") != INDEX_FORMAT:
        raise MeanGeoError(f"index={path}: not a mean_geo index (format {meta.get('format')!r})")
    return _checked_index(path, meta, embeddings)


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
        ok = isinstance(tile, dict) and set(tile) <= {"path", "id", "latlon"}
        ok = ok and isinstance(tile.get("path"), str) and isinstance(tile.get("id"), str)
        if not (ok and _is_latlon(tile.get("latlon"))):
            raise bad(f"tile {i} in metadata 'tiles' is not {{path, id, latlon}}")
    return GalleryIndex(embeddings, tiles, meta["fingerprint"], int(meta["image_size"]), meta.get("flip_tta") == "true")
