"""``python -m mean_geo.profile [method=mean|sample4geo|dac|camp] [dataset=university1652|sues200]
[--num-classes N] [--image-size 384] [--backbone NAME]``: parameters and GMACs of a method, part by
part, counted as the authors count (the MEAN paper's efficiency table; see
:mod:`mean_geo.models.profiling`)."""

from __future__ import annotations

import sys

from rich.console import Console

from mean_geo.cli import ToolParser, report_user_errors
from mean_geo.errors import ConfigError
from mean_geo.losses import LOSSES
from mean_geo.models.profiling import AUTHORS_CLASSES, METHODS, profile_table


def _choices(tokens: list[str]) -> dict[str, str]:
    """``method=…`` and ``dataset=…``, checked (the train command's words)."""
    allowed = {"method": METHODS, "dataset": tuple(AUTHORS_CLASSES)}
    out = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or key not in allowed:
            raise ConfigError(
                f"{token}: expected method=<{'|'.join(METHODS)}> or dataset=<{'|'.join(AUTHORS_CLASSES)}>"
            )
        if value not in allowed[key]:
            raise ConfigError(f"{key}={value}: expected one of {', '.join(allowed[key])}")
        out[key] = value
    return out


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    p = ToolParser(prog="python -m mean_geo.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("choices", nargs="*", help="method=NAME (default mean), dataset=NAME (default university1652)")
    p.add_argument("--num-classes", type=int, default=None, help="default: the authors' count for the dataset")
    p.add_argument("--image-size", type=int, default=384)
    p.add_argument("--backbone", default=None, help="default: the method's own")
    args = p.parse_args(argv)
    chosen = _choices(args.choices)
    classes = args.num_classes or AUTHORS_CLASSES[chosen.get("dataset", "university1652")]
    method = chosen.get("method", "mean")
    loss = LOSSES.get(method)()  # its learnt scalars (temperatures, CAMP's w) are the authors' parameters
    Console().print(profile_table(classes, args.image_size, args.backbone, method, loss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
