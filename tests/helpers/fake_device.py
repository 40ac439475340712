"""A fake CUDA device on the CPU: tensors that say ``cuda:0`` and fail whatever CUDA would refuse.

No line of our GPU path could run here, and the first GPU runs crashed on a CPU index tensor meeting
a CUDA one.  Under :class:`FakeCudaMode`, ``.cuda()``, ``.to("cuda")`` and factories with
``device="cuda"`` give :class:`FakeCuda` tensors (their data stays on the CPU, so results are the
CPU's numbers); an operation mixing a fake-CUDA tensor with a CPU tensor of one or more dimensions
raises CUDA's "Expected all tensors to be on the same device" (CPU scalars and CPU indices into a
CUDA tensor are allowed, as on CUDA), and ``.numpy()`` of a fake-CUDA tensor raises as CUDA's does.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

FAKE_DEVICE = torch.device("cuda", 0)
#: ops that accept CPU index tensors into a CUDA tensor (advanced indexing)
_INDEXING = {"__getitem__", "__setitem__", "index_put_", "index_put"}


class FakeCuda(torch.Tensor):
    """A CPU tensor that reports itself on ``cuda:0`` (created under :class:`FakeCudaMode`)."""

    @staticmethod
    def __new__(cls, data: torch.Tensor) -> FakeCuda:
        return torch.Tensor._make_subclass(cls, data)

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return FAKE_DEVICE

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True


def to_fake(x):
    """``x`` (a tensor, or tensors in tuples, lists and dicts) moved to the fake device."""
    return tree_map(lambda t: FakeCuda(t.detach().clone()) if isinstance(t, torch.Tensor) else t, x)


def _names_cuda(device) -> bool:
    return isinstance(device, (str, torch.device)) and torch.device(device).type == "cuda"


def _plain(func, args, kwargs):
    with torch._C.DisableTorchFunctionSubclass():
        return func(*args, **kwargs)


class FakeCudaMode(TorchFunctionMode):
    """Routes every torch call: device moves and factories to :class:`FakeCuda`, mixed devices refused."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name == "numpy" and isinstance(args[0], FakeCuda):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")
        if name == "cpu":
            return _plain(func, args, kwargs).as_subclass(torch.Tensor)
        if name == "cuda":
            return FakeCuda(args[0].as_subclass(torch.Tensor).clone())
        if name == "to":
            return self._to(func, args, kwargs)
        on_device = False
        if _names_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
            on_device = True
        flat, _ = tree_flatten((args, kwargs))
        fake = any(isinstance(t, FakeCuda) for t in flat)
        cpu = any(isinstance(t, torch.Tensor) and not isinstance(t, FakeCuda) and t.dim() > 0 for t in flat)
        if fake and cpu and not (name in _INDEXING and isinstance(args[0], FakeCuda)):
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
                f"(in {name})"
            )
        out = _plain(func, args, kwargs)
        if not (fake or on_device):
            return out
        return tree_map(lambda t: FakeCuda(t) if type(t) is torch.Tensor else t, out)

    @staticmethod
    def _to(func, args, kwargs):
        target = None
        for a in (*args[1:], kwargs.get("device")):
            if isinstance(a, (str, torch.device)):
                target = torch.device(a)
            elif isinstance(a, torch.Tensor):
                target = a.device
        if target is None:  # a dtype change: stays where it is
            out = _plain(func, args, kwargs)
            return FakeCuda(out.as_subclass(torch.Tensor)) if isinstance(args[0], FakeCuda) else out
        args = tuple("cpu" if isinstance(a, (str, torch.device)) else a for a in args)
        args = tuple(a.as_subclass(torch.Tensor) if isinstance(a, FakeCuda) else a for a in args)
        if "device" in kwargs:
            kwargs["device"] = "cpu"
        out = _plain(func, args, kwargs).as_subclass(torch.Tensor)
        return FakeCuda(out.clone() if out is args[0] else out) if target.type == "cuda" else out
