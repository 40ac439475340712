"""DINOv2/DINOv3 backbones: pooling as their authors define it, full / frozen / LoRA fine-tuning,
gradient checkpointing, merged exports; randomly initialised small models, nothing downloaded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mean_geo.errors import ConfigError
from mean_geo.files.specs import model_spec
from mean_geo.losses import build_loss
from mean_geo.models.backbone import normalization, resolve_pooling
from mean_geo.models.finetune import merge_lora_state, parameter_counts
from mean_geo.models.registry import build_architecture
from mean_geo.training.grad_cache import grad_cached_backward

DINOV2, DINOV3 = "vit_small_patch14_dinov2", "vit_small_patch16_dinov3"


def dino(backbone: str = DINOV3, architecture: str = "dino", **kwargs):
    torch.manual_seed(0)
    spec = {"architecture": architecture, "backbone": backbone, "pretrained": False, "num_classes": 4, **kwargs}
    return build_architecture(model_spec(spec))


def images(side: int, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backbone, side", [(DINOV2, 28), (DINOV3, 32)])
def test_pooling_is_the_authors_definition_on_a_hand_case(backbone, side):
    """Class token: the first token after the final norm; average: the patch tokens' mean (registers
    and class token left out) through timm's fc_norm; GeM over the normed patch tokens, p = 3."""
    x = images(side)
    token = dino(backbone, pooling="token").eval()
    tokens = token.backbone.net.forward_features(x)
    prefix = token.backbone.net.num_prefix_tokens
    assert prefix == (1 if backbone == DINOV2 else 5)  # DINOv3 has 4 registers
    with torch.no_grad():
        torch.testing.assert_close(token.backbone(x)[1], tokens[:, 0])
        gem = dino(backbone, pooling="gem").eval()
        patches = gem.backbone.net.forward_features(x)[:, prefix:]
        torch.testing.assert_close(gem.backbone(x)[1], patches.clamp(min=1e-6).pow(3).mean(1).pow(1 / 3))
        avg = dino(backbone, pooling="avg").eval()
        net = avg.backbone.net
        expected = net.fc_norm(net.forward_features(x)[:, prefix:].mean(1))
        torch.testing.assert_close(avg.backbone(x)[1], expected)
        # the embedding is the pooled vector, L2-normalised
        torch.testing.assert_close(token(x), F.normalize(tokens[:, 0], dim=-1))


def test_auto_pooling_and_statistics_follow_the_family():
    assert resolve_pooling("vit_base_patch14_dinov2.lvd142m", "auto") == "token"
    assert resolve_pooling("vit_large_patch16_dinov3_qkvb.sat493m", "auto") == "token"
    assert resolve_pooling("convnext_tiny.dinov3_lvd1689m", "auto") == "avg"
    assert resolve_pooling("resnet18", "auto") == "avg"
    assert resolve_pooling("vit_base_patch16_224.augreg_in21k", "auto") == "auto"  # timm's own, unchanged
    with pytest.raises(ConfigError, match="model.pooling='cls': expected one of auto, token, avg, gem"):
        resolve_pooling(DINOV2, "cls")
    with pytest.raises(ConfigError, match="has no class token"):
        dino("convnext_tiny.dinov3_lvd1689m", pooling="token")
    # the satellite-pretrained DINOv3 has its own statistics, recorded with the model (dataset.mean/std)
    mean, std = normalization("vit_large_patch16_dinov3.sat493m")
    assert mean == pytest.approx([0.430, 0.411, 0.296]) and std == pytest.approx([0.213, 0.156, 0.143])


@pytest.mark.parametrize("backbone, side", [(DINOV2, 30), (DINOV2, 42), (DINOV3, 40)])
def test_a_size_off_the_patch_grid_is_padded_as_timm_allows(backbone, side):
    model = dino(backbone).eval()
    with torch.no_grad():
        assert model(images(side)).shape == (2, 384)
    least, why = model.input_needs()
    assert least == model.backbone.net.patch_embed.patch_size[0] and "reduces its input" in why


def trained_step(model, side: int) -> dict[str, torch.Tensor]:
    """One AdamW step of model + InfoNCE on random pairs; the state before it."""
    loss = build_loss({"name": "mean", "weight_cda": 1.3, "weight_ce": 0.1})
    loss = loss if model.gee is not None else build_loss({"name": "sample4geo"})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in [*model.parameters(), *loss.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    terms = loss(*model.forward_pair(images(side, 4, 2), images(side, 4, 3)), torch.arange(4))
    terms["loss"].backward()
    optimizer.step()
    return before


def changed(model, before) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_with_lora_one_step_changes_only_the_adapters_and_the_branches():
    """MEAN's GEE/CEA branches on a DINOv3 backbone with LoRA: the backbone's own weights stay."""
    model = dino(DINOV3, architecture="mean", finetune="lora", lora={"r": 4, "targets": ["qkv", "fc2"]})
    before = trained_step(model, 32)
    moved = changed(model, before)
    backbone = {k for k in moved if k.startswith("backbone.")}
    assert backbone and all(".lora_A." in k or ".lora_B." in k for k in backbone)
    assert {k.split(".")[-4] for k in backbone} == {"qkv", "fc2"} and not any(".proj." in k for k in backbone)
    assert any(k.startswith("gee.") for k in moved) and any(k.startswith("cea.") for k in moved)


def test_the_log_line_counts_trainable_and_total_parameters():
    model = dino(DINOV3, finetune="lora", lora={"r": 4, "targets": ["qkv"]})
    # LoRA on qkv: r·(in + out) = 4·(384 + 1152) per block, 12 blocks
    adapters = 12 * 4 * (384 + 1152)
    total = sum(p.numel() for p in model.parameters())
    assert parameter_counts(model, model.backbone) == (
        f"{adapters / 1e6:.3f} M trainable of {total / 1e6:.3f} M parameters "
        f"(backbone {adapters / 1e6:.3f} M of {total / 1e6:.3f} M)"
    )


def test_frozen_keeps_the_backbone_and_its_last_blocks_train_when_asked():
    model = dino(DINOV2, finetune="frozen")
    assert not changed(model, trained_step(model, 28))
    model = dino(DINOV2, finetune="frozen", trainable_blocks=1)
    moved = changed(model, trained_step(model, 28))
    last = len(model.backbone.net.blocks) - 1
    assert moved and all(k.startswith((f"backbone.net.blocks.{last}.", "backbone.net.norm.")) for k in moved)


@pytest.mark.parametrize(
    "kwargs, says",
    [
        (
            {"finetune": "lora", "lora": {"targets": ["q_proj", "v_proj"]}},
            "its linear layers are named fc1, fc2, proj, qkv",
        ),
        ({"finetune": "lora", "lora": {"r": 0}}, "model.lora.r=0: expected a whole number >= 1"),
        ({"finetune": "lora", "lora": {"rank": 4}}, "model.lora.rank: not a LoRA setting"),
        ({"finetune": "adapter"}, "model.finetune='adapter': expected one of full, frozen, lora"),
        ({"finetune": "frozen", "trainable_blocks": 40}, "model.trainable_blocks=40: the backbone has 12 blocks"),
    ],
)
def test_bad_finetuning_settings_are_one_line(kwargs, says):
    with pytest.raises(ConfigError) as exc:
        dino(DINOV3, **kwargs)
    assert says in str(exc.value) and "\n" not in str(exc.value)


def test_merged_lora_equals_the_adapted_model_without_peft_at_inference():
    model = dino(DINOV3, finetune="lora", lora={"r": 4}).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero: give the adapters something to merge
                param.normal_(std=0.05)
        x = images(32, 3)
        adapted = model(x)
        plain_state = merge_lora_state(model.state_dict(), {"r": 4})
        assert not any("lora" in k or "base_layer" in k for k in plain_state)
        plain = dino(DINOV3).eval()
        plain.load_state_dict(plain_state)
        torch.testing.assert_close(plain(x), adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone, side", [(DINOV2, 28), ("convnext_tiny.dinov3_lvd1689m", 32)])
def test_gradient_checkpointing_recomputes_and_stays_exact_with_gradient_caching(backbone, side, monkeypatch):
    """The backbone's activations are recomputed in backward (timm's checkpointing runs), and with
    gradient caching in chunks of one pair the gradients are the whole batch's (float64)."""
    import torch.utils.checkpoint as checkpoint_module

    calls = []
    original = checkpoint_module.checkpoint
    monkeypatch.setattr(checkpoint_module, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    grads = {}
    for name, checkpointing, chunk in (("plain", False, None), ("checkpointed", True, 1)):
        model = dino(backbone, grad_checkpointing=checkpointing).double()
        loss = build_loss({"name": "sample4geo"}).double()
        drone, sat, labels = images(side, 3, 4).double(), images(side, 3, 5).double(), torch.arange(3)
        model.train()
        if chunk is None:
            loss(*model.forward_pair(drone, sat), labels)["loss"].backward()
        else:
            grad_cached_backward(model, loss, drone, sat, labels, chunk)
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert calls, "timm's gradient checkpointing did not run"
    assert grads["plain"].keys() == grads["checkpointed"].keys()
    for key, value in grads["plain"].items():
        torch.testing.assert_close(grads["checkpointed"][key], value, rtol=1e-9, atol=1e-12, msg=key)
