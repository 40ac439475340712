"""MEAN's multi-loss: symmetric InfoNCE (PEE), identity cross-entropy (GEE), CDA (CEA)."""

from mean_geo.losses.objectives import CDALoss, IdentityLoss, InfoNCELoss, MEANLoss, gather_with_grad

__all__ = ["CDALoss", "IdentityLoss", "InfoNCELoss", "MEANLoss", "gather_with_grad"]
