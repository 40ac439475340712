"""Convert an ``authors_release.py`` file with ``mean_geo.export --official`` and compare the
export's embedding with theirs.  ``python check_release.py dac|camp|sample4geo RELEASE.pth NEW_DIR``"""

import subprocess
import sys

import torch

import mean_geo

method, release, out = sys.argv[1:4]
subprocess.run(
    [sys.executable, "-m", "mean_geo.export", "--official", release, "--method", method, "--out", out], check=True
)
saved = torch.load(release + ".io")
loaded = mean_geo.load_model(out)
with torch.inference_mode():
    ours = loaded.model(saved["x"])
print(f"{method}: max |ours - theirs| = {float((ours - saved['emb']).abs().max()):.3g}")
