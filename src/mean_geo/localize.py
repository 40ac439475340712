"""``python -m mean_geo.localize PHOTO_OR_FOLDER … index=… ckpt=… [k=5] [out=…] [backend=torch|faiss] [--json]``

For each drone photo: the ``k`` most similar satellite tiles of the index with their scores and
coordinates, printed as a table (or JSON with ``--json``), and a PNG strip per photo in ``out``.
The model is the one the index was built with (``ckpt=`` a training checkpoint or an export folder);
an index from another model is refused.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from safetensors import safe_open

from mean_geo.data.datasets import load_rgb
from mean_geo.data.layouts import check_image_file, images_under
from mean_geo.data.transforms import eval_transform
from mean_geo.errors import MeanGeoError
from mean_geo.hub import load_model
from mean_geo.index import INDEX_FORMAT
from mean_geo.retrieval.search import topk_search


@dataclass
class Match:
    rank: int
    id: str
    score: float
    path: str
    lat: float | None
    lon: float | None


@dataclass
class GalleryIndex:
    embeddings: torch.Tensor
    tiles: list[dict]
    fingerprint: str
    image_size: int


def read_index(path: str | Path) -> GalleryIndex:
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


def _checked_index(path: Path, meta: dict[str, str], embeddings: torch.Tensor) -> GalleryIndex:
    """An index's metadata is data from a file: every field is checked for kind and size."""

    def bad(what: str) -> MeanGeoError:
        return MeanGeoError(f"index={path}: {what}; rebuild it with python -m mean_geo.index")

    if embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise bad(f"embeddings of shape {tuple(embeddings.shape)} ({embeddings.dtype}), expected (tiles, dim) floats")
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
        latlon = tile.get("latlon") if ok else None
        ok = ok and (
            latlon is None
            or (
                isinstance(latlon, list)
                and len(latlon) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in latlon)
            )
        )
        if not ok:
            raise bad(f"tile {i} in metadata 'tiles' is not {{path, id, latlon}}")
    return GalleryIndex(embeddings, tiles, meta["fingerprint"], int(meta["image_size"]))


def list_photos(inputs: list[str]) -> list[Path]:
    photos: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            photos += images_under(p)
        elif p.is_file():
            photos.append(p)
        else:
            raise MeanGeoError(f"{p}: no such image or folder")
    if not photos:
        raise MeanGeoError(f"no images in {inputs}")
    for p in photos:
        check_image_file(p)
    return photos


def localize(
    photos: list[Path], index: GalleryIndex, ckpt: str | Path, k: int = 5, batch_size: int = 32, backend: str = "torch"
):
    """Top-k matches of every photo: ``[[Match, …], …]``."""
    loaded = load_model(ckpt, "ckpt")
    if loaded.fingerprint != index.fingerprint:
        raise MeanGeoError(
            f"ckpt={ckpt}: this model (fingerprint {loaded.fingerprint}) did not build the index "
            f"(fingerprint {index.fingerprint}); use the same checkpoint or rebuild the index"
        )
    tf = eval_transform(loaded.image_size, loaded.mean, loaded.std)
    embs = []
    with torch.inference_mode():
        for i in range(0, len(photos), batch_size):
            batch = torch.stack([tf(load_rgb(p)) for p in photos[i : i + batch_size]])
            embs.append(loaded.model(batch).float())
    scores, idx = topk_search(torch.cat(embs), index.embeddings.float(), k=k, backend=backend)
    results = []
    for row_s, row_i in zip(scores.tolist(), idx.tolist(), strict=True):
        matches = []
        for rank, (s, i) in enumerate(zip(row_s, row_i, strict=True), start=1):
            tile = index.tiles[i]
            latlon = tile.get("latlon") or (None, None)
            matches.append(Match(rank, tile["id"], s, tile["path"], latlon[0], latlon[1]))
        results.append(matches)
    return results


def write_strip(photo: Path, matches: list[Match], out: Path, size: int = 128) -> None:
    from PIL import Image, ImageDraw

    sheet = Image.new("RGB", (size * (len(matches) + 1) + 4 * len(matches), size + 16), "white")
    sheet.paste(load_rgb(photo).resize((size, size)), (0, 0))
    draw = ImageDraw.Draw(sheet)
    draw.text((2, size + 2), "query", fill="black")
    for j, m in enumerate(matches, start=1):
        x = j * (size + 4)
        sheet.paste(load_rgb(Path(m.path)).resize((size, size)), (x, 0))
        draw.text((x + 2, size + 2), f"#{m.rank} {m.id} {m.score:.2f}", fill="black")
    sheet.save(out)


def whole_number(key: str, text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise MeanGeoError(f"{key}={text}: expected a whole number >= {least}") from None
    if value < least:
        raise MeanGeoError(f"{key}={value}: expected a whole number >= {least}")
    return value


def parse_args(argv: list[str]) -> tuple[list[str], dict[str, str], bool]:
    inputs, options, as_json = [], {}, False
    for arg in argv:
        if arg == "--json":
            as_json = True
        elif "=" in arg and not Path(arg).exists():
            key, value = arg.split("=", 1)
            if key not in ("index", "ckpt", "k", "out", "backend"):
                raise MeanGeoError(f"unknown option {key}=; expected index=, ckpt=, k=, out=, backend=")
            options[key] = value
        else:
            inputs.append(arg)
    if "index" not in options or "ckpt" not in options or not inputs:
        raise MeanGeoError("usage: python -m mean_geo.localize PHOTO_OR_FOLDER... index=FILE ckpt=CKPT [k=5] [out=DIR]")
    return inputs, options, as_json


def main(argv: list[str] | None = None) -> int:
    try:
        inputs, opts, as_json = parse_args(sys.argv[1:] if argv is None else argv)
        k = whole_number("k", opts.get("k", "5"), least=1)
        backend = opts.get("backend", "torch")
        if backend not in ("torch", "faiss"):
            raise MeanGeoError(f"backend={backend}: expected torch or faiss")
        out = Path(opts.get("out", "localize_out")).expanduser()
        if out.exists() and not out.is_dir():
            raise MeanGeoError(f"out={out}: exists and is a file; expected a folder for the strips")
        photos = list_photos(inputs)
        results = localize(photos, read_index(opts["index"]), opts["ckpt"], k=k, backend=backend)
        out.mkdir(parents=True, exist_ok=True)
        for i, (photo, matches) in enumerate(zip(photos, results, strict=True)):
            write_strip(photo, matches, out / f"{i:04d}_{photo.stem}.png")
    except (MeanGeoError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(
            json.dumps(
                [{"photo": str(p), "matches": [asdict(m) for m in ms]} for p, ms in zip(photos, results, strict=True)],
                indent=1,
            )
        )
        return 0
    console = Console()
    for photo, matches in zip(photos, results, strict=True):
        table = Table(title=str(photo))
        for col in ("rank", "tile", "score", "lat", "lon"):
            table.add_column(col, justify="right" if col != "tile" else "left")
        for m in matches:
            fmt = lambda v: "-" if v is None else f"{v:.6f}"  # noqa: E731
            table.add_row(str(m.rank), m.id, f"{m.score:.3f}", fmt(m.lat), fmt(m.lon))
        console.print(table)
    console.print(f"strips written to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
