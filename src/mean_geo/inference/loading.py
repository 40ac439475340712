"""Inference models: load a training checkpoint or an exported folder in one call.

An export (:mod:`mean_geo.inference.export_format`) is a folder with ``model.safetensors`` (only
the retrieval network), ``config.json`` (how to rebuild it: a registered architecture name and
plain arguments, see :mod:`mean_geo.files.specs`) and a ``README.md`` model card; :func:`load_model`
rebuilds it without Lightning or Hydra, without unpickling and without running anything a file
names.
The *fingerprint* identifies the retrieval weights and input size, so an index built with one
model is refused by another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from huggingface_hub import ModelHubMixin, snapshot_download

from mean_geo.errors import CheckpointError, MeanGeoError, SpecError
from mean_geo.files.checkpoints import check_weights_fit, read_checkpoint
from mean_geo.files.specs import image_size_of, model_spec, plugin_names
from mean_geo.inference.export_format import (
    CONFIG,
    HUB_FILES,
    WEIGHTS,
    inference_spec,
    read_export,
    retrieval_state,
    write_export,
)
from mean_geo.models.backbone import IMAGENET_STATS
from mean_geo.models.finetune import merge_lora_state
from mean_geo.models.mean import MEAN
from mean_geo.models.registry import build_architecture


@dataclass
class InferenceModel(
    ModelHubMixin,
    library_name="mean_geo",
    tags=["cross-view-geo-localization", "image-feature-extraction", "mean_geo"],
    repo_url="https://github.com/mean-geo/mean_geo",
):
    """An eval-mode MEAN and what is needed to feed it.

    Shared the way the field shares models (huggingface_hub's ``ModelHubMixin``):
    ``save_pretrained(folder)`` writes an export, ``push_to_hub(repo_id)`` uploads one, and
    ``InferenceModel.from_pretrained("owner/name" or folder)`` reads one back (the same checks as
    :func:`load_model`: nothing in the files runs code).

    Args:
        model: the MEAN, in eval mode, with the retrieval branches only.
        image_size: the side of the square input it was trained on.
        fingerprint: identifies the weights and their input (indexes record it).
        spec: the checked model and dataset spec it was built from.
        mean: input statistics it was trained with.
        std: input statistics it was trained with.
    """

    model: MEAN
    image_size: int
    fingerprint: str
    spec: dict
    #: input statistics the model was trained with (files without them: ImageNet, as then used)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_STATS[0]))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STATS[1]))

    def _save_pretrained(self, save_directory: Path) -> None:
        write_export(Path(save_directory), self)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> InferenceModel:
        """An export from the Hub (``"owner/name"``, downloaded into the Hub cache) or a folder."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except MeanGeoError:
            raise
        except Exception as exc:  # noqa: BLE001 - offline, unknown repo, no access: one line
            raise CheckpointError(
                f"{pretrained_model_name_or_path}: cannot get this model from the Hub ({type(exc).__name__})"
            ) from None

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **_config_fields,  # the mixin passes config.json's fields; the export reader checks them itself
    ) -> InferenceModel:
        folder = Path(model_id).expanduser()
        if not folder.is_dir():
            try:
                folder = Path(
                    snapshot_download(
                        repo_id=model_id,
                        revision=revision,
                        cache_dir=cache_dir,
                        force_download=force_download,
                        local_files_only=local_files_only,
                        token=token,
                        allow_patterns=HUB_FILES,
                    )
                )
            except Exception as exc:  # noqa: BLE001 - offline, unknown repo, no access: one line
                raise CheckpointError(
                    f"{model_id}: cannot get this model from the Hub ({type(exc).__name__})"
                ) from None
        return _read_export(folder, "pretrained_model_name_or_path")


def fingerprint(model: MEAN, image_size: int, stats: tuple[list[float], list[float]] | None = None) -> str:
    """Identifies the retrieval weights and the input they expect.

    The input is the image size, and the statistics unless ImageNet's (which keeps the fingerprints
    of files written before statistics were recorded).
    """
    h = hashlib.sha256(f"image_size={image_size};".encode())
    if stats is not None and [list(s) for s in stats] != [list(s) for s in IMAGENET_STATS]:
        h.update(f"mean={list(stats[0])};std={list(stats[1])};".encode())
    for key, value in sorted(retrieval_state(model).items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _build(spec: dict, state: dict[str, torch.Tensor], source: str) -> MEAN:
    try:
        model = build_architecture(model_spec(inference_spec(spec)))
    except SpecError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    # a LoRA run's adapters folded into plain weights: inference never needs peft
    state = merge_lora_state(state, spec.get("lora"))
    own = {k: state[k] for k in model.state_dict() if k in state}  # training-only branches are not built
    # the retrieval network must all be there; a training-only part that is built anyway (CAMP's
    # position embedding) keeps its initial values: the embedding does not read it
    check_weights_fit(model, own, source, only=retrieval_state(model))
    model.load_state_dict(own, strict=False)
    return cast(MEAN, model.eval())  # a registered architecture is MEAN or a subclass (register_architecture)


def _stats(section: dict, where: str) -> tuple[list[float], list[float]]:
    """(mean, std) recorded in a spec section, checked: three numbers each (ImageNet if absent)."""
    mean, std = section.get("mean"), section.get("std")
    if mean is None and std is None:
        return list(IMAGENET_STATS[0]), list(IMAGENET_STATS[1])
    return _three_numbers(mean, f"{where}.mean"), _three_numbers(std, f"{where}.std")


def _three_numbers(value: Any, where: str) -> list[float]:
    ok = isinstance(value, list) and len(value) == 3
    if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise CheckpointError(f"{where}={value!r}: expected three numbers")
    return [float(v) for v in value]


def _read_export(path: Path, arg: str) -> InferenceModel:
    config, state = read_export(path, arg)
    try:
        image_size = image_size_of({"dataset": {"image_size": config.get("image_size")}})
        plugins = plugin_names(config.get("plugins"), "plugins")
        spec = model_spec(config["model"], plugins=plugins)
    except SpecError as exc:
        raise CheckpointError(f"{path / CONFIG}: {exc}") from None
    model = _build(spec, state, str(path))
    stats = _stats(config.get("normalization") or {}, f"{path / CONFIG}: normalization")
    return InferenceModel(model, image_size, fingerprint(model, image_size, stats), {**config, "model": spec}, *stats)


def load_model(path: str | Path, arg: str = "ckpt") -> InferenceModel:
    """The model of a training checkpoint or an export, ready to embed images.

    Nothing in the file runs code or imports a module: it names a registered architecture, and when
    the name is not registered the error says which plugin to import.

    Args:
        path: a training checkpoint (``.ckpt``), an export folder or its ``model.safetensors``.
        arg: the argument the path came from, for error messages (``ckpt``, ``--ckpt``).

    Returns:
        The eval-mode model with its input size, statistics and fingerprint.

    Raises:
        CheckpointError: not a checkpoint or export, of an unknown format, or weights that do not fit.
    """
    path = Path(path).expanduser()
    if path.is_file() and path.name == WEIGHTS:
        path = path.parent
    if path.is_dir():
        return _read_export(path, arg)
    ckpt = read_checkpoint(path, arg, for_training=False)
    state = {k.removeprefix("model."): v for k, v in ckpt.state_dict.items() if k.startswith("model.")}
    model = _build(ckpt.spec["model"], state, f"{arg}={path}")
    image_size = image_size_of(ckpt.spec)
    stats = _stats(ckpt.spec.get("dataset") or {}, f"{arg}={path}: dataset")
    return InferenceModel(model, image_size, fingerprint(model, image_size, stats), ckpt.spec, *stats)
