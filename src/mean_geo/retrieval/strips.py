"""Pictures of retrieval results: one row per query, the query first, then its matches (Pillow only,
so localizing a photo needs no plotting library)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from mean_geo.data.datasets import load_rgb

QUERY = (90, 90, 90)
HIT = (30, 170, 60)
MISS = (210, 40, 40)


@dataclass(frozen=True)
class Cell:
    path: Path
    label: str = ""
    frame: tuple[int, int, int] | None = None  # a coloured border (e.g. green = right place)


def write_strips(rows: Sequence[Sequence[Cell]], out: Path, size: int = 96) -> None:
    """One row per query: ``[query cell, match cells…]`` as a PNG; a caption line under each
    row when any cell has a label."""
    pad = max(2, size // 24)
    cell = size + 2 * pad
    caption = 16 if any(c.label for row in rows for c in row) else 0
    width = cell * max(len(r) for r in rows) + pad
    sheet = Image.new("RGB", (width, (cell + caption) * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        y = r * (cell + caption)
        for c, item in enumerate(row):
            x = c * cell + (pad if c else 0)
            thumb = load_rgb(item.path).resize((size, size))
            sheet.paste(ImageOps.expand(thumb, border=pad, fill=item.frame or "white"), (x, y))
            if item.label:
                draw.text((x + 2, y + cell + 2), item.label, fill="black")
    sheet.save(out)
