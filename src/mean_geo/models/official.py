"""Load checkpoints saved by the authors' MEAN code into our :class:`~mean_geo.models.mean.MEAN`.

Their model is ``two_view_net`` → ``model_1`` (``build_convnext``) with a FAIR-style ConvNeXt
(``model_1.convnext.downsample_layers…``), ``DEG``, ``classifier1`` / ``classifier_mcb{1,2}``,
``proj`` / ``feature_scaling`` / ``MSF`` and top-level ``logit_scale``.  Checkpoints saved from a
DataParallel model carry a ``module.`` prefix.  Every key is either mapped, or reported: nothing is
dropped silently (their own test-only mode loaded nothing without a word — their issue #2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from timm.models.convnext import checkpoint_filter_fn

from mean_geo.errors import CheckpointError
from mean_geo.models.mean import MEAN

# authors' sub-module prefix (under model_1.) -> ours
_BRANCH_PREFIXES = [
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
# their ClassBlocks -> our heads, then the parts inside a ClassBlock
_HEADS = [
    (r"classifier1\.", lambda m: "gee.global_head."),
    (r"classifier_mcb([0-9]+)\.", lambda m: f"gee.local_heads.{int(m.group(1)) - 1}."),
]
_HEAD_PARTS = [
    (r"multi_scale_block\.dilated([123])\.", lambda m: f"bottleneck.dilated.{int(m.group(1)) - 1}."),
    (r"multi_scale_block\.extra1\.0\.", lambda m: "bottleneck.pointwise."),
    (r"add_block\.0\.", lambda m: "norm."),
    (r"classifier\.", lambda m: "classifier."),
]
# parameters of theirs that no loss uses (spec §2.4) and the unused ImageNet classifier
KNOWN_UNUSED = re.compile(r"^(logit_scale_blocks|w_blocks[0-9]+|backbone\.net\.head\.fc\.(weight|bias))$")


@dataclass
class LoadReport:
    """What happened to every key."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # ours, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # theirs, with no place in our model
    mismatched: list[str] = field(default_factory=list)  # both, different shapes (e.g. class count)
    ignored: list[str] = field(default_factory=list)  # theirs, known to be unused by the released model
    logit_scale: float | None = None

    def summary(self) -> str:
        parts = [f"loaded {self.loaded} tensors"]
        for name in ("missing", "unexpected", "mismatched", "ignored"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{len(keys)} {name} ({', '.join(keys[:4])}{', …' if len(keys) > 4 else ''})")
        return "; ".join(parts)


def _apply(rules, key: str) -> tuple[str, str] | None:
    """(mapped prefix, rest of the key) for the first rule whose pattern starts ``key``."""
    for pattern, repl in rules:
        m = re.match(pattern, key)
        if m:
            return repl(m), key[m.end() :]
    return None


def _map_branch_key(key: str) -> str | None:
    """A ``model_1.``-relative key of theirs → ours, or None."""
    head = _apply(_HEADS, key)
    if head is not None:
        part = _apply(_HEAD_PARTS, head[1])
        return None if part is None else head[0] + part[0] + part[1]
    branch = _apply(_BRANCH_PREFIXES, key)
    return None if branch is None else branch[0] + branch[1]


def convert_official_state_dict(state: dict[str, torch.Tensor], model: MEAN) -> tuple[dict, list[str], float | None]:
    """Authors' keys → ours.  Returns (our state dict, their keys we could not place, logit scale)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    backbone = {k[len("model_1.convnext.") :]: v for k, v in state.items() if k.startswith("model_1.convnext.")}
    out: dict[str, torch.Tensor] = {}
    unplaced: list[str] = []
    if backbone:
        # timm's own remapping of the FAIR ConvNeXt layout (their backbone is that layout)
        for k, v in checkpoint_filter_fn(backbone, model.backbone.net).items():
            out[f"backbone.net.{k}"] = v
    logit_scale = None
    for key, value in state.items():
        if key.startswith("model_1.convnext."):
            continue
        if key == "logit_scale":
            logit_scale = float(value)
            continue
        if key.startswith("model_1."):
            mapped = _map_branch_key(key[len("model_1.") :])
            if mapped is not None:
                out[mapped] = value
                continue
        if KNOWN_UNUSED.match(key):
            out[key] = value  # reported as ignored by the loader
        else:
            unplaced.append(key)
    return out, unplaced, logit_scale


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
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


def load_official_checkpoint(path: str | Path, model: MEAN, infonce=None) -> LoadReport:
    """Load the authors' checkpoint into ``model`` in place; every key is accounted for in the report.

    With ``infonce`` (an :class:`~mean_geo.losses.InfoNCELoss`), their learned temperature is applied
    too: both store ``logit_scale = log(1 / T)``, so fine-tuning continues from where they stopped.
    Raises CheckpointError when nothing of the checkpoint fits (another model entirely).
    """
    converted, unplaced, logit_scale = convert_official_state_dict(read_checkpoint(path), model)
    ours = model.state_dict()
    report = LoadReport(logit_scale=logit_scale, unexpected=unplaced)
    to_load = {}
    for key, value in converted.items():
        if KNOWN_UNUSED.match(key):
            report.ignored.append(key)
        elif key not in ours:
            report.unexpected.append(key)
        elif ours[key].shape != value.shape:
            report.mismatched.append(f"{key} {tuple(value.shape)}→{tuple(ours[key].shape)}")
        else:
            to_load[key] = value
    report.missing = sorted(k for k in ours if k not in to_load and not k.endswith("num_batches_tracked"))
    if not to_load:
        raise CheckpointError(f"{path}: no tensor matches MEAN's layout; is this a checkpoint of the authors' MEAN?")
    model.load_state_dict(to_load, strict=False)
    report.loaded = len(to_load)
    if infonce is not None and logit_scale is not None:
        with torch.no_grad():
            infonce.logit_scale.fill_(logit_scale)
    return report
