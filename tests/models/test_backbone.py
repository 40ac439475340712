import pytest
import timm
import torch
from safetensors.torch import save_file

from mean_geo.errors import ConfigError
from mean_geo.models.backbone import TimmBackbone


def test_random_init_returns_last_map_and_pooled_vector():
    net = TimmBackbone("test_convnext")
    fmap, pooled, stages = net(torch.randn(2, 3, 64, 64), return_stages=True)
    assert fmap.shape == (2, 64, 2, 2) and pooled.shape == (2, 64)
    assert [s.shape[1] for s in stages] == net.stage_channels == [24, 32, 48, 64]
    # pooled = the pretrained-style head norm applied to the spatial mean of the last map
    expected = torch.nn.functional.layer_norm(
        fmap.mean((2, 3)), (64,), net.net.head.norm.weight, net.net.head.norm.bias
    )
    assert torch.allclose(pooled, expected, atol=1e-5)


def test_local_weights_file_is_loaded_and_the_imagenet_head_dropped(tmp_path):
    torch.manual_seed(3)
    source = timm.create_model("test_convnext", num_classes=1000)
    path = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    net = TimmBackbone("test_convnext", weights_file=str(path))
    ours = net.net.state_dict()
    assert not any(k.startswith("head.fc") for k in ours)
    for key, value in ours.items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_bad_backbone_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        TimmBackbone("test_convnext", weights_file=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="not a timm model"):
        TimmBackbone("convnext_gigantic_nonexistent")
    # transformers (ViT, Swin, DINOv2) used to be refused here; they are supported now (below)


def test_other_timm_cnns_give_the_same_outputs():
    net = TimmBackbone("test_resnet")
    fmap, pooled, stages = net(torch.randn(2, 3, 64, 64), return_stages=True)
    assert fmap.shape[:2] == (2, net.num_features) and pooled.shape == (2, net.num_features)
    assert [s.shape[1] for s in stages] == net.stage_channels
    assert torch.allclose(pooled, fmap.mean((2, 3)), atol=1e-5)


@pytest.mark.parametrize("name", ["test_vit", "swin_tiny_patch4_window7_224", "vit_small_patch14_dinov2"])
def test_transformer_backbones_work_at_the_datasets_image_size(name):
    """ViT, Swin and DINOv2 are built for one input size (224 / 518 px, 14 px patches): MEAN gives
    them the dataset's size, and the branches a (B, C, H, W) map from their last block."""
    from mean_geo.models.mean import MEAN

    torch.manual_seed(0)
    model = MEAN(num_classes=3, backbone=name, cea_proj_dim=16, cea_out_dim=16)
    drone, sat = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    out_d, out_s = model.forward_pair(drone, sat)
    assert out_d.embedding.shape == (2, model.embedding_dim) and len(out_d.logits) == 3
    assert out_d.aligned is not None and out_s.aligned.shape[:2] == (2, 16)
    model.eval()
    emb = model(torch.rand(3, 3, 64, 64))
    assert emb.shape == (3, model.embedding_dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)


def test_cnn_map_is_the_last_stage_as_before():
    from mean_geo.models.backbone import TimmBackbone

    backbone = TimmBackbone("resnet18").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fmap, pooled = backbone(x)
        final, _ = backbone.net.forward_intermediates(x)
    assert torch.equal(fmap, final) and torch.equal(pooled, backbone.net.forward_head(final, pre_logits=True))
