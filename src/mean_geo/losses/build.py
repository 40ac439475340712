"""Build a registered loss from its checked spec (the parts first, then the loss that sums them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mean_geo.errors import ConfigError
from mean_geo.losses.objectives import LOSS_PARTS, MEANLoss
from mean_geo.losses.registry import LOSSES


def build_loss(spec: Mapping[str, Any]) -> MEANLoss:
    """The loss a checked spec describes (:func:`mean_geo.files.specs.loss_spec` checks it).

    Args:
        spec: ``{"name": <registered loss>, **weights, <part>: {...}}``, the parts as in
            :data:`mean_geo.losses.LOSS_PARTS`.

    Returns:
        The loss, its parts built from their sections.

    Raises:
        ConfigError: every term's weight is 0 (before any step: nothing would be trained).
    """
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    for key, part_cls in LOSS_PARTS.items():
        if key in kwargs:
            kwargs[key] = part_cls(**kwargs[key])
    loss = LOSSES.get(spec.get("name", "mean"))(**kwargs)
    if not any(float(w) > 0 for w in loss.term_weights().values()):
        raise ConfigError("loss: every weight is 0; nothing would be trained")
    return loss
