"""Localize photos against one index with one model, loaded once: what the local web app serves.

:class:`Localizer` answers a request (a few photos) with everything the app shows: each photo's
answer (:mod:`mean_geo.inference.answers`), its top-k strip, the map of the answers drawn from the
index's own tiles, the inlier matches where refinement ran, and the GeoJSON and KML files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mean_geo.errors import MeanGeoError
from mean_geo.inference.answers import photo_answers
from mean_geo.inference.loading import load_model
from mean_geo.inference.localization import localize, write_strip
from mean_geo.inference.map_image import draw_answers_map
from mean_geo.inference.refinement import TileStore, draw_inliers, refine_photos
from mean_geo.localization.formats import PhotoAnswer, render
from mean_geo.localization.matching import build_matcher
from mean_geo.localization.refine import RefineSettings
from mean_geo.retrieval.index_store import read_index
from mean_geo.utils import atomic

#: photos one request may hold (the app refuses more in one line)
MAX_PHOTOS = 16


@dataclass
class Answered:
    """One request's results, as files the app shows or offers for download."""

    answers: list[PhotoAnswer]
    strips: list[Path]
    map_png: Path | None
    inliers: list[Path]
    geojson: Path
    kml: Path


class Localizer:
    """An index and its model, ready to answer.

    Args:
        index: the gallery index file.
        ckpt: the model that built it (checkpoint or export folder).
        k: tiles per photo.
        matcher: the local features refinement uses (``sift``, ``orb``).
        basemap: an XYZ tile URL drawn under the map, or None.
    """

    def __init__(self, index: str | Path, ckpt: str | Path, k: int = 5, matcher: str = "sift", basemap=None) -> None:
        self.index = read_index(index)
        self.model = load_model(ckpt, "--ckpt")
        self.k = k
        self.store = TileStore(self.index, build_matcher(matcher))
        self.basemap = basemap

    def answer(self, photos: list[Path], out: Path, refine: bool = False, top_n: int = 5) -> Answered:
        """Localize ``photos`` (refined when asked) and write what the app shows into ``out``.

        Raises:
            MeanGeoError: no photo, or more than :data:`MAX_PHOTOS`.
        """
        if not photos:
            raise MeanGeoError("no photo given: drop one or more drone photos")
        if len(photos) > MAX_PHOTOS:
            raise MeanGeoError(f"{len(photos)} photos: at most {MAX_PHOTOS} a request")
        out.mkdir(parents=True, exist_ok=True)
        results = localize(photos, self.index, self.model, k=max(self.k, top_n if refine else 0))
        refined = None
        if refine:
            settings = RefineSettings(top_n=top_n)
            refined = refine_photos(photos, results, self.store, settings, keep_images=True)
        answers = photo_answers(photos, results, self.index, self.k, [r.position for r in refined] if refined else None)
        strips, inliers = [], []
        for i, (photo, matches) in enumerate(zip(photos, results, strict=True)):
            strips.append(write_strip(photo, matches[: self.k], out / f"{i:02d}_{photo.stem}_top{self.k}.png"))
            if refined is not None:
                drawn = draw_inliers(refined[i], out / f"{i:02d}_{photo.stem}_inliers.png")
                if drawn is not None:
                    inliers.append(drawn)
        map_png = draw_answers_map(answers, self.index, out / "map.png", basemap=self.basemap)
        geojson, kml = out / "localized.geojson", out / "localized.kml"
        atomic.write_text(geojson, render("geojson", answers))
        atomic.write_text(kml, render("kml", answers))
        return Answered(answers, strips, map_png, inliers, geojson, kml)
