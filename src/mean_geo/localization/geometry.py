"""Where a tile's pixels lie on the ground: an affine map from pixel centres to longitude/latitude.

The six numbers are a world file's, in its order ``A D B E C F``:
``lon = A·col + B·row + C`` and ``lat = D·col + E·row + F``, with ``(col, row)`` a pixel's centre
(whole numbers at pixel centres, as OpenCV's keypoints).  North-up tiles have ``B = D = 0`` and
``E < 0``.  Refinement maps a photo's centre into a tile through a homography, then to the ground
through this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass

from mean_geo.data.numbers import is_pixel_map
from mean_geo.errors import MeanGeoError
from mean_geo.utils.earth import EARTH_RADIUS_M


@dataclass(frozen=True)
class TileGeometry:
    """A tile's pixel → ground map (world-file order)."""

    a: float
    d: float
    b: float
    e: float
    c: float
    f: float

    def to_latlon(self, col: float, row: float) -> tuple[float, float]:
        """The ground position of a pixel position (centres at whole numbers)."""
        return self.d * col + self.e * row + self.f, self.a * col + self.b * row + self.c

    def as_list(self) -> list[float]:
        return list(astuple(self))

    @classmethod
    def from_list(cls, values: Sequence[object], where: str) -> TileGeometry:
        """Checked: six finite numbers, an invertible map.

        Raises:
            MeanGeoError: one line naming ``where``.
        """
        if not is_pixel_map(values):
            raise MeanGeoError(f"{where}: a tile geometry is six finite numbers (A D B E C F) with A·E - B·D ≠ 0")
        return cls(*(float(v) for v in values))  # type: ignore[arg-type]

    @classmethod
    def north_up(cls, centre: tuple[float, float], metres_per_px: float, width: int, height: int) -> TileGeometry:
        """A north-up tile of square pixels ``metres_per_px`` a side centred on ``centre`` (lat, lon)."""
        lat, lon = centre
        dlat = math.degrees(metres_per_px / EARTH_RADIUS_M)
        dlon = dlat / math.cos(math.radians(lat))
        return cls(dlon, 0.0, 0.0, -dlat, lon - dlon * (width - 1) / 2, lat + dlat * (height - 1) / 2)

    def resized(self, sx: float, sy: float) -> TileGeometry:
        """The map of the same tile resized by ``sx`` × ``sy`` (a pixel centre ``c'`` of the
        resized tile is ``(c' + 0.5) / s - 0.5`` of the original)."""
        col0, row0 = 0.5 / sx - 0.5, 0.5 / sy - 0.5
        a, b, d, e = self.a / sx, self.b / sy, self.d / sx, self.e / sy
        return TileGeometry(a, d, b, e, self.a * col0 + self.b * row0 + self.c, self.d * col0 + self.e * row0 + self.f)


def fit_geometry(
    points_px: Sequence[tuple[float, float]], points_latlon: Sequence[tuple[float, float]]
) -> TileGeometry:
    """The affine map through three pixel ↔ lat/lon pairs (a slippy-map tile's corners: Web
    Mercator is not affine in latitude, but over one tile at zoom ≥ 10 the error is below 0.1 %
    of its side)."""
    import numpy as np

    rows = np.array([[x, y, 1.0] for x, y in points_px], dtype=np.float64)
    lats = np.array([p[0] for p in points_latlon], dtype=np.float64)
    lons = np.array([p[1] for p in points_latlon], dtype=np.float64)
    a, b, c = np.linalg.solve(rows, lons)
    d, e, f = np.linalg.solve(rows, lats)
    return TileGeometry(float(a), float(d), float(b), float(e), float(c), float(f))
