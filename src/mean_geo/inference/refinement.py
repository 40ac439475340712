"""Refinement of localized photos: each photo's top-N tiles verified against it
(:mod:`mean_geo.localization.refine`), with the tiles' features from the index where it stores
them, else computed once per tile and run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mean_geo.errors import MeanGeoError
from mean_geo.inference.localization import Match
from mean_geo.localization.geometry import TileGeometry
from mean_geo.localization.matching import MAX_SIDE, Features, Matcher, read_for_matching
from mean_geo.localization.refine import Candidate, RefinedPosition, RefineSettings, Verification, refine
from mean_geo.retrieval.index_store import GalleryIndex, TileFeatures


@dataclass
class RefinedPhoto:
    """One photo's refinement: its position and each verified candidate's check."""

    position: RefinedPosition
    verifications: list[Verification]
    photo: np.ndarray  # the image the matches are in (for drawing them)
    tile_images: dict[int, np.ndarray]  # rank -> the tile image verified (where read)


class TileStore:
    """Each tile's features and geometry, at the size they are matched: from the index where it
    stores this matcher's features, else computed on first use and kept for the run."""

    def __init__(self, index: GalleryIndex, matcher: Matcher, max_side: int = MAX_SIDE) -> None:
        self.index, self.matcher, self.max_side = index, matcher, max_side
        self.by_path = {t["path"]: i for i, t in enumerate(index.tiles)}
        stored = index.features
        self.stored: TileFeatures | None = (
            stored if stored is not None and stored.matcher == matcher.name and stored.max_side == max_side else None
        )
        self._cache: dict[int, tuple[Features, TileGeometry | None]] = {}

    def tile(self, match: Match) -> int:
        found = self.by_path.get(match.path)
        if found is None:
            raise MeanGeoError(f"{match.path}: the tile is not in the index")
        return found

    def get(self, i: int, need_image: bool = False) -> tuple[Features, TileGeometry | None, np.ndarray | None]:
        tile = self.index.tiles[i]
        geometry = tile.get("geometry")
        if i in self._cache and not need_image:
            return (*self._cache[i], None)
        image = None
        if self.stored is not None and not need_image:
            xy, desc, size = self.stored.of(i)
            features = Features(xy.numpy(), desc.numpy(), size)
            with_scale = _scale_of(tile["path"], size)
        else:
            image, sx, sy = read_for_matching(tile["path"], self.max_side)
            features = self.matcher.features(image)
            with_scale = (sx, sy)
        placed = TileGeometry.from_list(geometry, f"index tile {tile['id']}").resized(*with_scale) if geometry else None
        self._cache[i] = (features, placed)
        return features, placed, image


def _scale_of(path: str, size: tuple[int, int]) -> tuple[float, float]:
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
    return size[0] / w, size[1] / h


def tile_features(paths: list[Path], matcher: Matcher, max_side: int = MAX_SIDE) -> TileFeatures:
    """Every tile's features, as :class:`~mean_geo.retrieval.index_store.TileFeatures` to store."""
    import torch

    xy, desc, offsets, sizes = [], [], [0], []
    for path in paths:
        image, _, _ = read_for_matching(path, max_side)
        f = matcher.features(image)
        xy.append(f.xy)
        desc.append(f.descriptors)
        offsets.append(offsets[-1] + len(f.xy))
        sizes.append(f.size)
    return TileFeatures(
        matcher.name,
        max_side,
        torch.from_numpy(np.concatenate(xy).astype(np.float32)),
        torch.from_numpy(np.concatenate(desc)),
        torch.tensor(offsets, dtype=torch.int64),
        torch.tensor(sizes, dtype=torch.int64),
    )


def refine_photos(
    photos: list[Path],
    results: list[list[Match]],
    store: TileStore,
    settings: RefineSettings,
    keep_images: bool = False,
) -> list[RefinedPhoto]:
    """Refine each photo's position from its top ``settings.top_n`` matches.

    Args:
        photos: the photos, as localized.
        results: their matches (:func:`~mean_geo.inference.localization.localize`).
        store: the tiles' features and geometry.
        settings: thresholds and re-ranking.
        keep_images: keep the images (to draw the inlier matches).

    Returns:
        One :class:`RefinedPhoto` per photo.
    """
    out = []
    for photo, matches in zip(photos, results, strict=True):
        image, _, _ = read_for_matching(photo, store.max_side)
        features = store.matcher.features(image)
        candidates, images = [], {}
        for m in matches[: settings.top_n]:
            i = store.tile(m)
            tile_f, geometry, tile_image = store.get(i, need_image=keep_images)
            if tile_image is not None:
                images[m.rank] = tile_image
            centre = (m.lat, m.lon) if m.lat is not None and m.lon is not None else None
            candidates.append(Candidate(m.rank, m.id, m.score, tile_f, geometry, centre))
        position, verifications = refine(features, candidates, store.matcher, settings)
        out.append(RefinedPhoto(position, verifications, image if keep_images else np.zeros(0), images))
    return out


def draw_inliers(refined: RefinedPhoto, out: Path) -> Path | None:
    """The photo beside the tile the position came from (or the best tried), inlier matches drawn."""
    import cv2

    tried = [v for v in refined.verifications if v.inlier_pairs is not None and v.rank in refined.tile_images]
    if not tried:
        return None
    best = max(tried, key=lambda v: (v.accepted, v.inliers))
    pa, pb = best.inlier_pairs  # type: ignore[misc]
    ka = [cv2.KeyPoint(float(x), float(y), 3) for x, y in pa]
    kb = [cv2.KeyPoint(float(x), float(y), 3) for x, y in pb]
    pairs = [cv2.DMatch(i, i, 0) for i in range(len(ka))]
    colour = (0, 200, 0) if best.accepted else (0, 0, 230)
    canvas = cv2.drawMatches(  # type: ignore[call-overload]  # OpenCV's stubs reject a None singlePointColor
        refined.photo[..., ::-1].copy(),
        ka,
        refined.tile_images[best.rank][..., ::-1].copy(),
        kb,
        pairs,
        None,
        matchColor=colour,
        singlePointColor=None,
        flags=cv2.DrawMatchesFlags_NOT_DRAW_SINGLE_POINTS,
    )
    cv2.imwrite(str(out), canvas)
    return out
