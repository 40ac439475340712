"""Numbers read from a dataset's files: real, finite, in range, or the reader names the record.

``json`` reads ``NaN`` and ``Infinity`` as floats and ``true`` as a number's subclass, and ``float()``
parses ``"nan"`` and ``"inf"``: a type check alone lets them through, and a NaN position then
silently leaves its photo out of the metres metrics.  Every reader of numbers goes through here.
"""

from __future__ import annotations

import math


def finite(value: object, low: float = -math.inf, high: float = math.inf) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool, not a string) in
    ``[low, high]``; None otherwise, for the reader to name the file and record."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and low <= number <= high else None


def parse_finite(text: str, low: float = -math.inf, high: float = math.inf) -> float | None:
    """A number written as text (a CSV field, a GPS token): as :func:`finite`, None when unparsable."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return finite(number, low, high)


def is_latlon(lat: float | None, lon: float | None) -> bool:
    """A finite latitude/longitude pair in degrees."""
    return finite(lat, -90, 90) is not None and finite(lon, -180, 180) is not None


def is_pixel_map(values: object) -> bool:
    """Six finite numbers ``A D B E C F`` (a world file's pixel -> ground map, in its order) that
    can be inverted: ``A·E - B·D ≠ 0``."""
    if not isinstance(values, (list, tuple)) or len(values) != 6:
        return False
    numbers = [finite(v) for v in values]
    if any(v is None for v in numbers):
        return False
    a, d, b, e = numbers[:4]
    return a * e - b * d != 0  # type: ignore[operator]
