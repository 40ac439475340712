"""Parameters and GMACs of MEAN and of the baselines, part by part (the MEAN paper's efficiency
table).  GMACs = multiply-accumulates / 1e9 (the thop convention of the paper: FLOPs / 2), counted
with ``torch.utils.flop_counter`` on a random-init model (no weights needed).

"As the authors count" is every parameter their released model object holds: ours builds only what
a loss uses, so the table adds what theirs also carries (FAIR's unused 1000-class head, unused
scalars, DAC's unused second projection ``proj_obj``, the heads CAMP computes but leaves out of its
loss) and the learnt scalars that live in our loss (temperatures, CAMP's weight ``w``; the entry point
passes the method's loss, as this layer sits below the losses).
"""

from __future__ import annotations

import copy

import torch
from rich.table import Table
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mean_geo.models.attention_heads import TripletAttentionHeads
from mean_geo.models.mean import MEAN
from mean_geo.models.official import OFFICIAL_LAYOUTS
from mean_geo.models.peers import CAMP  # noqa: F401  (registers the baselines)
from mean_geo.models.registry import ARCHITECTURES

UNUSED_REFERENCE_SCALARS = 4  # logit_scale_blocks, w_blocks1..3: created, never used, counted
#: the authors' class counts (their train scripts' nclasses): University-1652 701, SUES-200 200
AUTHORS_CLASSES = {"university1652": 701, "sues200": 200}
#: the methods whose authors' models are counted: those whose released layout we read
METHODS = tuple(OFFICIAL_LAYOUTS)


def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_rows(model: MEAN, loss: nn.Module | None = None) -> list[tuple[str, int]]:
    """(part, parameters) for every built part, plus the learnt scalars of the method's ``loss``
    (its temperatures, CAMP's weight ``w``: parameters of the authors' model)."""
    rows = [("backbone (used at test time)", _count(model.backbone))]
    if model.pee is not None:
        rows.append(("PEE projections (multiscale)", _count(model.pee)))
    gee, cea = model.gee, model.cea
    if gee is not None and hasattr(gee, "deg"):
        rows += [
            ("GEE: diversified embedding generator", _count(gee.deg)),
            ("GEE: classifier heads (3)", _count(gee.local_heads) + _count(gee.global_head)),
        ]
    elif gee is not None:
        rows.append(("heads: triplet attention + 3 classifier blocks", _count(gee)))
    if cea is not None and hasattr(cea, "calibration"):
        rows += [
            ("CEA: projection", _count(cea.projection)),
            ("CEA: adaptive calibration", _count(cea.calibration)),
            ("CEA: multi-level fusion", _count(cea.fusion)),
        ]
    elif cea is not None:
        rows.append(("DSA: projection (1024 -> 2048 -> 256)", _count(cea)))
    if hasattr(model, "position"):
        rows.append(("position embedding and its scale", _count(model.position)))
    if loss is not None:
        rows.append(("learnt loss scalars (temperatures, CAMP's w)", _count(loss)))
    return rows


def reference_extras(model: MEAN) -> int:
    """What the authors' released model also holds that ours does not build."""
    dim, layout = model.embedding_dim, model.official_layout
    fair_head = dim * 1000 + 1000  # FAIR's ConvNeXt keeps its ImageNet classifier
    if layout == "sample4geo":
        return 0  # timm with num_classes=0: the backbone and logit_scale, both counted
    if layout == "dac":
        return fair_head + UNUSED_REFERENCE_SCALARS + (_count(model.cea) if model.cea is not None else 0)  # proj_obj
    if layout == "camp":
        heads = 0 if model.gee is not None else _count(TripletAttentionHeads(dim, model.num_classes))
        return fair_head + 4 + 3 + heads  # 4 unused ECE weights, w_blocks1..3, the unused heads
    return fair_head + UNUSED_REFERENCE_SCALARS


def gmacs(model: MEAN, image_size: int, train: bool) -> dict[str, float]:
    """GMACs for one drone + one satellite image: {"total": …, "<part>": …}.

    Counted on a copy on the meta device: the same operations and shapes, no arithmetic (a
    ConvNeXt-Base at 384 px takes 0.6 s instead of 4 s on 2 cores; the counts are identical)."""
    model = copy.deepcopy(model).to("meta").train(train)
    x = torch.randn(2, 3, image_size, image_size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)  # train mode: the branches of both images (one batch: BatchNorm needs 2)
    by_module = counter.get_flop_counts()
    out = {"total": counter.get_total_flops() / 2e9}
    for name in ("backbone", "pee", "gee", "cea", "position"):
        key = f"{type(model).__name__}.{name}"
        if key in by_module:
            out[name] = sum(by_module[key].values()) / 2e9
    return out


def build_for_profile(method: str, num_classes: int, backbone: str | None = None) -> MEAN:
    """The method's training model (the branches its own loss uses), random init."""
    kwargs = {"backbone": backbone} if backbone else {}
    return ARCHITECTURES.get(method)(num_classes, **kwargs)


def profile_table(
    num_classes: int = 701,
    image_size: int = 384,
    backbone: str | None = None,
    method: str = "mean",
    loss: nn.Module | None = None,
) -> Table:
    """The rich table of :func:`parameter_rows` (``loss``: the method's, for its learnt scalars),
    the authors' total and the GMACs."""
    model = build_for_profile(method, num_classes, backbone)
    rows = parameter_rows(model, loss)
    ours = sum(n for _, n in rows)
    table = Table(title=f"{type(model).__name__} ({model.backbone.name}, {num_classes} classes, {image_size} px)")
    table.add_column("part")
    table.add_column("params (M)", justify="right")
    for name, n in rows:
        table.add_row(name, f"{n / 1e6:.3f}")
    table.add_row("[b]total built by mean_geo[/b]", f"[b]{ours / 1e6:.2f}[/b]")
    extra = reference_extras(model)
    table.add_row("+ what the authors' model also holds (unused head, scalars, parts)", f"{extra / 1e6:.3f}")
    table.add_row("[b]total as the paper counts it[/b]", f"[b]{(ours + extra) / 1e6:.2f}[/b]")
    test = gmacs(model, image_size, train=False)
    train = gmacs(model, image_size, train=True)
    table.add_section()
    table.add_row("GMACs, test: 1 drone + 1 satellite image (paper's figure)", f"{test['total']:.2f}")
    table.add_row("GMACs, training forward of one pair (all branches)", f"{train['total']:.2f}")
    for part in ("pee", "gee", "cea", "position"):
        if part in train:
            table.add_row(f"  of which {part}", f"{train[part]:.2f}")
    return table
