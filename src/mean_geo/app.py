"""``python -m mean_geo.app --index tiles.index --ckpt MODEL``: a local web app to localize photos.

Drop one or more drone photos: the app shows each one's top-k tiles, where it was taken on a map
drawn from the index's own tiles (no internet needed; ``--basemap URL`` puts an XYZ map of your
own underneath), the inlier matches when refinement is on, and offers the answers as GeoJSON and
KML.  Gradio, on 127.0.0.1 only, analytics off, requests bounded (photos per request, file size,
queue); its API answers ``gradio_client`` as the page does (``api_name="/localize"``).  Needs the
``app`` extra (gradio) and, for georeferenced tiles, ``geo``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from mean_geo.cli import ToolParser, report_user_errors, whole_number_at_least
from mean_geo.cli.plugins import add_plugins_option, import_plugins
from mean_geo.errors import MeanGeoError

TITLE = "mean_geo: where was this photo taken?"
#: the largest file a request may upload
MAX_FILE_SIZE = "25mb"
COLUMNS = ["photo", "lat", "lon", "placed by", "score", "inliers", "top-1 tile"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ToolParser(prog="python -m mean_geo.app", description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="a gallery index written by python -m mean_geo.index")
    p.add_argument("--ckpt", required=True, help="the model that built the index (.ckpt or export folder)")
    p.add_argument("--k", type=whole_number_at_least(1), default=5, help="tiles shown per photo (default 5)")
    p.add_argument("--port", type=whole_number_at_least(1), default=7860, help="port on 127.0.0.1 (default 7860)")
    p.add_argument("--refine", action="store_true", help="refinement on by default (a checkbox in the page)")
    p.add_argument("--matcher", choices=("sift", "orb"), default="sift", help="refinement's local features")
    p.add_argument("--basemap", default=None, help="an XYZ tile URL (https://…/{z}/{x}/{y}.png) under the map")
    p.add_argument("--example", default=None, help="a photo answered when the page opens (a demo, a screenshot)")
    add_plugins_option(p)
    return p.parse_args(argv)


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before the import reads it
    try:
        import gradio as gr
    except ImportError as exc:
        raise MeanGeoError(f"the app needs the app extra: pip install -e '.[app]' ({exc})") from None
    return gr


def build_app(localizer, refine_default: bool = False, example: str | None = None):
    """The Gradio Blocks of the app (not launched)."""
    gr = _gradio()
    work = Path(tempfile.mkdtemp(prefix="mean_geo_app_"))
    counter = iter(range(1_000_000))

    def answer(files, refine: bool):
        paths = [Path(f if isinstance(f, str) else f.name) for f in (files or [])]
        try:
            done = localizer.answer(paths, work / f"{next(counter):06d}", refine=bool(refine))
        except MeanGeoError as exc:
            raise gr.Error(str(exc)) from None
        rows = [
            [
                Path(a.photo).name,
                None if a.lat is None else round(a.lat, 7),
                None if a.lon is None else round(a.lon, 7),
                a.source,
                round(a.score, 4),
                a.inliers,
                a.tiles[0].tile if a.tiles else "",
            ]
            for a in done.answers
        ]
        map_png = str(done.map_png) if done.map_png else None
        return (
            rows,
            map_png,
            [str(p) for p in done.strips],
            [str(p) for p in done.inliers],
            [str(done.geojson), str(done.kml)],
        )

    # the example's answers are the outputs' first values: the page opens with them, no event needed
    shown = answer([example], refine_default) if example is not None else (None,) * 5
    with gr.Blocks(title="mean_geo", analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}\nDrop drone photos; the index's tiles answer. Nothing leaves this machine.")
        with gr.Row():
            with gr.Column(scale=1):
                photos = gr.File(file_count="multiple", file_types=["image"], label="drone photos")
                refine = gr.Checkbox(value=refine_default, label="refine: metres inside the tile (local features)")
                button = gr.Button("Localize", variant="primary")
                files = gr.File(value=shown[4], label="answers: GeoJSON, KML", file_count="multiple", interactive=False)
            with gr.Column(scale=2):
                table = gr.Dataframe(value=shown[0], headers=COLUMNS, label="where", interactive=False)
                where = gr.Image(value=shown[1], label="map (the index's tiles)", type="filepath", interactive=False)
        strips = gr.Gallery(value=shown[2], label="top-k tiles per photo", columns=1, height="auto")
        inliers = gr.Gallery(
            value=shown[3], label="inlier matches (refinement)", columns=1, object_fit="contain", height=320
        )
        outputs = [table, where, strips, inliers, files]
        button.click(answer, inputs=[photos, refine], outputs=outputs, api_name="localize", concurrency_limit=1)
    return demo


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_plugins(args.plugins, "--plugins")
    if args.example is not None and not Path(args.example).is_file():
        raise MeanGeoError(f"--example {args.example}: no such photo")
    _gradio()  # the missing extra, before the model is loaded
    from mean_geo.inference.service import Localizer

    localizer = Localizer(args.index, args.ckpt, k=args.k, matcher=args.matcher, basemap=args.basemap)
    demo = build_app(localizer, args.refine, args.example)
    demo.queue(max_size=8, default_concurrency_limit=1)
    demo.launch(
        server_name="127.0.0.1",
        server_port=args.port,
        share=False,
        inbrowser=False,
        max_file_size=MAX_FILE_SIZE,
        show_error=True,
        quiet=True,
        prevent_thread_lock=True,  # returns once the server listens: the line below is true when printed
    )
    print(f"mean_geo app on http://127.0.0.1:{args.port}/ (Ctrl+C to stop)", flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
