"""What input a model runs at, checked before any work (before a world is written or a step trained).

Each architecture says the smallest square side it needs and why (:meth:`MEAN.input_needs`: the
backbone's reduction; CAMP's part blocks need as many cells of the last map).  Then the model runs
once on the ``meta`` device at the asked size (shapes only: milliseconds, no weights, no data), so a
limit an architecture forgot to declare still ends in one line naming the setting, not in a
``ValueError`` deep in the first forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.func import functional_call

from mean_geo.errors import ConfigError


def check_image_size(model: torch.nn.Module, image_size: int, key: str = "dataset.image_size") -> None:
    """Refuse an input size ``model`` cannot run at, naming ``key`` and the smallest size that works.

    Args:
        model: a built architecture (any device; it is not run on its own weights).
        image_size: the square input side asked for.
        key: the setting that asked, for the message.

    Raises:
        ConfigError: below the architecture's declared smallest size, or its dry run fails.
    """
    least, why = model.input_needs() if hasattr(model, "input_needs") else (1, "")
    if image_size < least:
        raise ConfigError(f"{key}={image_size}: {why}; use {key}={least} or more")
    try:
        _dry_run(model, image_size)
    except NotImplementedError:  # an op without a meta kernel (a plugin's): the real run will tell
        return
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{key}={image_size}: the model cannot run at this size ({first})") from None


def check_spec_image_size(spec: Mapping[str, Any], image_size: int, key: str = "dataset.image_size") -> None:
    """:func:`check_image_size` for a model spec, built on the ``meta`` device (no weights, no download)."""
    from mean_geo.models.registry import build_architecture

    offline = {**spec, "pretrained": False, "weights_file": None}
    try:
        with torch.device("meta"):
            model = build_architecture(offline)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta: the real build will tell
        return
    check_image_size(model, image_size, key)


def _dry_run(model: torch.nn.Module, image_size: int) -> None:
    """Both of the model's paths, training's pair and evaluation's embedding, on ``meta`` tensors."""
    state = {
        name: torch.empty_like(t, device="meta") for name, t in (*model.named_parameters(), *model.named_buffers())
    }
    images = torch.empty(2, 3, image_size, image_size, device="meta")
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad():
            model.train()
            if hasattr(model, "forward_pair"):
                _call(model, state, "forward_pair", images, images)
            model.eval()
            functional_call(model, state, (images,))
    finally:
        for m, training in modes.items():
            m.training = training


def _call(model: torch.nn.Module, state: dict, method: str, *args: torch.Tensor) -> None:
    """``model.<method>(*args)`` with ``state`` in place of its own tensors."""

    class _Method(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor):
            return getattr(self.model, method)(*inputs)

    functional_call(_Method(), {f"model.{k}": v for k, v in state.items()}, args)
