"""Give eligible layers of a built model a drop-in subclass, in place: same parameters, same
state-dict keys, so checkpoints, exports and the authors' weights load unchanged."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def swap_class(model: nn.Module, eligible: Callable[[nn.Module], bool], new_class: type[nn.Module]) -> int:
    """Turn every module of ``model`` that ``eligible`` accepts into a ``new_class`` (a subclass that
    adds no state); returns how many were converted."""
    converted = 0
    for module in model.modules():
        if eligible(module):
            module.__class__ = new_class
            converted += 1
    return converted
