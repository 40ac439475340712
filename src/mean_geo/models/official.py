"""Load the authors' released checkpoints of MEAN, Sample4Geo, DAC and CAMP into our models.

Each method saved its own layout (``OFFICIAL_LAYOUTS``):

- MEAN, DAC and CAMP: ``two_view_net`` → ``model_1`` (``build_convnext``) with a FAIR-style
  ConvNeXt (``model_1.convnext.downsample_layers…``), their heads under ``model_1.`` and the
  learnt scalars (``logit_scale``, CAMP's ``logit_scale_blocks`` and ``ECE_weight_*``) at the top.
- Sample4Geo: ``TimmModel`` → ``model.`` (timm's own ConvNeXt keys) and ``logit_scale``.

Checkpoints saved from a DataParallel model carry a ``module.`` prefix.  Every key is either
mapped, or reported: nothing is dropped silently (their own test-only mode loaded nothing without a
word — MEAN's issue #2).  The learnt scalars go to the loss (where our temperatures and weights
live) when one is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from timm.models.convnext import checkpoint_filter_fn
from torch import nn

from mean_geo.errors import CheckpointError

Rule = tuple[str, Callable[[re.Match], str]]

# --- MEAN: their sub-module prefix (under model_1.) -> ours, then the parts inside a ClassBlock ----
_MEAN_BRANCHES: list[Rule] = [
    (r"DEG\.FC1([123])\.", lambda m: f"gee.deg.branches.{int(m.group(1)) - 1}."),
    (r"DEG\.FC1\.", lambda m: "gee.deg.expand."),
    (r"proj\.layers\.0\.0\.", lambda m: "cea.projection.net.0."),
    (r"proj\.layers\.0\.1\.", lambda m: "cea.projection.net.1."),
    (r"proj\.layers\.1\.0\.", lambda m: "cea.projection.net.3."),
    (r"feature_scaling\.proj\.", lambda m: "cea.calibration.proj."),
    (r"MSF\.conv1\.", lambda m: "cea.fusion.from_map."),
    (r"MSF\.conv2\.", lambda m: "cea.fusion.from_calibration."),
    (r"MSF\.conv_fusion\.", lambda m: "cea.fusion.fuse.0."),
    (r"MSF\.bn\.", lambda m: "cea.fusion.fuse.1."),
]
_HEADS: list[Rule] = [
    (r"classifier1\.", lambda m: "gee.global_head."),
    (r"classifier_mcb([0-9]+)\.", lambda m: f"gee.local_heads.{int(m.group(1)) - 1}."),
]
_MEAN_HEAD_PARTS: list[Rule] = [
    (r"multi_scale_block\.dilated([123])\.", lambda m: f"bottleneck.dilated.{int(m.group(1)) - 1}."),
    (r"multi_scale_block\.extra1\.0\.", lambda m: "bottleneck.pointwise."),
    (r"add_block\.0\.", lambda m: "norm."),
    (r"classifier\.", lambda m: "classifier."),
]
# --- DAC and CAMP: the MCCG heads (ClassBlock: Linear, BN1d, Dropout | Sequential(Linear)) -------
_DAC_HEAD_PARTS: list[Rule] = [
    (r"add_block\.0\.", lambda m: "bottleneck."),
    (r"add_block\.1\.", lambda m: "norm."),
    (r"classifier\.0\.", lambda m: "classifier."),
]
_GATES = {"cw": 0, "hc": 1}
_TRIPLET: list[Rule] = [
    (r"tri_layer\.(cw|hc)\.conv\.conv\.", lambda m: f"gee.attention.gates.{_GATES[m.group(1)]}.conv."),
    (r"tri_layer\.(cw|hc)\.conv\.bn\.", lambda m: f"gee.attention.gates.{_GATES[m.group(1)]}.norm."),
]
_DSA: list[Rule] = [(r"proj\.mlp\.([0-9])\.", lambda m: f"cea.projection.{m.group(1)}.")]
_POSITION: list[Rule] = [
    (r"pos_embed$", lambda m: "position.embedding"),
    (r"pos_scale$", lambda m: "position.scale"),
]
_UNUSED_HEAD = r"backbone\.net\.head\.fc\.(weight|bias)"  # FAIR's 1000-class head, never used


@dataclass(frozen=True)
class OfficialLayout:
    """How one method's released checkpoint names its tensors.

    Args:
        title: the method, for messages.
        fair_backbone: the backbone is FAIR's ConvNeXt under ``model_1.convnext.`` (else timm's
            keys under ``model.``).
        branches: rules for the other keys under ``model_1.`` → ours.
        head_parts: rules inside a classifier block (after :data:`_HEADS`).
        loss_keys: their top-level learnt scalars → our loss's state keys.
        unused: their keys (or our mapped ones) that their training never used.
    """

    title: str
    fair_backbone: bool
    branches: list[Rule] = field(default_factory=list)
    head_parts: list[Rule] = field(default_factory=list)
    loss_keys: dict[str, str] = field(default_factory=dict)
    unused: str = _UNUSED_HEAD


OFFICIAL_LAYOUTS: dict[str, OfficialLayout] = {
    "mean": OfficialLayout(
        "MEAN",
        True,
        _MEAN_BRANCHES,
        _MEAN_HEAD_PARTS,
        {"logit_scale": "infonce.logit_scale"},
        rf"^(logit_scale_blocks|w_blocks[0-9]+|{_UNUSED_HEAD})$",
    ),
    "sample4geo": OfficialLayout("Sample4Geo", False, loss_keys={"logit_scale": "infonce.logit_scale"}),
    "dac": OfficialLayout(
        "DAC",
        True,
        _TRIPLET + _DSA,
        _DAC_HEAD_PARTS,
        {"logit_scale": "infonce.logit_scale"},
        rf"^(logit_scale_blocks|w_blocks[0-9]+|model_1\.proj_obj\..*|{_UNUSED_HEAD})$",
    ),
    "camp": OfficialLayout(
        "CAMP",
        True,
        _TRIPLET + _POSITION,
        _DAC_HEAD_PARTS,
        {
            "logit_scale": "infonce.logit_scale",
            "logit_scale_blocks": "block_infonce.logit_scale",
            "ECE_weight_D_fine_D_fine": "ece_weight",
        },
        # the other ECE weights: fixed 0 in the released formula; D_fine_S_fine's weight is a flag
        rf"^(w_blocks[0-9]+|ECE_weight_(D_D|S_S|S_fine_S_fine|D_fine_S_fine)|{_UNUSED_HEAD})$",
    ),
}
#: training branches that a model builds only when its loss uses them (their keys are then ignored)
OPTIONAL_BRANCHES = ("gee.", "cea.")


@dataclass
class LoadReport:
    """What happened to every key."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # ours, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # theirs, with no place in our model
    mismatched: list[str] = field(default_factory=list)  # both, different shapes (e.g. class count)
    ignored: list[str] = field(default_factory=list)  # theirs, unused by their training or by this model
    loss_state: dict[str, float] = field(default_factory=dict)  # their learnt scalars, by our loss key
    logit_scale: float | None = None

    def summary(self) -> str:
        """One line: how many tensors loaded, and the keys of every other kind (four named)."""
        parts = [f"loaded {self.loaded} tensors"]
        for name in ("missing", "unexpected", "mismatched", "ignored"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{len(keys)} {name} ({', '.join(keys[:4])}{', …' if len(keys) > 4 else ''})")
        return "; ".join(parts)


def _apply(rules: list[Rule], key: str) -> tuple[str, str] | None:
    """(mapped prefix, rest of the key) for the first rule whose pattern starts ``key``."""
    for pattern, repl in rules:
        m = re.match(pattern, key)
        if m:
            return repl(m), key[m.end() :]
    return None


def _map_branch_key(key: str, layout: OfficialLayout) -> str | None:
    """A ``model_1.``-relative key of theirs → ours, or None."""
    head = _apply(_HEADS, key)
    if head is not None:
        part = _apply(layout.head_parts, head[1])
        return None if part is None else head[0] + part[0] + part[1]
    branch = _apply(layout.branches, key)
    return None if branch is None else branch[0] + branch[1]


def layout_of(model: nn.Module) -> OfficialLayout:
    """The layout of the authors' checkpoints for ``model``'s class (a subclass inherits its base's)."""
    return OFFICIAL_LAYOUTS[getattr(model, "official_layout", "mean")]


def convert_official_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module, layout: OfficialLayout | None = None
) -> tuple[dict[str, torch.Tensor], list[str], dict[str, torch.Tensor]]:
    """Authors' keys → ours.

    Returns:
        (our model's state dict, their keys we could not place, their learnt scalars by our loss key).
    """
    layout = layout or layout_of(model)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    prefix = _backbone_prefix(layout)
    backbone = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    net = model.backbone.net  # type: ignore[union-attr]
    out: dict[str, torch.Tensor] = {}
    if backbone:
        # FAIR's ConvNeXt layout: timm's own remapping; Sample4Geo saved timm's keys already
        converted = checkpoint_filter_fn(backbone, net) if layout.fair_backbone else backbone
        out.update({f"backbone.net.{k}": v for k, v in converted.items()})
    branches, unplaced, loss_state = _place_keys(state, layout)
    out.update(branches)
    return out, unplaced, loss_state


def _place_keys(
    state: dict[str, torch.Tensor], layout: OfficialLayout
) -> tuple[dict[str, torch.Tensor], list[str], dict[str, torch.Tensor]]:
    """The keys outside the backbone, by what ``layout`` makes of them (no model needed):
    (our branch keys, their keys it cannot place, their learnt scalars by our loss key)."""
    prefix = "model_1.convnext." if layout.fair_backbone else "model."
    out: dict[str, torch.Tensor] = {}
    unplaced: list[str] = []
    loss_state: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            continue
        if key in layout.loss_keys:
            loss_state[layout.loss_keys[key]] = value
            continue
        mapped = _map_branch_key(key[len("model_1.") :], layout) if key.startswith("model_1.") else None
        if mapped is not None:
            out[mapped] = value
        elif re.match(layout.unused, key):
            out[key] = value  # reported as ignored by the loader
        else:
            unplaced.append(key)
    return out, unplaced, loss_state


def refuse_another_methods_file(state: dict[str, torch.Tensor], method: str, path: str | Path) -> None:
    """A release of another method is named, not converted under the wrong label: CAMP's file read as
    DAC's loads its ConvNeXt and drops CAMP's position embedding and weights as "unexpected".

    Raises:
        CheckpointError: ``method``'s layout leaves keys unplaced that another method's places all of.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    backbone = {
        name: any(k.startswith(_backbone_prefix(layout)) for k in state) for name, layout in OFFICIAL_LAYOUTS.items()
    }
    left = {name: _place_keys(state, layout)[1] for name, layout in OFFICIAL_LAYOUTS.items() if backbone[name]}
    if method not in left or not left[method]:
        return
    fits = [name for name, keys in left.items() if not keys]
    if fits:
        ours, title = left[method], OFFICIAL_LAYOUTS[method].title
        raise CheckpointError(
            f"{path}: a release of {' or '.join(OFFICIAL_LAYOUTS[n].title for n in fits)}, not of {title}: "
            f"{len(ours)} of its tensors have no place in {title} ({', '.join(ours[:3])}"
            f"{', …' if len(ours) > 3 else ''}) while {fits[0]}'s layout places every one; pass --method {fits[0]}"
        )


def _backbone_prefix(layout: OfficialLayout) -> str:
    return "model_1.convnext." if layout.fair_backbone else "model."


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.pt`` file, never unpickling code (``weights_only=True``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/format error is the user's file
        raise CheckpointError(f"{path}: not a readable PyTorch state dict ({type(exc).__name__}: {exc})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict)")
    return obj


def official_num_classes(state: dict[str, torch.Tensor]) -> int | None:
    """The training places of the authors' classifier heads, when the checkpoint has them."""
    for key in ("model_1.classifier1.classifier.0.weight", "model_1.classifier1.classifier.weight"):
        for name in (key, f"module.{key}"):
            if name in state and state[name].ndim == 2:
                return int(state[name].shape[0])
    return None


def load_official_checkpoint(
    path: str | Path, model: nn.Module, loss: nn.Module | None = None, method: str | None = None
) -> LoadReport:
    """Load the authors' checkpoint into ``model`` in place; every key is accounted for in the report.

    Args:
        path: their ``.pth`` (with or without DataParallel's ``module.`` prefix).
        model: ours; its class says which layout to read (or ``method``).
        loss: our loss: their learnt temperatures (and CAMP's weight ``w``) are loaded into it, so
            fine-tuning continues from where they stopped.
        method: the layout (``mean``, ``sample4geo``, ``dac``, ``camp``); default: the model's.

    Returns:
        What happened to every key.

    Raises:
        CheckpointError: an unreadable file, or nothing of it fits (another model entirely).
    """
    layout = OFFICIAL_LAYOUTS[method] if method else layout_of(model)
    state = read_state_dict(path)
    refuse_another_methods_file(state, method or getattr(model, "official_layout", "mean"), path)
    converted, unplaced, loss_state = convert_official_state_dict(state, model, layout)
    ours = model.state_dict()
    report = LoadReport(unexpected=unplaced, loss_state={k: float(v) for k, v in loss_state.items()})
    report.logit_scale = report.loss_state.get("infonce.logit_scale")
    to_load = {}
    for key, value in converted.items():
        if re.match(layout.unused, key) or (key not in ours and key.startswith(OPTIONAL_BRANCHES)):
            report.ignored.append(key)
        elif key not in ours:
            report.unexpected.append(key)
        elif ours[key].shape != value.shape:
            report.mismatched.append(f"{key} {tuple(value.shape)}→{tuple(ours[key].shape)}")
        else:
            to_load[key] = value
    report.missing = sorted(k for k in ours if k not in to_load and not k.endswith("num_batches_tracked"))
    if not to_load:
        raise CheckpointError(
            f"{path}: no tensor matches {layout.title}'s layout; is this a checkpoint of the authors' {layout.title}?"
        )
    model.load_state_dict(to_load, strict=False)
    report.loaded = len(to_load)
    if loss is not None:
        _load_loss_state(loss, loss_state, report)
    return report


def _load_loss_state(loss: nn.Module, values: dict[str, torch.Tensor], report: LoadReport) -> None:
    """Their learnt scalars into our loss (its parameters or buffers of the same name); a scalar
    this loss does not have (another method's loss) is reported as ignored."""
    tensors = {**dict(loss.named_buffers()), **dict(loss.named_parameters())}
    with torch.no_grad():
        for key, value in values.items():
            target = tensors.get(key)
            if target is not None and target.numel() == value.numel():
                target.copy_(value.reshape(target.shape))
            else:
                report.ignored.append(key)
