"""MEAN's multi-loss (symmetric InfoNCE, identity cross-entropy, CDA) and the baselines' objectives.

``loss.name`` selects a registered objective (:data:`LOSSES`): ``mean``, ``sample4geo``, ``dac``,
``camp`` (:mod:`mean_geo.losses.peers`), or a plugin's."""

from mean_geo.losses.build import build_loss
from mean_geo.losses.objectives import LOSS_PARTS, CDALoss, IdentityLoss, InfoNCELoss, MEANLoss, gather_with_grad
from mean_geo.losses.peers import CAMPLoss, DACLoss, Sample4GeoLoss
from mean_geo.losses.registry import LOSSES, register_loss

__all__ = [
    "LOSSES",
    "LOSS_PARTS",
    "CAMPLoss",
    "DACLoss",
    "CDALoss",
    "IdentityLoss",
    "InfoNCELoss",
    "MEANLoss",
    "Sample4GeoLoss",
    "build_loss",
    "gather_with_grad",
    "register_loss",
]
