"""MEAN's multi-loss: symmetric InfoNCE (PEE), identity cross-entropy (GEE), CDA (CEA).

``loss.name`` selects a registered objective (:data:`LOSSES`; ``mean`` is MEAN's)."""

from mean_geo.losses.build import build_loss
from mean_geo.losses.objectives import LOSS_PARTS, CDALoss, IdentityLoss, InfoNCELoss, MEANLoss, gather_with_grad
from mean_geo.losses.registry import LOSSES, register_loss

__all__ = [
    "LOSSES",
    "LOSS_PARTS",
    "CDALoss",
    "IdentityLoss",
    "InfoNCELoss",
    "MEANLoss",
    "build_loss",
    "gather_with_grad",
    "register_loss",
]
