"""``export(ckpt, out)``: the shareable export folder of a checkpoint (the format is
:mod:`mean_geo.inference.export_format`'s), optionally with ``model.onnx``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mean_geo.errors import CheckpointError, MeanGeoError
from mean_geo.inference.export_format import write_export
from mean_geo.inference.loading import load_model
from mean_geo.utils.atomic import atomic_path


def export(ckpt: str | Path, out_dir: str | Path, metrics: dict | None = None) -> Path:
    """Write the export of a checkpoint (or of another export) into a new folder ``out_dir``."""
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"out={out}: exists and is not an empty folder; choose a new folder")
    loaded = load_model(ckpt, "ckpt")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()  # empty (checked above); the finished folder takes its place
    with atomic_path(out) as folder:  # a full disk leaves no half export under the final name
        folder.mkdir()
        write_export(folder, loaded, source=Path(ckpt).name, metrics=metrics)
    return out


def run_metrics_near(ckpt: Path) -> dict:
    """The test metrics of the run that wrote the checkpoint, when its metrics.json is there."""
    for candidate in (ckpt.parent.parent / "metrics.json", ckpt.parent / "metrics.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text()).get("metrics", {})
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
