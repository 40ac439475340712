"""Backbone through timm: the last-stage map and the pooled (and, for ConvNeXt, normed) vector.

MEAN uses ConvNeXt-Tiny ImageNet-22k → 1k (``convnext_tiny.fb_in22k_ft_in1k``).  Plain
``convnext_tiny`` in timm resolves to a different checkpoint, so the tag is pinned.  The classifier
is not built (``num_classes=0``): the released model never uses it (spec §2.1), and unused
parameters would force DDP's ``find_unused_parameters``.  Any timm CNN with ``forward_features`` /
``forward_head`` works too (e.g. a ResNet for ablations); widths are read from the model.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from mean_geo.errors import ConfigError
from mean_geo.utils.imagenet import IMAGENET_MEAN, IMAGENET_STD

DEFAULT_BACKBONE = "convnext_tiny.fb_in22k_ft_in1k"


OFFLINE_HELP = (
    "either put them in the Hugging Face hub cache (run once online), or pass "
    "model.weights_file=/path/to/weights.safetensors|.pth, or set model.pretrained=false (train from scratch)"
)


IMAGENET_STATS = (list(IMAGENET_MEAN), list(IMAGENET_STD))


def normalization(name: str) -> tuple[list[float], list[float]]:
    """(mean, std) the model's weights expect, from timm's pretrained config (ImageNet if unknown)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.mean or not cfg.std:
        return IMAGENET_STATS
    return [float(v) for v in cfg.mean], [float(v) for v in cfg.std]


def hub_weights_reachable(name: str, timeout: float = 3.0) -> bool:
    """Cached, or the hub answers: decided at once, instead of timm's ~50 s of retries offline."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name) if "." in name else None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        return True  # weights behind a plain URL: timm's own download reports itself
    files = [getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin"]
    if any(isinstance(try_to_load_from_cache(hub_id, f), str) for f in files if f):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def create_timm_backbone(
    name: str, pretrained: bool = False, weights_file: str | None = None, global_pool: str | None = None
) -> nn.Module:
    """Build ``name`` with random init, hub-cached weights, or a local weights file (``global_pool``:
    timm's pooling of a transformer, which also decides where its final norm goes)."""
    kwargs: dict = {"num_classes": 0}
    if global_pool is not None:
        kwargs["global_pool"] = global_pool
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.weights_file={path}: no such file")
        # timm's pretrained loader handles the key remapping and drops the 1000-class head
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    else:
        kwargs["pretrained"] = pretrained
        if pretrained and not hub_weights_reachable(name):
            raise ConfigError(
                f"pretrained weights for {name} are not cached and the hub cannot be reached; {OFFLINE_HELP}"
            )
    try:
        return _create_any_size(name, kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid pretrained tag" in str(exc):
            raise ConfigError(f"model.backbone={name}: not a timm model ({exc})") from None
        if weights_file:
            raise _not_weights(weights_file, name, exc) from None
        raise
    except (ValueError, KeyError, EOFError, __import__("pickle").UnpicklingError) as exc:
        if weights_file:  # timm reads the file with weights_only=True: a foreign file fails here
            raise _not_weights(weights_file, name, exc) from None
        raise
    except OSError as exc:  # hub offline / not cached (huggingface_hub errors subclass OSError)
        raise ConfigError(
            f"pretrained weights for {name} could not be loaded ({type(exc).__name__}); {OFFLINE_HELP}"
        ) from None


# transformers (ViT, DINOv2, Swin, …) are built for one input size; these let them take the
# dataset's (patch padding for DINOv2's 14 px patches).  CNNs do not take them: plain creation.
_ANY_SIZE = ({"dynamic_img_size": True, "dynamic_img_pad": True}, {"dynamic_img_size": True}, {})


def _create_any_size(name: str, kwargs: dict) -> nn.Module:
    for extra in _ANY_SIZE:
        try:
            return timm.create_model(name, **kwargs, **extra)
        except TypeError as exc:
            if not extra or not any(key in str(exc) for key in extra):
                raise
    raise AssertionError("unreachable: the last attempt has no extra arguments")


POOLINGS = ("auto", "token", "avg", "gem")
#: transformer families whose authors pool the class token (DINOv3's timm default is the average)
CLASS_TOKEN_FAMILIES = ("dinov2", "dinov3")


def _is_transformer(name: str) -> bool:
    """A timm vision transformer (ViT, DeiT, EVA and the DINO families built on them)."""
    return name.split(".")[0].startswith(("vit_", "deit", "eva", "beit"))


def resolve_pooling(name: str, pooling: str) -> str:
    """``model.pooling=auto``: the class token for DINOv2/DINOv3 ViTs (their authors' retrieval
    feature), the average for CNNs (ConvNeXt: GAP then its LayerNorm, as before), and timm's own
    pooling for other transformers (``auto`` is returned: nothing is changed).

    Raises:
        ConfigError: an unknown pooling.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"model.pooling={pooling!r}: expected one of {', '.join(POOLINGS)}")
    if pooling != "auto":
        return pooling
    family = name.split(".")[0]
    if not _is_transformer(name):
        return "avg"
    # another transformer keeps the pooling timm builds it with (and the module layout of its weights)
    return "token" if any(f in family for f in CLASS_TOKEN_FAMILIES) else "auto"


def gem(fmap: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean pooling ``(mean(clamp(x, eps)^p))^(1/p)`` over the map: ``(B, C, H, W) -> (B, C)``."""
    return fmap.float().clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p).to(fmap.dtype)


def _not_weights(path: str, name: str, exc: BaseException) -> ConfigError:
    detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return ConfigError(f"model.weights_file={path}: not loadable as {name} weights ({type(exc).__name__}: {detail})")


class TimmBackbone(nn.Module):
    """``(B, 3, H, W) -> (map (B, C, H/32, W/32), pooled (B, C))``; optionally every stage's map.

    Any timm CNN: ConvNeXt (the paper's, its final norm applied to the pooled vector) or another
    through timm's generic feature API (the demo's ResNet-18).  Was ``ConvNeXtBackbone``; the
    module names of its weights are unchanged, so checkpoints load as before."""

    def __init__(
        self,
        name: str = DEFAULT_BACKBONE,
        pretrained: bool = False,
        weights_file: str | None = None,
        pooling: str = "auto",
    ):
        super().__init__()
        self.name = name
        self.pooling = resolve_pooling(name, pooling)
        transformer = _is_transformer(name)
        # a transformer pools as timm builds it (class token: final norm on every token; avg: its
        # fc_norm after pooling); GeM pools the normed patch tokens itself
        timm_pool = {"token": "token", "avg": "avg", "gem": "token"}.get(self.pooling) if transformer else None
        self.net = create_timm_backbone(name, pretrained, weights_file, timm_pool)
        self.convnext_layout = all(hasattr(self.net, a) for a in ("stem", "stages", "norm_pre"))
        if not self.convnext_layout and not hasattr(self.net, "forward_intermediates"):
            raise ConfigError(f"model.backbone={name}: expected a timm model with forward_intermediates")
        if not transformer and self.pooling == "token":
            raise ConfigError(f"model.pooling=token: {name} has no class token; use avg or gem")
        #: tokens before the patch tokens (class token, registers): not part of the map
        self.prefix_tokens: int = int(getattr(self.net, "num_prefix_tokens", 0)) if transformer else 0
        self.num_features: int = self.net.num_features
        self.stage_channels: list[int] = [int(info["num_chs"]) for info in self.net.feature_info]
        #: how many input pixels one cell of the last feature map spans (32 for a ConvNeXt)
        self.reduction: int = int(self.net.feature_info[-1]["reduction"])

    def forward(
        self, x: torch.Tensor, return_stages: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        if self.convnext_layout:
            x = self.net.stem(x)
            stages = []
            for stage in self.net.stages:
                x = stage(x)
                stages.append(x)
            fmap = self.net.norm_pre(x)
            pooled = (
                gem(fmap) if self.pooling == "gem" else self.net.forward_head(fmap, pre_logits=True)
            )  # GAP + ConvNeXt's pretrained LayerNorm (or GeM)
        else:
            # CNNs: the last stage's map; transformers: tokens (ViT) or NHWC maps (Swin) as ``final``,
            # and every block's output as an NCHW map among the intermediates (the last alone
            # when no branch reads the others)
            final, stages = self.net.forward_intermediates(x, indices=None if return_stages else 1)
            fmap = stages[-1]
            if self.pooling == "gem" and final.ndim == 3:  # the normed patch tokens as a (B, C, N, 1) map
                pooled = gem(final[:, self.prefix_tokens :].transpose(1, 2).unsqueeze(-1))
            elif self.pooling == "gem" and final.ndim == 4:
                pooled = gem(final)
            else:
                pooled = self.net.forward_head(final, pre_logits=True)  # the model's own pooling
        if fmap.ndim != 4:
            raise ConfigError(f"model.backbone={self.name}: expected a convolutional feature map (B, C, H, W)")
        return (fmap, pooled, stages) if return_stages else (fmap, pooled)
