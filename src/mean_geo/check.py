"""``python -m mean_geo.check dataset=sues200|university1652|denseuav dataset.root=…``: is this copy complete?

Counts places and images per split, view (and altitude) against the official numbers, reading
file headers only, and exits with code 1 naming every difference (code 2 for a wrong path).
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from mean_geo.cli.hydra_app import hydra_app
from mean_geo.data.official_counts import count, official
from mean_geo.errors import ConfigError

NAMES = {"sues200": "SUES-200", "university1652": "University-1652", "denseuav": "DenseUAV", "gta_uav": "GTA-UAV"}


def run(cfg: DictConfig) -> list[str]:
    dataset, root = cfg.dataset.get("name"), cfg.dataset.get("root")
    if dataset not in NAMES or cfg.dataset.get("synthetic"):
        raise ConfigError(f"dataset={dataset}: expected dataset={'|'.join(NAMES)} (a real dataset)")
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"reading {NAMES[dataset]} at {root}", total=len(official(dataset)))
        counts = count(dataset, root, on_group=lambda _: progress.advance(task))
        extra = extra_checks(dataset, root)
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
    return [d for c in counts for d in c.differences] + extra


def extra_checks(dataset: str, root: str) -> list[str]:
    """What a layout's structure requires beyond its counts (DenseUAV: the galleries hold every
    training and query place, both query views show the same places, the GPS file has every place)."""
    if dataset == "gta_uav":
        return _gta_uav_checks(root)
    if dataset != "denseuav":
        return []
    from mean_geo.data import denseuav

    def places(*parts: str) -> set[str]:
        folder = Path(root).expanduser().joinpath(*parts)
        return {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()

    train, query = places("train", "satellite") | places("train", "drone"), places("test", "query_drone")
    out = []

    def missing(what: str, absent: set[str], why: str) -> None:
        if absent:
            shown = ", ".join(sorted(absent)[:3]) + (f" (+{len(absent) - 3} more)" if len(absent) > 3 else "")
            out.append(f"{what}: no place {shown} ({why})")

    for view in ("drone", "satellite"):
        gallery = places("test", f"gallery_{view}")
        missing(f"test/gallery_{view}", train - gallery, "a training place; the galleries hold every place")
        missing(f"test/gallery_{view}", query - gallery, "a query place; the galleries hold every place")
    missing("test/query_satellite", query - places("test", "query_satellite"), "a place of test/query_drone")
    missing("test/query_drone", places("test", "query_satellite") - query, "a place of test/query_satellite")
    gps = denseuav.read_place_gps(root)  # a malformed line is one DatasetLayoutError naming it
    missing(denseuav.GPS_ALL, (train | query) - set(gps), "every place has a GPS line")
    return out


def _gta_uav_checks(root: str) -> list[str]:
    """Every record of the four JSON files well formed (else one line naming file and record), its
    photo present, and every tile it names in ``satellite/``."""
    from mean_geo.data import gta_uav

    tiles = {p.name for p in gta_uav.satellite_tiles(root)}
    out = []
    for split in gta_uav.SPLITS:
        for part in ("train", "test"):
            records = gta_uav.read_records(root, split, part)
            absent = sorted({t for r in records for t, _ in r.semipositives} - tiles)
            if absent:
                more = f" (+{len(absent) - 3} more)" if len(absent) > 3 else ""
                out.append(f"{gta_uav.json_name(split, part)}: tile {', '.join(absent[:3])}{more} not in satellite/")
    return out


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
