"""``python -m mean_geo.localize PHOTO_OR_FOLDER… --index FILE --ckpt MODEL [--k 5] [--coords-csv F] [--json]``

For each drone photo: the ``k`` most similar satellite tiles of the index with their scores and
coordinates, printed as a table (or JSON with ``--json``), and a PNG strip per photo in ``--out``.
The model is the one the index was built with (a training checkpoint or an export folder); an
index from another model is refused.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mean_geo.cli import ToolParser, report_user_errors, whole_number_at_least
from mean_geo.cli.plugins import add_plugins_option, import_plugins
from mean_geo.data.layouts import list_images
from mean_geo.inference.localization import Match, add_distances, localize, photo_positions
from mean_geo.retrieval.index_store import read_index
from mean_geo.retrieval.search import BACKENDS
from mean_geo.retrieval.strips import QUERY, Cell, write_strips
from mean_geo.utils.output import writable_folder


def parser() -> ToolParser:
    p = ToolParser(prog="python -m mean_geo.localize", description=__doc__.split("\n\n")[1])
    p.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER", help="drone photos, or folders of them")
    p.add_argument("--index", required=True, help="a gallery index written by python -m mean_geo.index")
    p.add_argument("--ckpt", required=True, help="the model that built the index (.ckpt or export folder)")
    p.add_argument("--k", type=whole_number_at_least(1), default=5, help="matches per photo (default 5)")
    p.add_argument("--out", default="localize_out", help="folder for the PNG strips (default localize_out)")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="exact top-k search: auto (the faster on this machine, measured once), torch or faiss",
    )
    p.add_argument(
        "--coords-csv",
        default=None,
        help="where the photos were taken (path,lat,lon; or place,lat,lon with photos in place folders): "
        "adds each match's distance in metres",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_plugins_option(p)
    return p


def write_strip(photo: Path, matches: list[Match], out: Path, size: int = 128) -> None:
    cells = [Cell(photo, "query", QUERY)] + [Cell(Path(m.path), f"#{m.rank} {m.id} {m.score:.2f}") for m in matches]
    write_strips([cells], out, size)


def print_tables(photos: list[Path], results: list[list[Match]], out: Path) -> None:
    console = Console()
    fmt = lambda v: "-" if v is None else f"{v:.6f}"  # noqa: E731
    for photo, matches in zip(photos, results, strict=True):
        table = Table(title=str(photo))
        for col in ("rank", "tile", "score", "lat", "lon", "metres off"):
            table.add_column(col, justify="right" if col != "tile" else "left")
        for m in matches:
            off = "-" if m.distance_m is None else f"{m.distance_m:.0f}"
            table.add_row(str(m.rank), m.id, f"{m.score:.3f}", fmt(m.lat), fmt(m.lon), off)
        console.print(table)
    console.print(f"strips written to {out}/")


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import_plugins(args.plugins, "--plugins")
    out = Path(args.out).expanduser()
    writable_folder(out, "--out", create=False)  # before any work: a file in the way, no permission, a read-only disk
    photos = list_images(args.photos, "photos")
    results = localize(photos, read_index(args.index), args.ckpt, k=args.k, backend=args.backend)
    if args.coords_csv:
        add_distances(results, photo_positions(photos, args.coords_csv))
    writable_folder(out, "--out")
    for i, (photo, matches) in enumerate(zip(photos, results, strict=True)):
        write_strip(photo, matches, out / f"{i:04d}_{photo.stem}.png")
    if args.json:
        rows = [{"photo": str(p), "matches": [asdict(m) for m in ms]} for p, ms in zip(photos, results, strict=True)]
        print(json.dumps(rows, indent=1))
    else:
        print_tables(photos, results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
