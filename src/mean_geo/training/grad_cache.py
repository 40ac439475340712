"""Gradient caching (Gao, Zhang, Han & Callan, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup", 2021): the InfoNCE of a whole batch of B pairs, with the backbone's
activation memory of a chunk of them.

1. The backbone runs over every chunk without a graph (its RNG state kept): feature maps, pooled
   vectors and embeddings of the whole batch, which are small next to the backbone's activations.
2. The branches (GEE, CEA) and every loss run on those whole-batch features with a graph: InfoNCE's
   negatives are the whole batch and the branches' BatchNorms see the whole batch's statistics, as
   without chunks.  Back-propagating this gives the branches' and the temperature's gradients and
   the gradient of the loss with respect to every feature.
3. The backbone runs over every chunk again with a graph, from the same RNG state (dropout and
   drop-path draw the same masks), and the cached feature gradients are back-propagated through it.

The gradients equal the un-chunked step's when the backbone holds no batch statistics (ConvNeXt's
LayerNorms, the paper's model: ``tests/test_grad_cache.py`` checks it in float64, branches with
BatchNorm included).  A BatchNorm backbone (the ResNet of the demo) normalises each chunk by its
own statistics: the step is then an approximation, measured in docs/model.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from mean_geo.errors import ConfigError
from mean_geo.losses import MEANLoss


class RandomState:
    """The CPU and (when initialised) CUDA generator states, to replay a forward pass exactly."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        cuda_in_use = torch.cuda.is_available() and torch.cuda.is_initialized()
        self.cuda = torch.cuda.get_rng_state_all() if cuda_in_use else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)

    @contextlib.contextmanager
    def replayed(self) -> Iterator[None]:
        """Run the block from this state, then put the generators back where they were, so what
        draws next (data augmentation, the next step) sees the stream it would without replays."""
        now = RandomState()
        self.restore()
        try:
            yield
        finally:
            now.restore()


@contextlib.contextmanager
def batchnorm_stats_kept(model: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics (and counters) as they were before the block."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None} for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved, strict=True):
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)


def chunks(n: int, size: int) -> list[slice]:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"grad_cache.chunk_size={size!r}: expected a whole number >= 1 (or null: off)")
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def grad_cached_backward(
    model: nn.Module,
    loss: MEANLoss,
    drone: torch.Tensor,
    satellite: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
) -> dict[str, torch.Tensor]:
    """Accumulate into ``.grad`` the gradient of ``loss`` over the whole batch, the backbone chunk
    by chunk.

    ``model`` gives ``features_pair(drone, satellite)`` (each view's ``(fmap, pooled, embedding)``)
    and ``branches_pair(drone_features, satellite_features)`` (two ``MEANOutput``), as
    :class:`~mean_geo.models.mean.MEAN` does.  ``backward`` back-propagates the loss (Lightning's
    ``manual_backward``, which applies AMP's loss scale; the cached feature gradients then carry
    that scale into the backbone).
    Returns the batch's loss terms (detached), as ``MEANLoss`` would.
    """
    parts = chunks(labels.shape[0], chunk_size)
    states: list[RandomState] = []
    pieces: list[tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]] = []
    with torch.no_grad(), batchnorm_stats_kept(model):
        for part in parts:
            states.append(RandomState())
            pieces.append(model.features_pair(drone[part], satellite[part]))
    # whole-batch features as leaves: (drone fmap, pooled, embedding), then the satellite's
    leaves = [torch.cat([p[view][i] for p in pieces]).requires_grad_() for view in (0, 1) for i in range(3)]
    with torch.enable_grad():
        terms = loss(*model.branches_pair(tuple(leaves[:3]), tuple(leaves[3:])), labels)
        backward(terms["loss"])
    grads = [leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in leaves]
    for k, part in enumerate(parts):
        with states[k].replayed():
            d, s = model.features_pair(drone[part], satellite[part])
        outputs = [*d, *s]
        used = [(out, grad[part]) for out, grad in zip(outputs, grads, strict=True) if out.requires_grad]
        torch.autograd.backward([out for out, _ in used], [grad.to(out.dtype) for out, grad in used])
    return {name: value.detach() for name, value in terms.items()}
