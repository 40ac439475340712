"""GTA-UAV (Ji et al., Game4Loc, AAAI 2025) as it unpacks: drone photos over one map cut into tiles.

::

    <root>/drone/images/<alt>_<nnnn>_<nnnnnnnnnn>.png          33,763 photos, 80-650 m
    <root>/satellite/<zoom>_<offset>_<x>_<y>.png                 14,640 tiles, zoom 4-7, one flat folder
    <root>/{cross,same}-area-drone2sate-{train,test}.json        a list of records, a record a photo

A record names its photo (``drone_img_dir``, ``drone_img_name``), where its ground footprint's
centre lies on the map (``drone_loc_x_y``, metres), its positive tiles (``pair_pos_sate_img_list``,
IoU > 0.39 with the footprint) and its positive + semi-positive tiles
(``pair_pos_semipos_sate_img_list``, IoU > 0.14), each with its IoU
(``pair_pos_semipos_sate_weight_list``).  Tiles are shared between photos: the positives are sets,
not one place id.  A tile's centre follows from its name and the map's geometry: the map is
24,576 px at 0.45 m/px; a zoom-z tile is 24,576 / 2^z px; its centre is
``tile_px·(x + ½ + offset/256)·0.45`` metres east and ``tile_px·(y + ½ + offset/256)·0.45`` south.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mean_geo.data.layouts import check_image_file
from mean_geo.data.numbers import finite
from mean_geo.errors import DatasetLayoutError

NAME = "GTA-UAV"
SPLITS = {"cross_area": "cross-area", "same_area": "same-area"}
MAP_PX, METRES_PER_PX, TILE_PX = 24_576, 0.45, 256
ZOOMS = (4, 5, 6, 7)
TILE_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.png$")
DRONE_NAME = re.compile(r"^(\d+)_(\d{4})_(\d{10})\.png$")
RECORD_KEYS = (
    "drone_img_dir",
    "drone_img_name",
    "drone_loc_x_y",
    "pair_pos_sate_img_list",
    "pair_pos_semipos_sate_img_list",
    "pair_pos_semipos_sate_weight_list",
)


def json_name(split: str, part: str) -> str:
    """``cross-area-drone2sate-train.json`` for ``("cross_area", "train")``."""
    return f"{SPLITS[split]}-drone2sate-{part}.json"


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DatasetLayoutError(f"dataset.split={split!r}: expected one of {', '.join(SPLITS)}")
    return split


def tile_centre_m(name: str) -> tuple[float, float]:
    """(east, south) metres of a tile's centre on the map, from its name ``<z>_<offset>_<x>_<y>.png``."""
    found = TILE_NAME.match(name)
    if not found:
        raise DatasetLayoutError(f"{name}: not a GTA-UAV tile name (<zoom>_<offset>_<x>_<y>.png)")
    zoom, offset, x, y = (int(v) for v in found.groups())
    side = MAP_PX / 2**zoom
    return side * (x + 0.5 + offset / TILE_PX) * METRES_PER_PX, side * (y + 0.5 + offset / TILE_PX) * METRES_PER_PX


def tile_pixel_m(name: str, col: float, row: float, width: int, height: int) -> tuple[float, float]:
    """(east, south) map metres of a pixel position (centres at whole numbers) of a tile image of
    ``width`` × ``height`` pixels (the release's 256 px, a synthetic world's any size)."""
    east, south = tile_centre_m(name)
    side_m = MAP_PX / 2 ** int(TILE_NAME.match(name).group(1)) * METRES_PER_PX  # type: ignore[union-attr]
    return east + ((col + 0.5) / width - 0.5) * side_m, south + ((row + 0.5) / height - 0.5) * side_m


@dataclass(frozen=True)
class DroneRecord:
    """One photo of a split: where its footprint's centre is, and its tiles with their IoUs."""

    path: Path
    name: str
    loc_m: tuple[float, float]
    positives: tuple[str, ...]  # IoU > 0.39
    semipositives: tuple[tuple[str, float], ...]  # (tile, IoU) with IoU > 0.14, the positives included
    altitude: int | None = None  # the altitude bucket of the file name (100..600)


def _bad(path: Path, index: int, what: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"{path}: record {index}: {what}")


def _names(value: object, path: Path, index: int, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and TILE_NAME.match(v) for v in value):
        raise _bad(path, index, f"'{key}' must be a list of tile names (<zoom>_<offset>_<x>_<y>.png)")
    return tuple(value)


def _record(raw: object, root: Path, path: Path, index: int) -> DroneRecord:
    if not isinstance(raw, dict):
        raise _bad(path, index, f"expected an object with {', '.join(RECORD_KEYS)}")
    missing = [k for k in RECORD_KEYS if k not in raw]
    if missing:
        raise _bad(path, index, f"no '{missing[0]}' (a record has {', '.join(RECORD_KEYS)})")
    name, folder = raw["drone_img_name"], raw["drone_img_dir"]
    if not isinstance(name, str) or not isinstance(folder, str) or not name:
        raise _bad(path, index, "'drone_img_dir' and 'drone_img_name' must be strings")
    loc = raw["drone_loc_x_y"]
    if not (isinstance(loc, list) and len(loc) == 2 and all(finite(v) is not None for v in loc)):
        raise _bad(path, index, f"'drone_loc_x_y' must be [x, y] in metres (finite numbers), got {loc!r}")
    positives = _names(raw["pair_pos_sate_img_list"], path, index, "pair_pos_sate_img_list")
    semi = _names(raw["pair_pos_semipos_sate_img_list"], path, index, "pair_pos_semipos_sate_img_list")
    weights = raw["pair_pos_semipos_sate_weight_list"]
    ok = isinstance(weights, list) and len(weights) == len(semi)
    if not ok or not all(finite(w, 0, 1) is not None for w in weights):
        raise _bad(
            path, index, "'pair_pos_semipos_sate_weight_list' must hold one IoU in [0, 1] per semi-positive tile"
        )
    if not set(positives) <= set(semi):
        raise _bad(path, index, "a positive tile is not among 'pair_pos_semipos_sate_img_list'")
    found = DRONE_NAME.match(name)
    return DroneRecord(
        root / folder / name,
        name,
        (float(loc[0]), float(loc[1])),
        positives,
        tuple(zip(semi, (float(w) for w in weights), strict=True)),
        int(found.group(1)) if found else None,
    )


def resolve_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DatasetLayoutError(f"{root}: {what}; expected the {NAME} folder (drone/images/, satellite/, *.json)")
    for folder in ("drone/images", "satellite"):
        if not (root / folder).is_dir():
            raise DatasetLayoutError(f"{root}: no '{folder}' folder; expected the {NAME} root that contains it")
    return root


def read_records(root: str | Path, split: str, part: str, check_files: bool = True) -> list[DroneRecord]:
    """The records of ``<split>-drone2sate-<part>.json``, each checked (one line naming file and record)."""
    root = resolve_root(root)
    path = root / json_name(check_split(split), part)
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: missing; {NAME} ships the four {{cross,same}}-area-drone2sate-*.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetLayoutError(f"{path}: not valid JSON ({exc})".split("\n")[0]) from None
    if not isinstance(raw, list) or not raw:
        raise DatasetLayoutError(f"{path}: expected a non-empty list of records")
    records = [_record(r, root, path, i) for i, r in enumerate(raw)]
    if check_files:
        for i, r in enumerate(records):
            if not r.path.is_file():
                raise _bad(path, i, f"its photo {r.path} does not exist")
    return records


def satellite_tiles(root: str | Path) -> list[Path]:
    """Every tile of ``satellite/`` (all zooms: the gallery), sorted, each named and headed as a PNG."""
    folder = resolve_root(root) / "satellite"
    tiles = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    if not tiles:
        raise DatasetLayoutError(f"{folder}: no tiles (<zoom>_<offset>_<x>_<y>.png)")
    for tile in tiles:
        tile_centre_m(tile.name)
        check_image_file(tile)
    return tiles


def drone_images(root: str | Path) -> list[Path]:
    """Every photo of ``drone/images/``."""
    folder = resolve_root(root) / "drone" / "images"
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def training_pairs(records: Sequence[DroneRecord], tiles: dict[str, Path]) -> list[tuple[Path, Path, str, float]]:
    """(photo, tile, tile name, IoU) for every semi-positive tile of every training photo (Game4Loc's
    ``pos_semipos`` training)."""
    out = []
    for r in records:
        for name, iou in r.semipositives:
            if name not in tiles:
                raise DatasetLayoutError(f"{r.name}: its tile {name} is not in satellite/")
            out.append((r.path, tiles[name], name, iou))
    return out
