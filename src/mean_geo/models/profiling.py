"""Parameters and GMACs of MEAN, part by part (the paper's efficiency table).  GMACs =
multiply-accumulates / 1e9 (the thop convention of the paper: FLOPs / 2), counted with
``torch.utils.flop_counter`` on a random-init model (no weights needed)."""

from __future__ import annotations

import torch
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from mean_geo.models.backbone import DEFAULT_BACKBONE
from mean_geo.models.mean import MEAN

UNUSED_REFERENCE_SCALARS = 4  # logit_scale_blocks, w_blocks1..3: created, never used, counted


def _count(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_rows(model: MEAN) -> list[tuple[str, int]]:
    """(part, parameters) for every built part, plus what the authors' count adds."""
    rows = [("backbone (used at test time)", _count(model.backbone))]
    if model.pee is not None:
        rows.append(("PEE projections (multiscale)", _count(model.pee)))
    if model.gee is not None:
        rows += [
            ("GEE: diversified embedding generator", _count(model.gee.deg)),
            ("GEE: classifier heads (3)", _count(model.gee.local_heads) + _count(model.gee.global_head)),
        ]
    if model.cea is not None:
        rows += [
            ("CEA: projection", _count(model.cea.projection)),
            ("CEA: adaptive calibration", _count(model.cea.calibration)),
            ("CEA: multi-level fusion", _count(model.cea.fusion)),
        ]
    rows.append(("InfoNCE temperature", 1))
    return rows


def reference_extras(model: MEAN) -> int:
    """What the released model also holds: timm's unused 1000-class head and 4 unused scalars."""
    dim = model.embedding_dim
    return dim * 1000 + 1000 + UNUSED_REFERENCE_SCALARS


def gmacs(model: MEAN, image_size: int, train: bool) -> dict[str, float]:
    """GMACs for one drone + one satellite image: {"total": …, "<part>": …}."""
    model.train(train)
    x = torch.randn(2, 3, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    by_module = counter.get_flop_counts()
    out = {"total": counter.get_total_flops() / 2e9}
    for name in ("backbone", "pee", "gee", "cea"):
        key = f"MEAN.{name}"
        if key in by_module:
            out[name] = sum(by_module[key].values()) / 2e9
    return out


def profile_table(num_classes: int = 701, image_size: int = 384, backbone: str = DEFAULT_BACKBONE) -> Table:
    model = MEAN(num_classes, backbone=backbone)
    rows = parameter_rows(model)
    ours = sum(n for _, n in rows)
    table = Table(title=f"MEAN ({backbone}, {num_classes} classes, {image_size} px)")
    table.add_column("part")
    table.add_column("params (M)", justify="right")
    for name, n in rows:
        table.add_row(name, f"{n / 1e6:.3f}")
    table.add_row("[b]total built by mean_geo[/b]", f"[b]{ours / 1e6:.2f}[/b]")
    extra = reference_extras(model)
    table.add_row("+ unused ImageNet head and 4 unused scalars (authors' model)", f"{extra / 1e6:.3f}")
    table.add_row("[b]total as the paper counts it[/b]", f"[b]{(ours + extra) / 1e6:.2f}[/b]")
    test = gmacs(model, image_size, train=False)
    train = gmacs(model, image_size, train=True)
    table.add_section()
    table.add_row("GMACs, test: 1 drone + 1 satellite image (paper's figure)", f"{test['total']:.2f}")
    table.add_row("GMACs, training forward of one pair (all branches)", f"{train['total']:.2f}")
    for part in ("pee", "gee", "cea"):
        if part in train:
            table.add_row(f"  of which {part.upper()}", f"{train[part]:.2f}")
    return table
