"""``python -m mean_geo.report RUN_DIR… --out FILE [--sort R@1] [--metrics …] [--columns …]``

Every run under the folders (sweeps searched recursively) in one report: a table per protocol
(runs evaluated differently are never ranked together; the report names the fields in which the
protocols differ), a row per configuration, the seeds of a configuration as mean ± std with their
count. ``--out`` ends in .md, .csv, .tex (booktabs) or .html (which links each run's error
browser). Reads only the run folders: no W&B.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mean_geo.cli import ToolParser, report_user_errors
from mean_geo.errors import ConfigError
from mean_geo.reporting.formats import FORMATS, render
from mean_geo.reporting.runs import find_runs
from mean_geo.reporting.tables import CONFIG_FIELDS, build_tables
from mean_geo.utils import atomic
from mean_geo.utils.output import writable_file


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parser() -> ToolParser:
    p = ToolParser(prog="python -m mean_geo.report", description=__doc__.split("\n\n")[1])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or sweep folders (searched recursively)")
    p.add_argument("--out", required=True, help="the report: a .md, .csv, .tex or .html file")
    p.add_argument(
        "--sort", default=None, help="the metric rows are ordered by (default R@1, flights Acc@50m; highest first)"
    )
    p.add_argument("--ascending", action="store_true", help="lowest first (for metres such as Dis@1)")
    p.add_argument(
        "--metrics",
        type=_names,
        default=None,
        help="metric columns, comma-separated (default R@1,R@5,R@10,AP and metres where present)",
    )
    p.add_argument(
        "--columns",
        type=_names,
        default=None,
        help=f"configuration columns (default: what varies); some of {','.join(CONFIG_FIELDS)},seed",
    )
    p.add_argument(
        "--conventions", type=_names, default=None, help="only these conventions, e.g. d2s,s2d (default all)"
    )
    p.add_argument(
        "--stage", choices=("test", "val"), default="test", help="the test metrics (default) or the last validation's"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out).expanduser()
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out {out}: expected a file ending in {', '.join(FORMATS)}")
    if out.is_dir() or (out.exists() and not args.overwrite):
        raise ConfigError(f"--out {out}: exists; pass --overwrite to replace it, or another name")
    writable_file(out, "--out", create=False)
    runs = find_runs(args.runs, args.stage)
    tables, differ = build_tables(runs, args.metrics, args.columns, args.sort, args.ascending, args.conventions)
    atomic.write_text(writable_file(out, "--out"), render(tables, differ, out))
    rows = sum(len(t.rows) for t in tables)
    print(f"wrote {out}: {len(runs)} runs, {len(tables)} tables, {rows} rows")
    if differ:
        print(f"the protocols differ in: {', '.join(differ)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
