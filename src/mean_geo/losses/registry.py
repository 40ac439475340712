"""The registry of training objectives ``loss.name`` may select (``mean``; a plugin adds its own).

A checkpoint records the name and the plain arguments; only code you import registers one.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mean_geo.utils.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss", "loss.name")


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make ``name`` selectable as ``loss.name`` (``@register_loss("my_loss")``).

    A registered loss is :class:`~mean_geo.losses.MEANLoss` or a subclass: it returns its terms
    (``loss_<term>``) and their weighted sum (``loss``), all logged.

    Args:
        name: what ``loss.name`` (and a checkpoint's spec) calls it.

    Returns:
        The decorator; it refuses a name another class has.
    """
    return LOSSES.register(name)
