"""The one registry helper (architectures, loss terms, dataset layouts): register, get with the
closest names on a miss, list, refuse a name taken by another class; every registered architecture
trains, every registered loss sums its weighted terms."""

from __future__ import annotations

import pytest
import torch

from mean_geo.datamodules import DATAMODULES
from mean_geo.errors import ConfigError, SpecError
from mean_geo.files.specs import loss_spec, model_spec
from mean_geo.losses import LOSSES, MEANLoss, build_loss
from mean_geo.models.mean import MEAN  # noqa: F401  (registers "mean" before the parametrisation reads the names)
from mean_geo.models.peers import CAMP  # noqa: F401  (and the baselines)
from mean_geo.models.registry import ARCHITECTURES, build_architecture
from mean_geo.utils.registry import Registry


def test_register_get_and_list():
    registry: Registry[type] = Registry("widget", "thing.kind")

    @registry.register("round_widget")
    class Round:
        pass

    @registry.register("square_widget")
    class Square:
        pass

    assert registry.get("round_widget") is Round and registry.names() == ["round_widget", "square_widget"]
    assert "square_widget" in registry and len(registry) == 2 and sorted(registry) == registry.names()
    with pytest.raises(SpecError, match=r"thing.kind='round_widgit': unknown widget .*did you mean round_widget"):
        registry.get("round_widgit")
    with pytest.raises(SpecError, match=r"thing.kind='zzz': unknown widget \(registered: round_widget, square_w"):
        registry.get("zzz")


def test_a_name_taken_by_another_class_is_refused_and_the_same_class_again_is_fine():
    registry: Registry[type] = Registry("widget", "thing.kind")

    class First:
        pass

    registry.register("w")(First)
    registry.register("w")(First)  # a module imported twice registers the same class again

    class Second:
        pass

    with pytest.raises(ConfigError, match="widget 'w' is registered twice"):
        registry.register("w")(Second)
    assert registry.get("w") is First


def test_the_shipped_registries_name_their_config_keys():
    with pytest.raises(SpecError, match=r"model.architecture='maen': unknown architecture .*did you mean mean"):
        model_spec({"architecture": "maen"})
    with pytest.raises(SpecError, match=r"loss.name='maen': unknown loss \(registered: .*mean.*did you mean mean"):
        loss_spec({"name": "maen"})
    assert loss_spec({})["name"] == "mean"  # what checkpoints from before the loss registry mean
    assert {"sues200", "university1652"} <= set(DATAMODULES.names())
    with pytest.raises(SpecError, match=r"dataset.name='sues20': unknown dataset .*did you mean sues200"):
        DATAMODULES.get("sues20")


def test_the_parametrisation_below_sees_the_shipped_architectures_and_losses():
    assert {"mean", "sample4geo", "dac", "camp"} <= set(ARCHITECTURES.names()) & set(LOSSES.names())


def _paired(architecture: str | None = None, loss: str | None = None, num_classes: int = 3):
    """An architecture and a loss as ``method=`` pairs them (the same name; ``mean`` otherwise),
    the model with the branches the loss uses."""
    loss_name = loss or (architecture if architecture in LOSSES else "mean")
    checked = loss_spec({"name": loss_name})
    arch = architecture or (loss if loss in ARCHITECTURES else "mean")
    branches = LOSSES.get(loss_name).model_branches(checked)
    spec = {"architecture": arch, "backbone": "test_convnext", "pretrained": False, "num_classes": num_classes}
    return build_architecture(model_spec({**spec, **branches})), build_loss(checked)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_registered_architecture_trains_one_step(name):
    """timm's habit: whatever is registered builds, runs forward and backward (finite, non-zero
    gradients) and embeds in eval mode."""
    torch.manual_seed(0)
    model, loss = _paired(architecture=name)
    drone, satellite, labels = torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    model.train()
    terms = loss(*model.forward_pair(drone, satellite), labels)
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(terms["loss"]) and all(g is None or torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    model.eval()
    with torch.inference_mode():
        emb = model(drone)
    assert emb.shape == (4, model.embedding_dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_is_the_weighted_sum_of_the_terms_it_logs(name):
    torch.manual_seed(0)
    model, loss = _paired(loss=name)
    labels = torch.tensor([0, 1, 2, 0])
    terms = loss(*model.forward_pair(torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64)), labels)
    weights = loss.term_weights()
    parts = {k: v for k, v in terms.items() if k != "loss"}
    assert parts and set(parts) <= set(weights) and all(torch.isfinite(v) for v in parts.values())
    expected = sum(float(torch.as_tensor(weights[k]).detach()) * float(v) for k, v in parts.items())
    assert float(terms["loss"]) == pytest.approx(expected, rel=1e-6)


def test_a_term_without_a_weight_is_refused_rather_than_left_out_of_the_total():
    class Forgetful(MEANLoss):
        def terms(self, drone, satellite, labels):
            return {**super().terms(drone, satellite, labels), "loss_extra": drone.embedding.sum()}

    spec = model_spec({"architecture": "mean", "backbone": "test_convnext", "pretrained": False, "num_classes": 3})
    model = build_architecture(spec)
    outputs = model.forward_pair(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    with pytest.raises(ConfigError, match=r"term\(s\) \['loss_extra'\] have no weight in term_weights"):
        Forgetful()(*outputs, torch.tensor([0, 1]))
