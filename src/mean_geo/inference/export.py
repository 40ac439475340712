"""``export(ckpt, out)``: the shareable export folder of a checkpoint (the format is
:mod:`mean_geo.inference.export_format`'s), optionally with ``model.onnx``;
``export_official(pth, method, out)``: the same folder from the authors' released weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import torch

from mean_geo.errors import CheckpointError, ConfigError, MeanGeoError
from mean_geo.inference.export_format import retrieval_state, write_export
from mean_geo.inference.loading import load_model
from mean_geo.models.mean import MEAN
from mean_geo.models.official import LoadReport
from mean_geo.reporting.run_file import NAME as RUN_FILE
from mean_geo.reporting.run_file import read_run_file
from mean_geo.utils.atomic import atomic_path
from mean_geo.utils.output import writable_folder

log = logging.getLogger(__name__)


def export(ckpt: str | Path, out_dir: str | Path, metrics: dict | None = None) -> Path:
    """Write the export of a checkpoint (or of another export) into a new folder ``out_dir``."""
    target = _unused_folder(out_dir)
    loaded = load_model(ckpt, "ckpt")  # a bad checkpoint is refused before the folder is touched
    out = _new_folder(target)
    _write_checked(out, loaded, source=Path(ckpt).name, metrics=metrics)
    return out


def _write_checked(out: Path, loaded, source: str, metrics: dict | None = None) -> None:
    """Write the export under a partial name, read it back as every reader will, then give it its
    name: an export its readers would refuse is refused here, and nothing is left behind (a full
    disk leaves no half export either)."""
    with atomic_path(out) as folder:
        folder.mkdir()
        write_export(folder, loaded, source=source, metrics=metrics)
        try:
            load_model(folder, "out")
        except MeanGeoError as exc:
            message = str(exc).replace(str(folder), str(out))
            raise CheckpointError(f"out={out}: not written, its readers would refuse it: {message}") from None


def export_official(
    weights: str | Path, method: str, out_dir: str | Path, backbone: str | None = None, image_size: int = 384
) -> tuple[Path, LoadReport]:
    """Write the export of the authors' released checkpoint of ``method`` into a new folder.

    Their whole model is rebuilt (the heads too, when the file has them) so that every key is
    accounted for; the export keeps the retrieval network, whose every tensor must come from the file.

    Args:
        weights: their ``.pth`` (with or without DataParallel's ``module.`` prefix).
        method: ``mean``, ``sample4geo``, ``dac`` or ``camp`` (the layout, and our architecture).
        out_dir: the folder to create (must not exist, or be empty).
        backbone: a timm name other than the method's (their code only ships its own).
        image_size: the input side the export records (their recipes: 384).

    Returns:
        The folder, and the report of every key.

    Raises:
        CheckpointError: an unreadable file, another method's layout, or a retrieval tensor that is
            missing from it or has another shape.
    """
    from mean_geo.files.specs import image_size_of, model_spec
    from mean_geo.inference.loading import InferenceModel, fingerprint
    from mean_geo.models.backbone import normalization
    from mean_geo.models.official import OFFICIAL_LAYOUTS, load_official_checkpoint, official_num_classes
    from mean_geo.models.official import read_state_dict as read_official
    from mean_geo.models.registry import build_architecture

    if method not in OFFICIAL_LAYOUTS:
        raise CheckpointError(f"--method {method}: expected one of {', '.join(OFFICIAL_LAYOUTS)}")
    try:  # what every reader of the export checks, before any work
        image_size_of({"dataset": {"image_size": image_size}})
    except MeanGeoError as exc:
        raise CheckpointError(str(exc).replace("dataset.image_size=", "--image-size ")) from None
    target = _unused_folder(out_dir)
    state = read_official(weights)
    num_classes = official_num_classes(state)
    spec: dict = {"architecture": method, "pretrained": False, "weights_file": None}
    if backbone:
        spec["backbone"] = backbone
    if method != "sample4geo":  # the heads are rebuilt when the file has them, so their keys load
        has_heads, has_alignment = num_classes is not None, any(".proj." in k for k in state)
        spec.update(num_classes=num_classes or 2, use_gee=has_heads, use_cea=has_alignment and method != "camp")
    spec = model_spec(spec)
    model = cast(MEAN, build_architecture(spec))  # a registered architecture is MEAN or a subclass
    report = load_official_checkpoint(weights, model, method=method)
    wrong = [k for k in report.missing + [m.split(" ")[0] for m in report.mismatched] if k in retrieval_state(model)]
    if wrong:
        raise CheckpointError(
            f"{weights}: {len(wrong)} tensor(s) of {method}'s retrieval network do not fit ({', '.join(wrong[:3])}"
            f"{', …' if len(wrong) > 3 else ''}): another backbone (--backbone) or another method (--method)?"
        )
    model.eval()
    spec["backbone"] = model.backbone.name  # recorded even where the method's default was taken
    stats = normalization(model.backbone.name)
    loaded = InferenceModel(
        model,
        image_size,
        fingerprint(model, image_size, stats),
        {"model": spec, "trained_on": {"name": f"the authors' {method} release", "source": Path(weights).name}},
        *stats,
    )
    out = _new_folder(target)  # only now: a file that does not fit leaves the folder as it was
    _write_checked(out, loaded, source=Path(weights).name)
    return out, report


def _unused_folder(out_dir: str | Path) -> Path:
    """``out_dir``, refused if it exists and is not an empty folder (nothing of the user's is replaced)."""
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"out={out}: exists and is not an empty folder; choose a new folder")
    writable_folder(out.parent, "out", create=False)  # made once the model has loaded
    return out


def _new_folder(out_dir: str | Path) -> Path:
    """``out_dir`` made ready for the export to take its place (an empty folder there is removed)."""
    out = _unused_folder(out_dir)
    writable_folder(out.parent, "out")
    if out.exists():
        out.rmdir()
    return out


def run_metrics_near(ckpt: Path) -> dict:
    """The test metrics of the run that wrote the checkpoint, when its metrics.json is there."""
    for candidate in (ckpt.parent.parent / RUN_FILE, ckpt.parent / RUN_FILE):
        if candidate.is_file():
            try:
                return read_run_file(candidate)["metrics"]
            except ConfigError as exc:  # the export goes on without the run's numbers
                log.warning("model card without test metrics: %s", exc)
                return {}
    return {}


def export_onnx(folder: Path, opset: int = 18, atol: float = 1e-4) -> Path:
    """ONNX of the embedding network (dynamic batch); verified with onnxruntime when installed."""
    loaded = load_model(folder)
    path = folder / "model.onnx"
    x = torch.randn(2, 3, loaded.image_size, loaded.image_size)
    try:
        torch.onnx.export(
            loaded.model,
            (x,),
            str(path),
            input_names=["images"],
            output_names=["embeddings"],
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    except Exception as exc:  # noqa: BLE001
        raise MeanGeoError(f"ONNX export failed ({type(exc).__name__}: {exc}); pip install onnx") from None
    try:
        import onnxruntime as ort
    except ImportError:
        return path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = torch.randn(3, 3, loaded.image_size, loaded.image_size)
    got = torch.from_numpy(session.run(None, {"images": y.numpy()})[0])
    with torch.inference_mode():
        expected = loaded.model(y)
    err = (got - expected).abs().max().item()
    if err > atol:
        raise MeanGeoError(f"{path}: ONNX outputs differ from PyTorch by {err:.2e} (> {atol})")
    return path
