"""The error browser: what it shows of an evaluation, checked on a hand-made ranking, and the same
page opened in headless chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from mean_geo.reporting.browser import BrowserDirection, direction_page_data, map_svg, write_browser
from tests.helpers.browser import REMOTE, rendered_dom

# three places; queries 0-1 of place A, 2-3 of B, 4-5 of C; the gallery is one tile each
PLACES = ["A", "A", "B", "B", "C", "C"]
TOP = [[0, 1], [1, 0], [1, 2], [0, 1], [2, 0], [0, 2]]  # top-1 right for queries 0, 2, 4
SCORES = [[0.9, 0.5], [0.8, 0.7], [0.95, 0.1], [0.6, 0.55], [0.7, 0.2], [0.65, 0.6]]
GALLERY_LATLON = [(31.0, 121.0), (31.01, 121.0), (31.0, 121.01)]


def direction(tmp_path: Path, positions: bool = True) -> BrowserDirection:
    paths = []
    for i in range(9):
        path = tmp_path / f"img{i}.jpg"
        Image.new("RGB", (32, 32), (20 * i, 100, 200 - 20 * i)).save(path)
        paths.append(path)
    return BrowserDirection(
        name="d2s",
        query_paths=paths[:6],
        query_places=PLACES,
        query_altitudes=[150, 200] * 3,
        gallery_paths=paths[6:],
        gallery_places=["A", "B", "C"],
        top=TOP,
        scores=SCORES,
        query_latlon=[GALLERY_LATLON["ABC".index(p)] for p in PLACES] if positions else None,
        gallery_latlon=GALLERY_LATLON if positions else None,
    )


def page_data(page: Path) -> dict:
    text = page.read_text()
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
    assert found is not None
    return json.loads(found.group(1).replace("<\\/", "</"))


def test_marks_errors_per_place_and_the_map(tmp_path):
    thumbs: list[str] = []
    data = direction_page_data(direction(tmp_path), lambda p: thumbs.append(str(p)) or len(thumbs) - 1)
    assert [q["hit"] for q in data["queries"]] == [True, False, True, False, True, False]
    assert data["errors"] == 3 and data["note"] == "all 6 queries"
    assert data["places"] == [["A", 1, 2], ["B", 1, 2], ["C", 1, 2]]
    assert data["altitudes"] == [150, 200]
    # query 3 (place B) ranked tile A (score 0.6) then tile B (0.55)
    q3 = data["queries"][3]
    assert [(data["gallery"][g]["p"], s) for g, s in q3["top"]] == [("A", 0.6), ("B", 0.55)]
    svg = data["map"]
    assert svg.count('class="gallery-point"') == 3
    assert svg.count('class="link hit"') == 3 and svg.count('class="link miss"') == 3


def test_large_evaluations_show_a_sample_and_say_so(tmp_path):
    data = direction_page_data(direction(tmp_path), lambda p: 0, max_queries=4)
    assert len(data["queries"]) == 4
    assert data["note"].startswith("showing 4 of 6 queries: a random sample (seed 0)")
    assert data["errors"] == 3  # counted over every query, not the sample
    assert sum(e for _, e, _ in data["places"]) == 3


def test_no_map_without_positions(tmp_path):
    assert map_svg(direction(tmp_path, positions=False), range(6)) is None


def test_the_page_is_self_contained(tmp_path):
    page = write_browser(tmp_path / "browser.html", [direction(tmp_path)], title="t </script> x")
    text = page.read_text()
    assert REMOTE.search(text) is None
    data = page_data(page)
    assert all(t.startswith("data:image/jpeg;base64,") for t in data["thumbs"])
    assert len(data["thumbs"]) == 9  # each image once


def test_chromium_shows_queries_marks_and_map(tmp_path):
    page = write_browser(tmp_path / "browser.html", [direction(tmp_path)], title="smoke", subtitle="protocol x")
    dom = rendered_dom(page)
    assert dom.count('class="query-row hit"') == 3 and dom.count('class="query-row miss"') == 3
    # two matches per query: right ones are the top-1 of 0, 2, 4 and the second of 1, 3, 5
    assert dom.count('class="mark hit"') == 6 and dom.count('class="mark miss"') == 6
    assert dom.count('class="link miss"') == 3 and "<svg" in dom
    assert "page 1 of 1 (6 queries)" in dom and "3 of 6 queries wrong at top-1" in dom
    assert 'class="altitude-filter"' in dom


def test_refined_positions_are_marked_on_their_tile(tmp_path):
    """Query 0 refined at the centre of gallery item 0, query 2 at a corner of item 2; query 3 refined
    into item 2, which its top-2 does not show: no mark."""
    d = direction(tmp_path)
    d.refined = [(0, 0.5, 0.5), None, (2, 0.25, 0.75), (2, 0.5, 0.5), None, None]
    data = direction_page_data(d, _thumbs(), 50)
    marks = {q["i"]: q.get("r") for q in data["queries"]}
    gallery_row = {g["n"]: k for k, g in enumerate(data["gallery"])}
    assert marks[0] == [gallery_row["img6.jpg"], 0.5, 0.5] and marks[2] == [gallery_row["img8.jpg"], 0.25, 0.75]
    assert marks[3] is None and marks[1] is None
    dom = rendered_dom(write_browser(tmp_path / "b.html", [d]))
    assert dom.count('class="refined-dot"') == 2 and dom.count('class="refined-note"') == 2
    assert "left:40.0px;top:40.0px" in dom and "left:22.0px;top:58.0px" in dom  # 4 px border + share of 72 px


def _thumbs():
    from mean_geo.reporting.browser import _Thumbnails

    return _Thumbnails(32)


def test_the_map_lays_the_tiles_where_their_footprints_are(tmp_path):
    """Tiles with ground footprints lie under the positions at their place (north up); a tile
    without one is only a point."""
    d = direction(tmp_path)
    half = 0.002
    d.gallery_footprints = [
        [(lat + half, lon - half), (lat + half, lon + half), (lat - half, lon + half), (lat - half, lon - half)]
        for lat, lon in GALLERY_LATLON
    ]
    d.gallery_footprints[1] = None
    page = write_browser(tmp_path / "b.html", [d])
    svg = page_data(page)["directions"][0]["map"]
    boxes = [
        tuple(float(v) for v in m)
        for m in re.findall(
            r'<image class="tile" href="data:image/jpeg;base64,[^"]+" x="([\d.]+)" y="([\d.]+)" '
            r'width="([\d.]+)" height="([\d.]+)"',
            svg,
        )
    ]
    assert len(boxes) == 2  # tiles A and C; B has no footprint
    (xa, ya, wa, ha), (xc, yc, wc, hc) = boxes
    assert xc > xa and yc == ya  # C lies east of A, at the same latitude
    assert abs(wa - wc) < 0.2 and abs(ha - hc) < 0.2 and abs(wa / ha - 0.8563) < 0.01  # cos(31°): square on the ground
    assert svg.index('class="tile"') < svg.index('class="gallery-point"')  # under the points
    assert "b.html" in str(page) and direction_page_data(direction(tmp_path), lambda p: 0)["map"].count("<image") == 0
