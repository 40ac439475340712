import pytest
import torch

from mean_geo.models.cea import AdaptiveCalibration
from mean_geo.models.gee import MultiScaleDilatedFusion
from mean_geo.models.mean import MEAN, MEANOutput

IMAGENET_HEAD = 768 * 1000 + 1000  # the authors' model keeps timm's unused 1000-class classifier
UNUSED_SCALARS = 4  # logit_scale_blocks, w_blocks1..3


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_matches_the_paper():
    model = MEAN(701, backbone="convnext_tiny.fb_in22k_ft_in1k")
    logit_scale = 1  # lives in the InfoNCE loss in our code, in the model in theirs
    ours = n_params(model) + logit_scale
    assert ours == 35_729_816
    assert round((ours + IMAGENET_HEAD + UNUSED_SCALARS) / 1e6, 2) == 36.50
    assert n_params(model.backbone) == 27_820_128  # what runs at test time
    assert n_params(model.gee.deg) == 4_129_536


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MEAN(7, backbone="test_convnext")


def test_train_and_eval_outputs(tiny):
    x = torch.randn(3, 3, 64, 64)
    tiny.train()
    out = tiny(x)
    assert isinstance(out, MEANOutput)
    assert out.embedding.shape == (3, 64)
    assert [tuple(lg.shape) for lg in out.logits] == [(3, 7)] * 3
    assert out.aligned.shape == (3, 512, 4)  # 64 px / 32 = 2x2 positions
    tiny.eval()
    emb = tiny(x)
    assert emb.shape == (3, 64)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    # eval embedding is the normalised pooled backbone vector, exactly as released
    _, pooled = tiny.backbone(x)
    assert torch.allclose(emb, torch.nn.functional.normalize(pooled, dim=1), atol=1e-6)
    assert tiny.training is False and torch.allclose(tiny.embed(x), emb)


def test_only_branches_with_a_loss_are_built():
    bare = MEAN(5, backbone="test_convnext", use_gee=False, use_cea=False)
    assert bare.gee is None and bare.cea is None and bare.pee is None
    assert n_params(bare) == n_params(bare.backbone)
    out = bare.train()(torch.randn(2, 3, 64, 64))
    assert out.logits == [] and out.aligned is None


def test_multiscale_pee_starts_as_the_released_embedding_and_learns():
    torch.manual_seed(1)
    released = MEAN(5, backbone="test_convnext", use_gee=False, use_cea=False).eval()
    multi = MEAN(5, backbone="test_convnext", use_gee=False, use_cea=False, pee="multiscale").eval()
    multi.backbone.load_state_dict(released.backbone.state_dict())
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(released(x), multi(x), atol=1e-6)
    multi.train()
    multi(x).embedding.sum().backward()
    grads = [p.grad for p in multi.pee.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_double_softmax_is_nearly_uniform_single_is_not():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(2, 16, 144), dim=1)
    released = AdaptiveCalibration(16, double_softmax=True)
    single = AdaptiveCalibration(16, double_softmax=False)
    single.load_state_dict(released.state_dict())
    w_rel, w_single = released(x), single(x)
    assert torch.allclose(w_rel.sum(2), torch.ones(2, 16)) and torch.allclose(w_single.sum(2), torch.ones(2, 16))
    assert (w_rel.max() - w_rel.min()) < 0.02 and w_rel.min() > 1 / 144 / 3  # bounded near 1/N
    assert w_single.max() > 0.2  # a real attention peak


def test_released_head_bottleneck_ignores_channel_order():
    torch.manual_seed(0)
    x = torch.randn(4, 64)
    perm = torch.randperm(64)
    conv = MultiScaleDilatedFusion(64, 32, channel_axis_conv=True)
    lin = MultiScaleDilatedFusion(64, 32, channel_axis_conv=False)
    rel = lambda m: ((m(x) - m(x[:, perm])).norm() / m(x).norm()).item()  # noqa: E731
    assert rel(conv) < 0.1  # only edge effects of the zero padding
    assert rel(lin) > 0.5


def test_fast_bottleneck_equals_the_released_convolutions():
    torch.manual_seed(0)
    fusion = MultiScaleDilatedFusion(768, 512, channel_axis_conv=True)
    x = torch.randn(5, 768, requires_grad=True)
    s = x.unsqueeze(1)
    convs = [*(conv(s) for conv in fusion.dilated), torch.nn.functional.relu(fusion.pointwise(s))]
    reference = torch.cat(convs, dim=1).mean(dim=-1)
    fast = fusion(x)
    assert fast.shape == (5, 512)
    assert torch.allclose(fast, reference, atol=1e-5)
    grads = torch.autograd.grad(fast.sum(), [x, *fusion.parameters()])
    ref_grads = torch.autograd.grad(reference.sum(), [x, *fusion.parameters()])
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(grads, ref_grads, strict=True))


def test_the_bottleneck_stays_finite_under_fp16_autocast():
    """Summing ~2000 channels of 40 before dividing passed fp16's 65504 in the half-precision
    product (a CUDA fp16 run: NaN heads); the mean first cannot overflow."""
    torch.manual_seed(0)
    fusion = MultiScaleDilatedFusion(2048, 512, channel_axis_conv=True)
    x = 40.0 + torch.randn(2, 2048)
    with torch.autocast("cpu", dtype=torch.float16):
        half = fusion(x)
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), fusion(x), rtol=0.02, atol=0.05)


def test_joint_backbone_pass_equals_two_separate_passes():
    torch.manual_seed(0)
    model = MEAN(6, backbone="test_convnext").train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # make the two computations comparable
    assert model.per_sample_backbone
    drone, sat = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)
    joint = model.forward_pair(drone, sat)
    separate = (model(drone), model(sat))
    for a, b in zip(joint, separate, strict=True):
        assert torch.allclose(a.embedding, b.embedding, atol=1e-5)
        assert torch.allclose(a.aligned, b.aligned, atol=1e-4)
        assert all(torch.allclose(x, y, atol=1e-4) for x, y in zip(a.logits, b.logits, strict=True))


def test_fast_depthwise_backbone_trains_like_the_plain_one():
    from mean_geo.losses import MEANLoss
    from mean_geo.models.depthwise import DepthwiseConv2d

    grads = []
    for fast in (False, True):
        torch.manual_seed(0)
        model = MEAN(6, backbone="test_convnext", fast_depthwise=fast).train()
        n_fast = sum(isinstance(m, DepthwiseConv2d) for m in model.modules())
        assert (n_fast > 0) == fast  # every block of the ConvNeXt has one 7x7 depthwise conv
        gen = torch.Generator().manual_seed(1)
        drone, sat = torch.randn(4, 3, 64, 64, generator=gen), torch.randn(4, 3, 64, 64, generator=gen)
        torch.manual_seed(2)  # same drop-path draws
        MEANLoss()(*model.forward_pair(drone, sat), torch.arange(4))["loss"].backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, plain in grads[0].items():
        torch.testing.assert_close(grads[1][name], plain, rtol=1e-4, atol=1e-5, msg=name)
