"""``python -m mean_geo.check dataset=sues200|university1652 dataset.root=…``: is this copy complete?

Counts places and images per split, view (and altitude) against the official numbers, reading
file headers only, and exits with code 1 naming every difference (code 2 for a wrong path).
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from mean_geo.cli.hydra_app import hydra_app
from mean_geo.data.official_counts import count, official
from mean_geo.errors import ConfigError

NAMES = {"sues200": "SUES-200", "university1652": "University-1652"}


def run(cfg: DictConfig) -> list[str]:
    dataset, root = cfg.dataset.get("name"), cfg.dataset.get("root")
    if dataset not in NAMES or cfg.dataset.get("synthetic"):
        raise ConfigError(f"dataset={dataset}: expected dataset=sues200 or dataset=university1652 (a real dataset)")
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"reading {NAMES[dataset]} at {root}", total=len(official(dataset)))
        counts = count(dataset, root, on_group=lambda _: progress.advance(task))
    table = Table(title=f"{NAMES[dataset]} at {root}")
    for col in ("group", "places", "official", "images", "official", ""):
        table.add_column(col, justify="left" if col in ("group", "") else "right")
    for c in counts:
        ok = not c.differences
        table.add_row(
            c.group,
            str(c.places),
            str(c.expected.places),
            f"{c.images:,}",
            f"{c.expected.images:,}",
            "ok" if ok else "[red]differs[/red]",
        )
    Console().print(table)
    return [d for c in counts for d in c.differences]


@hydra_app("check")
def main(cfg: DictConfig) -> None:
    differences = run(cfg)
    if differences:
        for line in differences:
            print(f"differs: {line}", file=sys.stderr)
        print(f"error: {len(differences)} difference(s) from the official {NAMES[cfg.dataset.name]}", file=sys.stderr)
        sys.exit(1)
    print(f"{NAMES[cfg.dataset.name]} at {cfg.dataset.root}: complete (the official counts)")


if __name__ == "__main__":
    main()
