"""Read a training checkpoint written by mean_geo.train: tensors without unpickling, spec checked.

The one reader behind eval, export, index, localize, ``load_model`` and resuming.  It needs
neither Lightning nor Hydra.  Any file is refused with one line naming the argument and the path:
a missing, truncated or random file, a pickle that wants to run code (``weights_only=True``), or a
spec that names code (see :mod:`mean_geo.files.specs`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from mean_geo.errors import CheckpointError, SpecError
from mean_geo.files.specs import checkpoint_spec


@dataclass
class TrainingCheckpoint:
    path: Path
    raw: dict  # everything torch.load returned (tensors and plain containers only)
    spec: dict  # checked: {"format", "model", "loss"?, "dataset"?}

    @property
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.raw["state_dict"]


def read_checkpoint(path: str | Path, arg: str = "ckpt", for_training: bool = True) -> TrainingCheckpoint:
    """``for_training=False``: inference only reads the model spec and the image size, so the
    dataset section is checked as plain data and not against the datamodule (no Lightning import)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{arg}={path}: is a folder, expected a .ckpt file")
    if not path.is_file():
        raise CheckpointError(f"{arg}={path}: no such checkpoint file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a foreign file fails in many ways; none is ours to show
        raise CheckpointError(f"{arg}={path}: not a readable checkpoint ({type(exc).__name__})") from None
    hparams = raw.get("hyper_parameters") if isinstance(raw, dict) else None
    # "spec"; "build_config" in the checkpoints of earlier versions
    spec = (hparams.get("spec") or hparams.get("build_config")) if isinstance(hparams, dict) else None
    if not spec or not isinstance(raw.get("state_dict"), dict):
        raise CheckpointError(
            f"{arg}={path}: not a mean_geo training checkpoint (no model spec inside); "
            "for the authors' weights use mean_geo.models.official.load_official_checkpoint"
        )
    bad = [k for k, v in raw["state_dict"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{arg}={path}: state_dict holds something other than named tensors ({bad[0]!r})")
    try:
        checked = checkpoint_spec(spec, "spec", for_training=for_training)
    except SpecError as exc:
        raise CheckpointError(f"{arg}={path}: {exc}") from None
    return TrainingCheckpoint(path, raw, checked)


def check_weights_fit(
    module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, only: Collection[str] | None = None
) -> None:
    """Refuse weights that do not fit ``module`` (names and shapes), before anything loads them.

    ``only``: the keys that must be there (an inference model needs its retrieval network; a
    training-only part such as CAMP's position embedding may be absent from an export)."""
    own = {k: v for k, v in module.state_dict().items() if only is None or k in only}
    unexpected_in = module.state_dict() if only is not None else own
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in unexpected_in]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        example = (wrong or missing or unexpected)[0]
        raise CheckpointError(
            f"{source}: weights do not fit the model ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} of another shape, e.g. {example}); was it written by another experiment?"
        )
