"""``python -m mean_geo.profile [--num-classes 701] [--image-size 384] [--backbone NAME]``:
parameters and GMACs of MEAN, part by part (the paper's efficiency table; see
:mod:`mean_geo.models.profiling`)."""

from __future__ import annotations

import sys

from rich.console import Console

from mean_geo.cli import ToolParser, report_user_errors
from mean_geo.models.backbone import DEFAULT_BACKBONE
from mean_geo.models.profiling import profile_table


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    p = ToolParser(prog="python -m mean_geo.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--num-classes", type=int, default=701)
    p.add_argument("--image-size", type=int, default=384)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE)
    args = p.parse_args(argv)
    Console().print(profile_table(args.num_classes, args.image_size, args.backbone))
    return 0


if __name__ == "__main__":
    sys.exit(main())
