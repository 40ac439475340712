"""How much of the backbone trains: ``model.finetune=full|frozen|lora`` (+ its last k blocks).

Foundation backbones (DINOv2/DINOv3) are mostly fine-tuned partly: frozen with a trained head
(AdaptGeo), or with low-rank adapters on their linear layers (DINO-GFSA).  LoRA comes from ``peft``
(``inject_adapter_in_model``: the adapters are added in place, the module tree is otherwise ours,
so MEAN's branches and the baselines' heads train fully as before).  What leaves training is plain:
:func:`merge_lora_state` folds each adapter into its linear layer's weight whenever a model is
loaded for inference, so exports, ONNX, ``index`` and ``localize`` need no ``peft``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mean_geo.errors import ConfigError, whole_number

FINETUNE = ("full", "frozen", "lora")
#: LoRA's defaults: timm ViTs name their attention and MLP linear layers qkv, proj, fc1, fc2
LORA_DEFAULTS: dict[str, Any] = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": ["qkv", "proj", "fc1", "fc2"]}


def lora_settings(lora: Mapping[str, Any] | None) -> dict[str, Any]:
    """``model.lora`` completed with :data:`LORA_DEFAULTS` and checked.

    Raises:
        ConfigError: an unknown key or a value out of range, naming ``model.lora.<key>``.
    """
    given = dict(lora or {})
    unknown = sorted(set(given) - set(LORA_DEFAULTS))
    if unknown:
        raise ConfigError(f"model.lora.{unknown[0]}: not a LoRA setting (expected {', '.join(LORA_DEFAULTS)})")
    out = {**LORA_DEFAULTS, **given}
    r, alpha, dropout, targets = out["r"], out["alpha"], out["dropout"], out["targets"]
    whole_number("model.lora.r", r, 1)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ConfigError(f"model.lora.alpha={alpha!r}: expected a number > 0")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model.lora.dropout={dropout!r}: expected a number in [0, 1)")
    if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets:
        raise ConfigError(f"model.lora.targets={targets!r}: expected a non-empty list of linear layer names")
    out["targets"] = [str(t) for t in targets]
    return out


def backbone_blocks(net: nn.Module) -> list[nn.Module]:
    """The backbone's blocks, in order: a transformer's blocks, a CNN's stages."""
    for name in ("blocks", "stages", "layers"):
        found = getattr(net, name, None)
        if isinstance(found, (nn.Sequential, nn.ModuleList)):
            return list(found)
    return []


def apply_finetune(net: nn.Module, mode: str, trainable_blocks: int = 0, lora: Mapping[str, Any] | None = None) -> None:
    """Freeze the backbone ``net`` as ``mode`` says, in place (LoRA adapters added for ``lora``).

    Args:
        net: the timm model.
        mode: ``full`` (everything trains), ``frozen`` (nothing), ``lora`` (only the adapters).
        trainable_blocks: with ``frozen`` or ``lora``, the last k blocks (and the final norms) train fully.
        lora: ``model.lora`` (:func:`lora_settings`).

    Raises:
        ConfigError: an unknown mode, more blocks than the backbone has, or LoRA targets that match
            no linear layer (the message lists those that exist).
    """
    if mode not in FINETUNE:
        raise ConfigError(f"model.finetune={mode!r}: expected one of {', '.join(FINETUNE)}")
    blocks = backbone_blocks(net)
    whole_number("model.trainable_blocks", trainable_blocks, 0)
    if trainable_blocks > len(blocks):
        raise ConfigError(f"model.trainable_blocks={trainable_blocks}: the backbone has {len(blocks)} blocks")
    if mode == "full":
        return
    if mode == "lora":
        _add_lora(net, lora_settings(lora))
    for name, param in net.named_parameters():
        param.requires_grad_("lora_" in name)
    if trainable_blocks:
        for block in blocks[-trainable_blocks:]:
            block.requires_grad_(True)
        for name in ("norm", "fc_norm", "head"):  # what follows the last block
            module = getattr(net, name, None)
            if isinstance(module, nn.Module):
                module.requires_grad_(True)


def _add_lora(net: nn.Module, settings: dict[str, Any]) -> None:
    # the linear layers by their full names: a bare "proj" would also match a patch embedding's conv
    linear = {name: name.rsplit(".", 1)[-1] for name, m in net.named_modules() if isinstance(m, nn.Linear)}
    chosen = [name for name, leaf in linear.items() if leaf in settings["targets"]]
    if not chosen:
        raise ConfigError(
            f"model.lora.targets={settings['targets']}: no linear layer of the backbone has these names; "
            f"its linear layers are named {', '.join(sorted(set(linear.values()))) or '(none)'}"
        )
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ConfigError(
            "model.finetune=lora needs peft: pip install 'mean-geo[lora]' (make install has it)"
        ) from None
    config = LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        lora_dropout=float(settings["dropout"]),
        target_modules=chosen,
    )
    inject_adapter_in_model(config, net)


LORA_KEY = ".base_layer.weight"


def merge_lora_state(state: Mapping[str, torch.Tensor], lora: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
    """A LoRA run's state dict with every adapter folded into its layer, on tensors (no peft, no model):
    ``W + (α/r)·B·A`` under the plain layer's keys.

    A state dict without adapters is returned as it is.
    """
    if not any(key.endswith(LORA_KEY) for key in state):
        return dict(state)
    settings = lora_settings(lora)
    scaling = settings["alpha"] / settings["r"]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".lora_A." in key or ".lora_B." in key or ".lora_dropout." in key:
            continue
        if key.endswith(LORA_KEY):
            layer = key[: -len(LORA_KEY)]
            a, b = state[f"{layer}.lora_A.default.weight"], state[f"{layer}.lora_B.default.weight"]
            out[f"{layer}.weight"] = (value.double() + scaling * (b.double() @ a.double())).to(value.dtype)
        elif ".base_layer." in key:
            out[key.replace(".base_layer.", ".")] = value
        else:
            out[key] = value
    return out


def load_plain_state(model: nn.Module, plain: Mapping[str, torch.Tensor], only: Sequence[str]) -> list[str]:
    """Copy plain weights (an export's, a merged LoRA run's) into ``model``, whether or not it holds
    LoRA adapters (their base layers take the weights; the adapters start as they were built, which
    changes nothing: LoRA's B starts at zero).

    Args:
        model: the model to start from the weights.
        plain: the weights, under a plain model's keys.
        only: key prefixes that must all be found (the retrieval network).

    Returns:
        The keys of ``model`` that took a weight.

    Raises:
        ConfigError: a tensor under ``only`` that ``plain`` lacks or holds in another shape.
    """
    ours = model.state_dict()
    taken: dict[str, torch.Tensor] = {}
    missing = []
    for key, value in ours.items():
        source = plain.get(key.replace(".base_layer.", "."))
        if source is not None and source.shape == value.shape:
            taken[key] = source
        elif key.startswith(tuple(only)) and ".lora_" not in key and not key.endswith("num_batches_tracked"):
            missing.append(key)
    if missing:
        raise ConfigError(
            f"init_from: {len(missing)} tensor(s) of the retrieval network have no counterpart of that shape "
            f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}): another backbone?"
        )
    model.load_state_dict(taken, strict=False)
    return sorted(taken)


def parameter_counts(model: nn.Module, backbone: nn.Module | None = None) -> str:
    """``trainable of total`` parameters (and the backbone's), for the run's log."""

    def count(module: nn.Module) -> tuple[int, int]:
        params = list(module.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    trained, total = count(model)
    text = f"{trained / 1e6:.3f} M trainable of {total / 1e6:.3f} M parameters"
    if backbone is not None:
        b_trained, b_total = count(backbone)
        text += f" (backbone {b_trained / 1e6:.3f} M of {b_total / 1e6:.3f} M)"
    return text
