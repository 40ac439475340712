"""docs/img/app.png: the local app answering one view of a synthetic orthophoto, in headless chromium.

    python docs/scripts/app_screenshot.py --ckpt logs/.../checkpoints/last.ckpt [--out docs/img/app.png]

Writes a UTM 32N orthophoto (``synth --layout orthophoto``), cuts it into 128 m tiles, indexes them
with the given model (SIFT features stored), starts ``python -m mean_geo.app --refine --example
<a view>`` on a free port and screenshots the page once the example is answered.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def run(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, *args], cwd=cwd, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", default="docs/img/app.png")
    args = p.parse_args()
    ckpt, out = Path(args.ckpt).resolve(), Path(args.out).resolve()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs chromium (apt install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run("-m", "mean_geo.synth", "--layout", "orthophoto", "--out", "ortho", "--crs", "EPSG:32632", cwd=work)
        run("-m", "mean_geo.tile", "ortho/map.tif", "--out", "tiles", "--tile-m", "128", "--quiet", cwd=work)
        run("-m", "mean_geo.index", "gallery_dir=tiles", f"ckpt={ckpt}", "out=tiles.index", "features=sift", cwd=work)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        example = work / "ortho" / "views" / "view_00.png"
        app = subprocess.Popen(
            [sys.executable, "-m", "mean_geo.app", "--index", "tiles.index", "--ckpt", str(ckpt)]
            + ["--port", str(port), "--refine", "--example", str(example)],
            cwd=work,
        )
        try:
            url = f"http://127.0.0.1:{port}/"
            for _ in range(120):
                try:
                    urllib.request.urlopen(url, timeout=5).close()
                    break
                except OSError:
                    time.sleep(1)
            common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
            shot = [*common, "--virtual-time-budget=40000", "--window-size=1280,1180", f"--screenshot={out}", url]
            subprocess.run(shot, check=True, capture_output=True, timeout=300)
        finally:
            app.terminate()
            app.wait(timeout=30)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
