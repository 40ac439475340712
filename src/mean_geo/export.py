"""``python -m mean_geo.export ckpt=… out=… [onnx=true]``: shareable weights of a trained model.

Writes ``model.safetensors`` + ``config.json`` + ``MODEL_CARD.md`` (see :mod:`mean_geo.hub`) and,
with ``onnx=true``, ``model.onnx`` of the embedding network, checked against PyTorch outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mean_geo.errors import MeanGeoError
from mean_geo.hub import export, load_model


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


def run_metrics_near(ckpt: Path) -> dict:
    """The test metrics of the run that wrote the checkpoint, when its metrics.json is there."""
    for candidate in (ckpt.parent.parent / "metrics.json", ckpt.parent / "metrics.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text()).get("metrics", {})
    return {}


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    try:
        bad = [a for a in raw if "=" not in a or a.split("=", 1)[0] not in ("ckpt", "out", "onnx")]
        if bad:
            raise MeanGeoError(f"{bad[0]}: unknown argument; expected ckpt=PATH.ckpt out=NEW_FOLDER [onnx=true]")
        args = dict(a.split("=", 1) for a in raw)
        if args.get("onnx", "false").lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise MeanGeoError(f"onnx={args['onnx']}: expected true or false")
        if "ckpt" not in args or "out" not in args:
            raise MeanGeoError("usage: python -m mean_geo.export ckpt=PATH.ckpt out=NEW_FOLDER [onnx=true]")
        ckpt = Path(args["ckpt"]).expanduser()
        folder = export(ckpt, args["out"], metrics=run_metrics_near(ckpt))
        if args.get("onnx", "false").lower() in ("1", "true", "yes"):
            export_onnx(folder)
    except MeanGeoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
