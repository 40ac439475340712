"""Find the parameters no loss term trains, so they can be frozen before DDP wraps the model.

DDP (without ``find_unused_parameters``, which costs a graph walk every step) stops at its second
step when a parameter that requires a gradient got none: a zero-weighted term's learnt temperature
(``loss.weight_infonce=0``), CAMP's ``w`` with ``loss.weight_blocks=0``, the head norm of a
CAMP trained by its parts alone.  Which parameters those are depends on the architecture, the loss
and every weight (a plugin's too), so it is measured, not listed: one forward and backward pass of
model + loss on the ``meta`` device, which computes shapes only (no data, no RNG draws, no
BatchNorm statistics touched) in a fraction of a second.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


class _ModelAndLoss(nn.Module):
    """``model`` and ``loss`` under the names the LightningModule gives them."""

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, drone: torch.Tensor, satellite: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(*self.model.forward_pair(drone, satellite), labels)["loss"]


def untrained_parameters(model: nn.Module, loss: nn.Module, image_size: int, batch: int = 2) -> list[str]:
    """Names (``model.…``, ``loss.…``) of the trainable parameters that no term of ``loss`` gives a gradient.

    Args:
        model: the architecture (its ``forward_pair`` gives the training outputs).
        loss: the objective over those outputs.
        image_size: the training images' side.
        batch: pairs of the dry run.

    Returns:
        The names, in module order; empty when every trainable parameter is trained.
    """
    pair = _ModelAndLoss(model, loss)
    modes = {m: m.training for m in pair.modules()}
    pair.train()  # the branches training builds
    try:
        return _without_gradient(pair, image_size, batch)
    finally:
        for m, training in modes.items():
            m.training = training


def _without_gradient(pair: _ModelAndLoss, image_size: int, batch: int) -> list[str]:
    params = {
        name: torch.empty_like(p, device="meta").requires_grad_(p.requires_grad) for name, p in pair.named_parameters()
    }
    buffers = {name: torch.empty_like(b, device="meta") for name, b in pair.named_buffers()}
    images = torch.empty(batch, 3, image_size, image_size, device="meta")
    labels = torch.zeros(batch, dtype=torch.long, device="meta")
    total = functional_call(pair, {**params, **buffers}, (images, images, labels))
    trainable = [name for name, p in params.items() if p.requires_grad]
    grads = torch.autograd.grad(total, [params[n] for n in trainable], allow_unused=True)
    return [name for name, grad in zip(trainable, grads, strict=True) if grad is None]
