"""The baselines' objectives: Sample4Geo's InfoNCE, DAC's InfoNCE + CE + DSA, CAMP's InfoNCE + CAM.

Each is a :class:`~mean_geo.losses.MEANLoss` (the same InfoNCE part, the same logging, gradient
caching and DDP gathering) whose terms are its authors' (``../shared/research/peers.md``):

- Sample4Geo: ``L = InfoNCE(satellite, drone)`` (label smoothing 0.1, learnable temperature).
- DAC: ``L = InfoNCE + 0.1·CE + 0.6·DSA``; CE is the mean over the three heads, summed over both
  views, without smoothing; ``DSA = 1 − mean_b cos(a_b, b_b)`` over each pair's flattened DSA map.
- CAMP: ``L = InfoNCE + w_mse·MSE(P̂_sat, P̂_drone) + 0.5·w·bNCE(P_sat) + 0.5/w·bNCE(P_drone)``,
  where ``P`` are the part blocks, ``P̂`` them L2-normalised, ``bNCE(P)`` the InfoNCE of the blocks
  against themselves (its own learnable temperature) and ``w`` a learnable weight (start 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mean_geo.errors import ConfigError
from mean_geo.losses.objectives import InfoNCELoss, MEANLoss, _weight, at_least_fp32, check_weights
from mean_geo.losses.registry import register_loss
from mean_geo.models.mean import MEANOutput


@register_loss("sample4geo")
class Sample4GeoLoss(MEANLoss):
    """Sample4Geo's objective: the symmetric InfoNCE of the two views' embeddings, nothing else.

    Args:
        weight_infonce: the InfoNCE term's weight (1).
        infonce: the InfoNCE part; default as released (temperature 0.07 learnt, smoothing 0.1).
    """

    def __init__(self, weight_infonce: float = 1.0, infonce: InfoNCELoss | None = None) -> None:
        super().__init__(weight_cda=0.0, weight_infonce=weight_infonce, weight_ce=0.0, infonce=infonce)

    @classmethod
    def model_branches(cls, spec: Mapping[str, Any]) -> dict[str, bool]:
        """No training branch: the embedding alone."""
        return {"use_gee": False, "use_cea": False}

    def term_weights(self) -> dict[str, float | torch.Tensor]:
        """``loss_infonce`` only."""
        return {"loss_infonce": self.weight_infonce}


def dsa_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DAC's DSA term: ``1 − mean cos`` of each pair's flattened ``(C, N)`` maps.

    The order the map is flattened in does not change a cosine, so the authors' transpose first
    gives the same value.
    """
    fa, fb = at_least_fp32(a).flatten(1), at_least_fp32(b).flatten(1)
    return 1 - F.cosine_similarity(fa, fb, dim=1, eps=1e-12).mean()


@register_loss("dac")
class DACLoss(MEANLoss):
    """DAC's objective: InfoNCE + the heads' cross-entropy + domain space alignment.

    Args:
        weight_infonce: the InfoNCE term's weight (1).
        weight_ce: the cross-entropy term's weight (0.1; CE of both views, each the mean of 3 heads).
        weight_dsa: the DSA term's weight (0.6).
        infonce: the InfoNCE part; default as released.

    Raises:
        ConfigError: a negative weight.
    """

    def __init__(
        self,
        weight_infonce: float = 1.0,
        weight_ce: float = 0.1,
        weight_dsa: float = 0.6,
        infonce: InfoNCELoss | None = None,
    ) -> None:
        check_weights(weight_dsa=weight_dsa)
        super().__init__(weight_cda=0.0, weight_infonce=weight_infonce, weight_ce=weight_ce, infonce=infonce)
        self.weight_dsa = weight_dsa

    @classmethod
    def model_branches(cls, spec: Mapping[str, Any]) -> dict[str, bool]:
        """The heads for CE, the DSA branch for DSA."""
        return {"use_gee": _weight(cls, spec, "weight_ce") > 0, "use_cea": _weight(cls, spec, "weight_dsa") > 0}

    def per_sample_terms(
        self, drone: MEANOutput, satellite: MEANOutput, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """CE (MEAN's, the same heads' layout) and DSA."""
        terms = super().per_sample_terms(drone, satellite, labels)
        if self.weight_dsa > 0:
            if drone.aligned is None or satellite.aligned is None:
                raise ConfigError("loss.weight_dsa > 0 but the model was built without the DSA branch")
            terms["loss_dsa"] = dsa_loss(satellite.aligned, drone.aligned)
        return terms

    def term_weights(self) -> dict[str, float | torch.Tensor]:
        """``loss_infonce``, ``loss_ce`` and ``loss_dsa``."""
        return {"loss_infonce": self.weight_infonce, "loss_ce": self.weight_ce, "loss_dsa": self.weight_dsa}


@register_loss("camp")
class CAMPLoss(MEANLoss):
    """CAMP's objective as its released University-1652 and SUES-200 scripts compute it.

    Their defaults ``if_learn_ECE_weights``, ``if_use_multiply_1`` and ``only_fine``.

    Args:
        weight_infonce: the InfoNCE term's weight (1).
        weight_part_mse: the cross-view part MSE's weight (0 University-1652, 1 SUES-200).
        weight_blocks: multiplies both self-block terms (1 as released; 0 turns CAM off).
        ece_weight: the learnable ``w``'s start (0.5: the block terms start at 0.25 and 1).
        learnable_ece_weight: learn ``w`` (as released) or keep it fixed.
        infonce: the InfoNCE part of the embeddings; default as released.
        block_infonce: the InfoNCE part of the part blocks (its own learnt temperature, smoothing 0.1).

    Raises:
        ConfigError: a negative weight, or ``ece_weight`` not above 0.
    """

    def __init__(
        self,
        weight_infonce: float = 1.0,
        weight_part_mse: float = 0.0,
        weight_blocks: float = 1.0,
        ece_weight: float = 0.5,
        learnable_ece_weight: bool = True,
        infonce: InfoNCELoss | None = None,
        block_infonce: InfoNCELoss | None = None,
    ) -> None:
        check_weights(weight_part_mse=weight_part_mse, weight_blocks=weight_blocks)
        if ece_weight <= 0:
            raise ConfigError(f"loss.ece_weight={ece_weight}: must be > 0 (its inverse weighs the drone's term)")
        super().__init__(weight_cda=0.0, weight_infonce=weight_infonce, weight_ce=0.0, infonce=infonce)
        self.weight_part_mse, self.weight_blocks = weight_part_mse, weight_blocks
        self.block_infonce = block_infonce if block_infonce is not None else InfoNCELoss()
        start = torch.tensor(float(ece_weight))
        if learnable_ece_weight:
            self.ece_weight = nn.Parameter(start)
        else:
            self.register_buffer("ece_weight", start)

    @classmethod
    def model_branches(cls, spec: Mapping[str, Any]) -> dict[str, bool]:
        """No heads, no DSA: the part blocks come with CAMP's model."""
        return {"use_gee": False, "use_cea": False}

    def monitored(self) -> dict[str, float]:
        """Both temperatures and ``w``."""
        return {
            **super().monitored(),
            "block_temperature": self.block_infonce.temperature,
            "ece_weight": float(self.ece_weight.detach()),
        }

    def per_sample_terms(
        self, drone: MEANOutput, satellite: MEANOutput, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The part terms (the self-block InfoNCEs are over the batch, but need nothing else)."""
        if drone.parts is None or satellite.parts is None:
            raise ConfigError("loss.name=camp needs a model with part blocks (model.architecture=camp)")
        terms: dict[str, torch.Tensor] = {}
        sat, dro = at_least_fp32(satellite.parts), at_least_fp32(drone.parts)
        if self.weight_part_mse > 0:
            terms["loss_part_mse"] = F.mse_loss(F.normalize(sat, dim=-1), F.normalize(dro, dim=-1))
        if self.weight_blocks > 0:
            terms["loss_blocks_satellite"] = self.block_infonce(sat, sat)
            terms["loss_blocks_drone"] = self.block_infonce(dro, dro)
        return terms

    def term_weights(self) -> dict[str, float | torch.Tensor]:
        """InfoNCE and MSE fixed; the self-block terms ``0.5·w`` (satellite) and ``0.5/w`` (drone)."""
        w = self.ece_weight
        return {
            "loss_infonce": self.weight_infonce,
            "loss_part_mse": self.weight_part_mse,
            "loss_blocks_satellite": 0.5 * self.weight_blocks * w,
            "loss_blocks_drone": 0.5 * self.weight_blocks / w,
        }
