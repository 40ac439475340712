"""The error browser: one self-contained HTML page per evaluation (``plots/browser.html``).

Per direction, each query with its top-k matches marked right or wrong with their scores; filters
(only wrong, by place, by altitude); the places with the most errors first; and, where positions
are known, a map (SVG, no tile server) joining each query's true position to its top-1 match.
Everything is inside the file (thumbnails as data URIs, no script or style from anywhere), so it
opens offline and can be mailed. Large evaluations show a fixed random sample of the queries and
say so on the page; the per-place error counts are always over every query.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mean_geo.utils import atomic

#: queries shown per direction before the page switches to a sample
MAX_QUERIES = 400
#: side of the embedded thumbnails (pixels)
THUMB_SIZE = 72
_TITLES = {"d2s": "drone → satellite", "s2d": "satellite → drone"}


@dataclass
class BrowserDirection:
    """One direction of an evaluation, aligned lists: queries, gallery and the ranking.

    ``top`` holds, per query, the gallery indices of its best matches (best first) and ``scores``
    their similarities; ``*_latlon`` are ``(lat, lon)`` or None where unknown.
    """

    name: str
    query_paths: Sequence[Path]
    query_places: Sequence[str]
    query_altitudes: Sequence[int | None]
    gallery_paths: Sequence[Path]
    gallery_places: Sequence[str]
    top: Sequence[Sequence[int]]
    scores: Sequence[Sequence[float]]
    query_latlon: Sequence[tuple[float, float] | None] | None = None
    gallery_latlon: Sequence[tuple[float, float] | None] | None = None
    #: per query, where refinement placed it: (gallery index, x, y as shares of the tile's width and
    #: height), or None (not refined); marked on that tile's thumbnail
    refined: Sequence[tuple[int, float, float] | None] | None = None
    #: per gallery item, its ground footprint (four (lat, lon) corners, north-up) or None: where
    #: known, the map shows the tiles themselves under the positions
    gallery_footprints: Sequence[Sequence[tuple[float, float]] | None] | None = None


class _Thumbnails:
    """Each image encoded once, however many rows show it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.uris: list[str] = []
        self._index: dict[Path, int] = {}

    def __call__(self, path: Path) -> int:
        path = Path(path)
        if path not in self._index:
            self._index[path] = len(self.uris)
            self.uris.append(self._encode(path))
        return self._index[path]

    def _encode(self, path: Path) -> str:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                image.thumbnail((self.size, self.size))
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=70)
        except (OSError, ValueError):  # a file gone since the evaluation: an empty cell, not a failure
            return ""
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _known(point: tuple[float, float] | None) -> bool:
    return point is not None and all(math.isfinite(v) for v in point)


def map_svg(
    direction: BrowserDirection,
    shown: Sequence[int],
    width: int = 640,
    height: int = 440,
    thumbs: _Thumbnails | None = None,
) -> str | None:
    """Gallery positions, the shown queries' true positions and a line from each to its top-1
    match (green right, red wrong), equirectangular around the centre; None without positions.
    Where the gallery has ground footprints (and ``thumbs`` is given), each tile's image lies under
    them at its place."""
    q_pos, g_pos = direction.query_latlon, direction.gallery_latlon
    if q_pos is None or g_pos is None:
        return None
    links = [(i, q_pos[i], g_pos[direction.top[i][0]]) for i in shown if direction.top[i]]
    links = [(i, q, g) for i, q, g in links if _known(q) and _known(g)]
    gallery = [(j, p) for j, p in enumerate(g_pos) if _known(p)]
    if not links:
        return None
    footprints = direction.gallery_footprints if thumbs is not None else None
    # the tiles the shown queries retrieved first and the tiles of their true places (bounded: each
    # is embedded once more in the map)
    truth_places = {direction.query_places[i] for i, _, _ in links}
    wanted = {direction.top[i][0] for i, _, _ in links}
    wanted |= {j for j, place in enumerate(direction.gallery_places) if place in truth_places}
    tiles = [
        (j, fp)
        for j, fp in enumerate(footprints or [])
        if j in wanted and fp is not None and len(fp) == 4 and all(_known(c) for c in fp)
    ]
    points = [p for _, p in gallery] + [q for _, q, _ in links] + [c for _, fp in tiles for c in fp]
    lat0 = sum(p[0] for p in points) / len(points)
    squash = math.cos(math.radians(lat0))
    xs = [p[1] * squash for p in points]
    ys = [p[0] for p in points]
    span_x, span_y = max(max(xs) - min(xs), 1e-9), max(max(ys) - min(ys), 1e-9)
    margin = 24
    scale = min(width / span_x, height / span_y)  # the same metres per pixel both ways
    width, height = max(round(span_x * scale), 80), max(round(span_y * scale), 80)

    def xy(p: tuple[float, float]) -> tuple[float, float]:
        x = margin + (p[1] * squash - min(xs)) * scale
        y = margin + (max(ys) - p[0]) * scale
        return round(x, 1), round(y, 1)

    parts = [
        f'<svg class="map" viewBox="0 0 {width + 2 * margin} {height + 2 * margin}" width="{width + 2 * margin}" '
        f'height="{height + 2 * margin}" role="img" aria-label="query and gallery positions">'
    ]
    for j, fp in tiles:  # the tiles themselves, under everything (north-up: their footprint's box)
        corners = [xy(c) for c in fp]
        x0, y0 = min(c[0] for c in corners), min(c[1] for c in corners)
        x1, y1 = max(c[0] for c in corners), max(c[1] for c in corners)
        uri = thumbs.uris[thumbs(direction.gallery_paths[j])] if thumbs is not None else ""
        if uri:
            parts.append(
                f'<image class="tile" href="{uri}" x="{x0}" y="{y0}" width="{round(x1 - x0, 1)}" '
                f'height="{round(y1 - y0, 1)}" preserveAspectRatio="none" opacity="0.85"/>'
            )
    for j, p in gallery:
        x, y = xy(p)
        label = html.escape(f"gallery {direction.gallery_places[j]}")
        parts.append(f'<circle class="gallery-point" cx="{x}" cy="{y}" r="3"><title>{label}</title></circle>')
    for i, q, g in links:
        hit = direction.gallery_places[direction.top[i][0]] == direction.query_places[i]
        (x1, y1), (x2, y2) = xy(q), xy(g)
        label = html.escape(f"{Path(direction.query_paths[i]).name} ({direction.query_places[i]})")
        mark = "hit" if hit else "miss"
        parts.append(
            f'<line class="link {mark}" data-query="{i}" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"><title>{label}'
            f" → {html.escape(direction.gallery_places[direction.top[i][0]])}</title></line>"
        )
        parts.append(f'<circle class="query-point {mark}" cx="{x1}" cy="{y1}" r="2.5"><title>{label}</title></circle>')
    metres_per_unit = 111_195.0 / scale  # one degree of latitude in metres, over pixels per degree
    bar_m = _round_length(metres_per_unit * width / 5)
    bar_px = bar_m / metres_per_unit
    y = height + 2 * margin - 6
    parts.append(f'<line class="scale" x1="{margin}" y1="{y}" x2="{margin + bar_px:.1f}" y2="{y}"/>')
    parts.append(f'<text x="{margin}" y="{y - 4}">{bar_m:,.0f} m</text></svg>')
    return "".join(parts)


def _round_length(metres: float) -> float:
    """1, 2 or 5 times a power of ten, at most ``metres``."""
    power = 10 ** math.floor(math.log10(max(metres, 1e-9)))
    return max(m * power for m in (1, 2, 5) if m * power <= metres) if metres >= power else power


def direction_page_data(
    direction: BrowserDirection, thumbs: _Thumbnails, max_queries: int = MAX_QUERIES, seed: int = 0
) -> dict:
    """What the page's script shows of one direction (the thumbnails go into ``thumbs``)."""
    total = len(direction.query_paths)
    hits = [
        bool(row) and direction.gallery_places[row[0]] == direction.query_places[i]
        for i, row in enumerate(direction.top)
    ]
    if total > max_queries:  # a fixed sample, in dataset order, so two pages of the same run agree
        shown = sorted(random.Random(seed).sample(range(total), max_queries))
        note = (
            f"showing {max_queries:,} of {total:,} queries: a random sample (seed {seed}); "
            f"the error counts per place are over all {total:,}"
        )
    else:
        shown = list(range(total))
        note = f"all {total:,} queries"
    errors = Counter(p for p, hit in zip(direction.query_places, hits, strict=True) if not hit)
    counts = Counter(direction.query_places)
    places = sorted(counts, key=lambda p: (-errors[p], p))
    gallery_rows: dict[int, int] = {}
    gallery: list[dict] = []
    queries = []
    for i in shown:
        top = []
        for j, score in zip(direction.top[i], direction.scores[i], strict=True):
            if j not in gallery_rows:
                gallery_rows[j] = len(gallery)
                gallery.append(
                    {
                        "n": Path(direction.gallery_paths[j]).name,
                        "p": direction.gallery_places[j],
                        "t": thumbs(direction.gallery_paths[j]),
                    }
                )
            top.append([gallery_rows[j], round(float(score), 4)])
        queries.append(
            {
                "i": i,
                "n": Path(direction.query_paths[i]).name,
                "p": direction.query_places[i],
                "a": direction.query_altitudes[i],
                "t": thumbs(direction.query_paths[i]),
                "top": top,
                "hit": hits[i],
            }
        )
        mark = direction.refined[i] if direction.refined else None
        if mark is not None and mark[0] in direction.top[i]:  # marked where this query shows it
            queries[-1]["r"] = [gallery_rows[mark[0]], float(mark[1]), float(mark[2])]
    return {
        "name": direction.name,
        "title": _TITLES.get(direction.name, direction.name),
        "total": total,
        "errors": total - sum(hits),
        "note": note,
        "queries": queries,
        "gallery": gallery,
        "places": [[p, errors[p], counts[p]] for p in places],
        "altitudes": sorted({a for a in direction.query_altitudes if a is not None}),
        "map": map_svg(direction, shown, thumbs=thumbs),
    }


def write_browser(
    path: Path,
    directions: Sequence[BrowserDirection],
    title: str = "mean_geo evaluation",
    subtitle: str = "",
    max_queries: int = MAX_QUERIES,
    thumb_size: int = THUMB_SIZE,
) -> Path:
    """Write the page (atomically: a reader never sees half of it).

    Args:
        path: the HTML file, e.g. ``<run>/plots/browser.html``.
        directions: the evaluated directions.
        title: the page's heading.
        subtitle: a line under it (the run and its protocol).
        max_queries: queries shown per direction before a random sample of this many is shown.
        thumb_size: side of the thumbnails (pixels).

    Returns:
        ``path``.
    """
    thumbs = _Thumbnails(thumb_size)
    data = {
        "title": title,
        "subtitle": subtitle,
        "directions": [direction_page_data(d, thumbs, max_queries) for d in directions],
        "thumbs": thumbs.uris,
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # no early </script>
    page = _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)
    atomic.write_text(Path(path), page)
    return Path(path)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0} h2{margin-top:1.6em;border-bottom:1px solid #ccc}
.sub,.note{color:#555} .filters{margin:.6em 0;display:flex;gap:1em;align-items:center;flex-wrap:wrap}
.query-row{display:flex;align-items:flex-start;gap:6px;padding:4px 0;border-bottom:1px solid #eee}
.cell{width:84px;text-align:center;font-size:11px} .thumb{position:relative;display:inline-block}
.refined-dot{position:absolute;width:9px;height:9px;margin:-5px 0 0 -5px;border-radius:50%;background:#e0218a;
border:2px solid #fff;box-shadow:0 0 2px #000}
.cell img{width:72px;height:72px;object-fit:cover;border:4px solid #888}
.cell.hit img{border-color:#1eaa3c} .cell.miss img{border-color:#d22828} .cell.query img{border-color:#5a5a5a}
.mark{font-weight:bold} .mark.hit{color:#1eaa3c} .mark.miss{color:#d22828}
.places{border-collapse:collapse;font-size:12px} .places td,.places th{padding:1px 8px;text-align:right}
.places tr{cursor:pointer} .places tr:hover{background:#eef}
.columns{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}
.map{border:1px solid #ccc;background:#fafafa} .gallery-point{fill:#999} .query-point{fill:#2b6cd4}
.link{stroke-width:1.2} .link.hit{stroke:#1eaa3c} .link.miss{stroke:#d22828} .scale{stroke:#222;stroke-width:2}
.map text{font-size:11px} .pager button{margin:0 4px}
</style></head><body>
<h1 id="title"></h1><div class="sub" id="subtitle"></div><div id="directions"></div>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const PER_PAGE = 25;
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) { if (k === "text") e.textContent = v; else e.setAttribute(k, v); }
  for (const kid of kids) e.append(kid);
  return e;
};
function cell(kind, thumb, lines) {
  const c = el("div", {class: "cell " + kind});
  if (DATA.thumbs[thumb]) c.append(el("div", {class: "thumb"}, el("img", {src: DATA.thumbs[thumb], alt: lines[0]})));
  for (const line of lines) c.append(el("div", {text: line}));
  return c;
}
function section(d) {
  const root = el("section", {class: "direction", id: "dir-" + d.name});
  root.append(el("h2", {text: d.title + " (" + d.name + ")"}));
  const shownErrors = d.queries.filter(q => !q.hit).length;
  root.append(el("div", {class: "note", text: d.note + "; " + d.errors + " of " + d.total +
    " queries wrong at top-1 (" + shownErrors + " of those shown). Single-image ranking."}));
  const state = {onlyWrong: false, place: "", altitude: "", page: 0};
  const only = el("input", {type: "checkbox", class: "only-wrong"});
  const place = el("select", {class: "place-filter"}, el("option", {value: "", text: "all places"}));
  for (const [p, e, n] of d.places) place.append(el("option", {value: p, text: p + " (" + e + "/" + n + " wrong)"}));
  const filters = el("div", {class: "filters"}, el("label", {}, only, " only wrong"), place);
  let altitude = null;
  if (d.altitudes.length > 1) {
    altitude = el("select", {class: "altitude-filter"}, el("option", {value: "", text: "all altitudes"}));
    for (const a of d.altitudes) altitude.append(el("option", {value: String(a), text: a + " m"}));
    filters.append(altitude);
  }
  const pager = el("span", {class: "pager"});
  filters.append(pager);
  root.append(filters);
  const body = el("div", {class: "columns"});
  const list = el("div", {class: "queries"});
  const side = el("div", {});
  const th = text => el("th", {text}), td = text => el("td", {text: String(text)});
  const table = el("table", {class: "places"}, el("tr", {}, th("place"), th("wrong"), th("queries")));
  for (const [p, e, n] of d.places.slice(0, 15)) {
    const row = el("tr", {"data-place": p}, td(p), td(e), td(n));
    row.addEventListener("click", () => { place.value = p; state.place = p; state.page = 0; draw(); });
    table.append(row);
  }
  if (d.map) {
    const holder = el("div", {class: "map-holder"});
    holder.innerHTML = d.map;
    side.append(el("h3", {text: "map: true position → top-1 match"}), holder);
  }
  side.append(el("h3", {text: "places with the most errors (click to filter)"}), table);
  body.append(side, list);
  root.append(body);
  function draw() {
    const rows = d.queries.filter(q => (!state.onlyWrong || !q.hit) && (!state.place || q.p === state.place) &&
      (!state.altitude || String(q.a) === state.altitude));
    const pages = Math.max(1, Math.ceil(rows.length / PER_PAGE));
    state.page = Math.min(state.page, pages - 1);
    list.replaceChildren();
    for (const q of rows.slice(state.page * PER_PAGE, (state.page + 1) * PER_PAGE)) {
      const row = el("div", {class: "query-row " + (q.hit ? "hit" : "miss"), "data-place": q.p});
      row.append(cell("query", q.t, [q.n, "place " + q.p + (q.a ? " · " + q.a + " m" : "")]));
      q.top.forEach(([g, score], rank) => {
        const item = d.gallery[g];
        const right = item.p === q.p;
        const c = cell(right ? "hit" : "miss", item.t, ["#" + (rank + 1) + " " + item.p, score.toFixed(3)]);
        c.prepend(el("div", {class: "mark " + (right ? "hit" : "miss"), text: right ? "✓" : "✗"}));
        if (q.r && q.r[0] === g) {  // the refined position, on the tile it was placed in (4 px border)
          const dot = el("div", {class: "refined-dot", title: "refined position",
            style: "left:" + (4 + 72 * q.r[1]).toFixed(1) + "px;top:" + (4 + 72 * q.r[2]).toFixed(1) + "px"});
          c.querySelector(".thumb").append(dot);
          c.append(el("div", {class: "refined-note", text: "refined here"}));
        }
        row.append(c);
      });
      list.append(row);
    }
    if (!rows.length) list.append(el("div", {class: "empty", text: "no query matches the filters"}));
    const prev = el("button", {text: "‹"}), next = el("button", {text: "›"});
    prev.disabled = state.page === 0; next.disabled = state.page >= pages - 1;
    prev.addEventListener("click", () => { state.page -= 1; draw(); });
    next.addEventListener("click", () => { state.page += 1; draw(); });
    pager.replaceChildren(prev, el("span", {class: "page", text: "page " + (state.page + 1) + " of " + pages +
      " (" + rows.length + " queries)"}), next);
  }
  only.addEventListener("change", () => { state.onlyWrong = only.checked; state.page = 0; draw(); });
  place.addEventListener("change", () => { state.place = place.value; state.page = 0; draw(); });
  if (altitude) altitude.addEventListener("change", () => { state.altitude = altitude.value; state.page = 0; draw(); });
  draw();
  return root;
}
document.getElementById("title").textContent = DATA.title;
document.getElementById("subtitle").textContent = DATA.subtitle;
for (const d of DATA.directions) document.getElementById("directions").append(section(d));
</script></body></html>
"""
