"""``python -m mean_geo.export --ckpt PATH --out NEW_FOLDER [--onnx] [--push-to-hub OWNER/NAME]``
``python -m mean_geo.export --official THEIR.pth --method mean|sample4geo|dac|camp --out NEW_FOLDER``

Shareable weights of a trained model: ``model.safetensors`` + ``config.json`` + ``README.md``
(the model card, with the Hugging Face Hub's metadata), see :mod:`mean_geo.inference.export`;
``--onnx`` adds ``model.onnx``, checked against PyTorch; ``--push-to-hub`` uploads the folder
(``huggingface-cli login`` first).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mean_geo.cli import ToolParser, report_user_errors
from mean_geo.cli.plugins import add_plugins_option, import_plugins
from mean_geo.errors import MeanGeoError
from mean_geo.inference.export import export, export_official, export_onnx, run_metrics_near
from mean_geo.models.official import OFFICIAL_LAYOUTS


def parser() -> ToolParser:
    p = ToolParser(prog="python -m mean_geo.export", description=__doc__.split("\n\n")[1])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a training checkpoint (.ckpt) or an export folder")
    source.add_argument("--official", metavar="PTH", help="the authors' released weights (.pth) of --method")
    p.add_argument("--method", choices=list(OFFICIAL_LAYOUTS), help="with --official: whose weights")
    p.add_argument("--backbone", default=None, help="with --official: a timm backbone other than the method's")
    p.add_argument("--image-size", type=int, default=384, help="with --official: the input side (384)")
    p.add_argument("--out", required=True, help="the folder to create (must not exist, or be empty)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (needs: pip install onnx)")
    p.add_argument("--push-to-hub", metavar="OWNER/NAME", default=None, help="upload the export to the Hub")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: a private repository")
    add_plugins_option(p)
    return p


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import_plugins(args.plugins, "--plugins")
    if args.official:
        if not args.method:
            raise MeanGeoError(f"--official needs --method {'|'.join(OFFICIAL_LAYOUTS)} (whose release it is)")
        folder, report = export_official(args.official, args.method, args.out, args.backbone, args.image_size)
        print(f"{args.official}: {report.summary()}")
    else:
        ckpt = Path(args.ckpt).expanduser()
        folder = export(ckpt, args.out, metrics=run_metrics_near(ckpt))
    if args.onnx:
        export_onnx(folder)
    print(f"exported to {folder}")
    if args.push_to_hub:
        from mean_geo.inference.loading import load_model

        try:
            url = load_model(folder).push_to_hub(args.push_to_hub, private=args.private)
        except Exception as exc:  # noqa: BLE001 - no login, no network, no rights: one line
            raise MeanGeoError(
                f"--push-to-hub {args.push_to_hub}: upload failed ({type(exc).__name__}: {exc})"
            ) from None
        print(f"pushed to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
