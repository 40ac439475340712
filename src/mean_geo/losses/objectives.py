"""MEAN's losses: symmetric InfoNCE (PEE), ID cross-entropy (GEE), CDA (CEA) and their weighted sum.

Paper: L = λ1·L_CDA + λ2·L_InfoNCE + λ3·L_CE with λ = (1.3, 1.0, 0.1) on University-1652 and
λ1 = 0.75 on SUES-200 (spec §3).  Plain ``nn.Module``s with keyword arguments; no Lightning.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mean_geo.errors import ConfigError
from mean_geo.losses.registry import register_loss
from mean_geo.models.mean import MEANOutput

CDA_VARIANTS = ("released", "paper")


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision (autocast) activations upcast for the loss.

    float64 stays float64: the exactness tests of gradient caching run in float64.
    """
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks, keeping gradients (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


class InfoNCELoss(nn.Module):
    """Symmetric (CLIP-style) InfoNCE with a learnable temperature and label smoothing.

    ``logits = exp(logit_scale) · â bᵀ``; the positive of row i is column i; the loss is the mean of
    the row-wise and column-wise cross-entropies.  ``gather_distributed`` uses the pairs of all DDP
    ranks as negatives, like the reference's DataParallel batch (which is one big batch).

    With per-pair ``weights`` (GTA-UAV's footprint IoUs) it is Game4Loc's weighted InfoNCE: pair i's
    label smoothing is ``ε_i = 1 − σ(pair_weight_k · w_i)`` instead of ``label_smoothing`` (a pair
    that overlaps its tile more is trusted more), in both directions.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        label_smoothing: float = 0.1,
        learnable_temperature: bool = True,
        gather_distributed: bool = True,
        pair_weight_k: float = 5.0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"loss.infonce.temperature={temperature}: must be > 0")
        if pair_weight_k <= 0:
            raise ConfigError(f"loss.infonce.pair_weight_k={pair_weight_k}: must be > 0")
        self.pair_weight_k = pair_weight_k
        scale = torch.tensor(math.log(1 / temperature))
        if learnable_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        self.label_smoothing = label_smoothing
        self.gather_distributed = gather_distributed

    @property
    def temperature(self) -> float:
        """The current softmax temperature (1 / the learnt logit scale)."""
        return float(torch.exp(-self.logit_scale.detach()))

    def forward(self, a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The symmetric loss of paired embeddings.

        Args:
            a: ``(B, D)`` embeddings of one view (not necessarily normalised).
            b: ``(B, D)`` the paired embeddings of the other view.
            weights: ``(B,)`` the pairs' IoUs for the weighted form; None for the plain one.

        Returns:
            The mean of the row-wise and column-wise cross-entropies.
        """
        a, b = F.normalize(at_least_fp32(a), dim=-1), F.normalize(at_least_fp32(b), dim=-1)
        if self.gather_distributed:
            a, b = gather_with_grad(a), gather_with_grad(b)
            if weights is not None:
                weights = gather_with_grad(weights.to(a.dtype))
        logits = self.logit_scale.exp() * a @ b.t()
        target = torch.arange(a.shape[0], device=a.device)
        if weights is not None:
            return (self._weighted(logits, weights) + self._weighted(logits.t(), weights)) / 2
        ce = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        ce_t = F.cross_entropy(logits.t(), target, label_smoothing=self.label_smoothing)
        return (ce + ce_t) / 2

    def _weighted(self, logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each row against its diagonal, smoothed by ``1 − σ(k·w_i)``."""
        smoothing = 1 - torch.sigmoid(self.pair_weight_k * weights.to(logits.dtype))
        log_p = F.log_softmax(logits, dim=1)
        nll = -log_p.diagonal()
        uniform = -log_p.mean(dim=1)
        return ((1 - smoothing) * nll + smoothing * uniform).mean()


class IdentityLoss(nn.Module):
    """Cross-entropy over locations, averaged over the GEE heads of one view (no label smoothing)."""

    def forward(self, logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy of the heads' ``logits`` against the place ``labels``."""
        return sum(F.cross_entropy(at_least_fp32(lg), labels) for lg in logits) / len(logits)


class CDALoss(nn.Module):
    """Cross-domain alignment of the CEA maps of the two views of each pair (positives only).

    Each sample's map ``(C, N)`` is flattened to one vector.  ``"released"``: cosine term plus the
    code's "MSE" term, which is again ``1 − mean cos`` — so the loss is ``2·(1 − mean cos)``
    (spec §9.3).  ``"paper"`` ([INFERRED] from the text "cosine + MSE"): ``(1 − mean cos)`` plus the
    mean squared error between the raw (un-normalised) maps.
    """

    def __init__(self, variant: str = "released") -> None:
        super().__init__()
        if variant not in CDA_VARIANTS:
            raise ConfigError(f"loss.cda.variant={variant!r}: expected one of {list(CDA_VARIANTS)}")
        self.variant = variant

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a, b: (B, C, N)``."""
        fa, fb = at_least_fp32(a).flatten(1), at_least_fp32(b).flatten(1)
        cos = F.cosine_similarity(fa, fb, dim=1, eps=1e-12)
        cosine_term = 1 - cos.mean()
        if self.variant == "released":
            return cosine_term + (1 - cos.sum() / fa.shape[0])
        return cosine_term + F.mse_loss(fa, fb)


#: the configurable parts of a registered loss: ``loss.<key>`` holds the plain arguments of each
#: (``block_infonce``: CAMP's InfoNCE over part blocks, with its own temperature)
LOSS_PARTS: dict[str, type[nn.Module]] = {"infonce": InfoNCELoss, "cda": CDALoss, "block_infonce": InfoNCELoss}


def check_weights(**weights: float) -> None:
    """Refuse a negative term weight, naming its key (``loss.weight_cda=-1: must be >= 0``)."""
    for name, w in weights.items():
        if w < 0:
            raise ConfigError(f"loss.{name}={w}: must be >= 0")


def _weight(cls: type, spec: Mapping[str, Any], key: str) -> float:
    """A weight from a loss spec, or the class's default for it."""
    if key in spec:
        return float(spec[key])
    parameter = inspect.signature(cls).parameters.get(key)
    return 0.0 if parameter is None or parameter.default is parameter.empty else float(parameter.default)


@register_loss("mean")
class MEANLoss(nn.Module):
    """Weighted total; returns every term so each can be logged.

    Order of the weights follows the paper: ``weight_cda`` (λ1), ``weight_infonce`` (λ2),
    ``weight_ce`` (λ3).  A zero weight skips the term entirely.

    Adding a term (README, "Extending"): subclass, take its weight as a keyword argument, and
    extend :meth:`terms` (compute ``loss_<name>``) and :meth:`term_weights` (its weight); register
    the subclass with ``@mean_geo.register_loss("my_loss")`` and select it with ``loss.name``.

    Args:
        weight_cda: λ1, the CDA (CEA alignment) term's weight.
        weight_infonce: λ2, the symmetric InfoNCE (PEE) term's weight.
        weight_ce: λ3, the identity cross-entropy (GEE) term's weight.
        infonce: the InfoNCE part (its temperature and label smoothing); default as released.
        cda: the CDA part; default as released.

    Raises:
        ConfigError: a negative weight.
    """

    def __init__(
        self,
        weight_cda: float = 1.3,
        weight_infonce: float = 1.0,
        weight_ce: float = 0.1,
        infonce: InfoNCELoss | None = None,
        cda: CDALoss | None = None,
    ) -> None:
        super().__init__()
        check_weights(weight_cda=weight_cda, weight_infonce=weight_infonce, weight_ce=weight_ce)
        self.weight_cda, self.weight_infonce, self.weight_ce = weight_cda, weight_infonce, weight_ce
        self.infonce = infonce if infonce is not None else InfoNCELoss()
        self.identity = IdentityLoss()
        self.cda = cda if cda is not None else CDALoss()

    @classmethod
    def model_branches(cls, spec: Mapping[str, Any]) -> dict[str, bool]:
        """Which training branches the model must build for this loss (``use_gee``, ``use_cea``).

        Only what a loss uses is built, so DDP needs no ``find_unused_parameters``.

        Args:
            spec: the loss's checked spec (its weights; absent ones take the defaults).

        Returns:
            The model arguments to add to its spec.
        """
        return {
            "use_gee": _weight(cls, spec, "weight_ce") > 0,
            "use_cea": _weight(cls, spec, "weight_cda") > 0,
        }

    def monitored(self) -> dict[str, float]:
        """The learnt scalars worth a curve beside the loss (``train/<name>``)."""
        return {"temperature": self.infonce.temperature}

    def forward(
        self,
        drone: MEANOutput,
        satellite: MEANOutput,
        labels: torch.Tensor,
        pair_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every term (``loss_<term>``) and their weighted sum (``loss``) for one batch of pairs.

        Args:
            drone: the model's training outputs for the drone views.
            satellite: the same for the satellite views.
            labels: the place of each pair.
            pair_weights: how much each pair overlaps (GTA-UAV's IoUs): InfoNCE's weighted form.

        Returns:
            ``{"loss": total, "loss_<term>": value, ...}``, all logged.
        """
        # a subclass's terms() written before pair weights existed takes three arguments
        terms = (
            self.terms(drone, satellite, labels)
            if pair_weights is None
            else self.terms(drone, satellite, labels, pair_weights)
        )
        terms["loss"] = self.total(terms)
        return terms

    def terms(
        self,
        drone: MEANOutput,
        satellite: MEANOutput,
        labels: torch.Tensor,
        pair_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every term of a batch, unweighted, by name (``loss_infonce``, ``loss_ce``, ``loss_cda``)."""
        terms: dict[str, torch.Tensor] = {}
        if self.weight_infonce > 0:
            terms["loss_infonce"] = self.infonce(satellite.embedding, drone.embedding, pair_weights)
        terms.update(self.per_sample_terms(drone, satellite, labels))
        return terms

    def per_sample_terms(
        self, drone: MEANOutput, satellite: MEANOutput, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The terms that are means over the pairs (CE, CDA).

        A chunk's value times its share of the batch adds up to the batch's value, so gradient
        caching computes them chunk by chunk.
        """
        terms: dict[str, torch.Tensor] = {}
        if self.weight_ce > 0:
            if not drone.logits or not satellite.logits:
                raise ConfigError("loss.weight_ce > 0 but the model was built without GEE heads")
            # summed over the two views, each the mean over its heads (spec §3)
            terms["loss_ce"] = self.identity(satellite.logits, labels) + self.identity(drone.logits, labels)
        if self.weight_cda > 0:
            if drone.aligned is None or satellite.aligned is None:
                raise ConfigError("loss.weight_cda > 0 but the model was built without the CEA branch")
            terms["loss_cda"] = self.cda(satellite.aligned, drone.aligned)
        return terms

    def term_weights(self) -> dict[str, float | torch.Tensor]:
        """Each term's weight in the total, by the name :meth:`terms` gives it (a learnt weight is a tensor)."""
        return {"loss_infonce": self.weight_infonce, "loss_ce": self.weight_ce, "loss_cda": self.weight_cda}

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the terms present (paper: weight_cda·CDA + weight_infonce·InfoNCE + weight_ce·CE)."""
        weights = self.term_weights()
        unweighted = sorted(set(terms) - set(weights) - {"loss"})
        if unweighted:
            raise ConfigError(f"loss: term(s) {unweighted} have no weight in term_weights()")
        if not set(terms) - {"loss"}:
            raise ConfigError("loss: every weight is 0; nothing would be trained")
        return torch.stack(
            [weights[name] * at_least_fp32(value) for name, value in terms.items() if name != "loss"]
        ).sum()
