"""Comparing floats computed now with floats computed on another machine.

oneDNN, ATen and MKL pick their kernels by CPU (AVX2, AVX-512, SSE4.1 …), so the same float32
network gives results that differ in the last bits from one machine to the next: a stored
embedding is never expected bit for bit.  What *is* machine-independent is the exact answer, which
float64 gives to ~1e-15.  A stored float32 result is then accepted when its distance from the exact
answer is of the size of this machine's own float32 error — "equal within float32 rounding".
Weights read from a file, on the other hand, are the same bytes everywhere and compared exactly.
"""

from __future__ import annotations

import copy

import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps

#: Another kernel set rounds differently but not worse: its error is of the size of ours.  The
#: largest element error over a few thousand outputs still varies from one rounding pattern to
#: another, so a stored result may sit a few times further from the exact answer than ours does.
ROUNDING_SPREAD = 4.0
#: ... plus a floor of a few float32 ulps at the embeddings' scale (unit vectors: elements <= 1),
#: for the case where this machine's own error happens to be tiny.
ULP_FLOOR = 16 * FLOAT32_EPS


def exact_forward(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``model(inputs)`` in float64 on a copy: the machine-independent reference."""
    reference = copy.deepcopy(model).double().eval()
    with torch.inference_mode():
        return reference(inputs.double())


def float32_error(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(this machine's float32 output, the float64 output, the largest element error of the former)."""
    with torch.inference_mode():
        now = model(inputs)
    exact = exact_forward(model, inputs)
    return now, exact, float((now.double() - exact).abs().max())


def assert_within_float32_rounding(model: torch.nn.Module, inputs: torch.Tensor, stored: torch.Tensor) -> None:
    """``stored`` (float32, computed elsewhere) is ``model(inputs)`` up to float32 rounding: no
    further from the exact answer than this machine's own float32 result is, within the spread of
    another rounding pattern."""
    now, exact, own_error = float32_error(model, inputs)
    assert now.shape == stored.shape and now.dtype == stored.dtype
    stored_error = float((stored.double() - exact).abs().max())
    tolerance = ROUNDING_SPREAD * own_error + ULP_FLOOR
    assert stored_error <= tolerance, (
        f"stored result is {stored_error:.3g} from the float64 answer; this machine's float32 error is "
        f"{own_error:.3g} (tolerance {tolerance:.3g})"
    )


def assert_same_tensors(model: torch.nn.Module, stored: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Every tensor of ``model`` is the stored one bit for bit (weights are bytes, not arithmetic);
    ``prefix`` is what the file puts before the model's own key names (``model.`` in checkpoints)."""
    state = model.state_dict()
    assert state, "a model without weights"
    for key, value in state.items():
        assert prefix + key in stored, f"{prefix + key}: not in the file"
        expected = stored[prefix + key]
        assert value.dtype == expected.dtype and torch.equal(value, expected), key
