"""A real browser for the pages we generate: Debian's chromium, headless.

``.ci/run`` installs it; locally a missing chromium skips the browser tests with the command that
installs it (under CI it fails, so the tests cannot silently stop running)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL = "apt-get install chromium (Debian's package; .ci/run installs it)"
#: anything a page could fetch from a server: a script, style, image or font with an address
REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"chromium is missing on CI: {INSTALL}")
        pytest.skip(f"no chromium here: {INSTALL}")
    return found


def rendered_dom(page: Path, timeout: float = 90) -> str:
    """The page's DOM after its scripts ran, as headless chromium sees it from the file."""
    out = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0 and "<body" in out.stdout, out.stderr[-2000:]
    return out.stdout


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1300, 1000), timeout: float = 90) -> Path:
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=timeout,
        check=True,
    )
    return png
