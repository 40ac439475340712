"""Parse University-1652 and SUES-200 folder trees into typed image records.

Both datasets ship as ``<split>/<view folder>/<location id>/<image>``; this module knows the folder
names, checks that what is on disk matches the release, and turns it into :class:`ImageRecord`s.
It never writes to the dataset.  Every problem is a :class:`DatasetLayoutError` naming the path and
what was expected, so the entry points can print one line instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mean_geo.errors import DatasetLayoutError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
SUES200_ALTITUDES = (150, 200, 250, 300)

# University-1652 test folders -> view; "street"/"google" folders are not used by MEAN.
U1652_TEST = {
    "query_drone": "drone",
    "gallery_satellite": "satellite",
    "query_satellite": "satellite",
    "gallery_drone": "drone",
}
SUES200_TEST = U1652_TEST

# Directions: name -> (query folder, gallery folder)
DIRECTIONS = {"d2s": ("query_drone", "gallery_satellite"), "s2d": ("query_satellite", "gallery_drone")}


@dataclass(frozen=True)
class ImageRecord:
    """One image on disk and what it shows."""

    path: Path
    location: str  # the folder name, e.g. "0839"
    view: str  # "drone" | "satellite"
    altitude: int | None = None  # metres (SUES-200 only)


# Magic numbers of the image formats we accept: catches empty, truncated-to-zero or mis-named files
# without decoding every image up front.
_MAGIC = {
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".bmp": (b"BM",),
    ".webp": (b"RIFF",),
    ".tif": (b"II*\x00", b"MM\x00*"),
    ".tiff": (b"II*\x00", b"MM\x00*"),
}


def check_image_file(path: Path) -> None:
    """Raise if ``path`` is empty or does not start like an image of its suffix claims."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise DatasetLayoutError(f"{path}: cannot be read ({exc.strerror})") from exc
    if not head:
        raise DatasetLayoutError(f"{path}: empty file, expected a {path.suffix} image")
    if not any(head.startswith(m) for m in _MAGIC[path.suffix.lower()]):
        raise DatasetLayoutError(f"{path}: not a {path.suffix} image (unexpected file header)")


def images_under(folder: Path) -> list[Path]:
    """Every image file below ``folder``, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        hint = " (the path exists but is a file)" if path.exists() else ""
        raise DatasetLayoutError(f"{path}: missing folder{hint}; expected {what}")
    return path


def scan_view_folder(folder: Path, view: str, altitude: int | None = None) -> list[ImageRecord]:
    """Records of ``folder/<location>/<image>``; every location folder must hold at least one image."""
    require_dir(folder, f"one sub-folder per location id holding {view} images")
    records: list[ImageRecord] = []
    locations = sorted(p for p in folder.iterdir() if p.is_dir())
    if not locations:
        raise DatasetLayoutError(f"{folder}: no location folders; expected <location id>/<image> inside")
    for loc in locations:
        images = sorted(p for p in loc.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetLayoutError(f"{loc}: no images (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
        for img in images:
            check_image_file(img)
            records.append(ImageRecord(img, loc.name, view, altitude))
    return records


@dataclass(frozen=True)
class TrainSplit:
    """Training images of one dataset (optionally one SUES-200 altitude or several)."""

    drone: list[ImageRecord]
    satellite: list[ImageRecord]

    @property
    def locations(self) -> list[str]:
        """Sorted location ids; the class label of a location is its index here."""
        return sorted({r.location for r in self.satellite})

    @property
    def label_of(self) -> dict[str, int]:
        return {loc: i for i, loc in enumerate(self.locations)}


def _check_same_locations(a: Iterable[ImageRecord], b: Iterable[ImageRecord], where_a: Path, where_b: Path):
    la, lb = {r.location for r in a}, {r.location for r in b}
    if la != lb:
        only_a, only_b = sorted(la - lb)[:3], sorted(lb - la)[:3]
        raise DatasetLayoutError(
            f"{where_a} and {where_b}: training folders do not match (only in the first: {only_a}, "
            f"only in the second: {only_b}); every location needs both drone and satellite images"
        )


def _resolve_root(root: str | Path, marker: str, dataset: str) -> Path:
    root = Path(root).expanduser()
    if root.is_file():
        raise DatasetLayoutError(f"{root}: is a file; expected the {dataset} folder")
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: dataset root does not exist; expected the {dataset} folder")
    if not (root / marker).is_dir():
        raise DatasetLayoutError(f"{root}: no '{marker}' folder; expected the {dataset} root that contains it")
    return root


def u1652_train(root: str | Path) -> TrainSplit:
    """``root/train/{drone,satellite}/<id>/``."""
    base = _resolve_root(root, "train", "University-1652") / "train"
    drone = scan_view_folder(base / "drone", "drone")
    sat = scan_view_folder(base / "satellite", "satellite")
    _check_same_locations(drone, sat, base / "drone", base / "satellite")
    return TrainSplit(drone, sat)


def u1652_test(root: str | Path, folder: str) -> list[ImageRecord]:
    """``root/test/<folder>/<id>/`` with ``folder`` one of query/gallery drone/satellite."""
    if folder not in U1652_TEST:
        raise DatasetLayoutError(f"unknown test folder '{folder}'; expected one of {sorted(U1652_TEST)}")
    base = _resolve_root(root, "test", "University-1652") / "test"
    return scan_view_folder(base / folder, U1652_TEST[folder])


def parse_altitudes(altitudes: int | str | Sequence[int] | None) -> tuple[int, ...]:
    """``150`` / ``"150"`` / ``[150, 200]`` / ``"all"`` / ``None`` (= all) → a tuple of altitudes."""
    return parse_heights_choice(altitudes, SUES200_ALTITUDES, "dataset.altitude")


def parse_heights_choice(
    value: int | str | Sequence[int] | None, allowed: tuple[int, ...], key: str
) -> tuple[int, ...]:
    """Some of ``allowed`` (metres), one or a list, ``"all"`` or None (= all), in the order given;
    anything else is one line naming ``key``."""
    if value is None or value == "all":
        return allowed
    try:
        chosen = (int(value),) if isinstance(value, (int, str)) else tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise DatasetLayoutError(f"{key}={value!r}: expected some of {list(allowed)} or 'all'") from None
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        shown = ", ".join(map(str, bad or chosen))
        raise DatasetLayoutError(f"{key}={shown}: expected some of {list(allowed)} or 'all'")
    return chosen


def sues200_train(root: str | Path, altitudes: int | Sequence[int] | None = None) -> TrainSplit:
    """``root/Training/<alt>/{drone,satellite}/<id>/`` for each altitude asked for."""
    base = _resolve_root(root, "Training", "SUES-200 (split with the official 120/80 list)") / "Training"
    drone: list[ImageRecord] = []
    sat: dict[str, ImageRecord] = {}
    for alt in parse_altitudes(altitudes):
        d = scan_view_folder(base / str(alt) / "drone", "drone", alt)
        s = scan_view_folder(base / str(alt) / "satellite", "satellite", alt)
        _check_same_locations(d, s, base / str(alt) / "drone", base / str(alt) / "satellite")
        drone += d
        # SUES-200 copies the same satellite image into every altitude: keep one per location
        for r in s:
            sat.setdefault(r.location, r)
    return TrainSplit(drone, sorted(sat.values(), key=lambda r: (r.location, str(r.path))))


def sues200_test(root: str | Path, folder: str, altitudes: int | Sequence[int] | None = None) -> list[ImageRecord]:
    """``root/Testing/<alt>/<folder>/<id>/``; satellite folders are de-duplicated across altitudes."""
    if folder not in SUES200_TEST:
        raise DatasetLayoutError(f"unknown test folder '{folder}'; expected one of {sorted(SUES200_TEST)}")
    base = _resolve_root(root, "Testing", "SUES-200 (split with the official 120/80 list)") / "Testing"
    out: list[ImageRecord] = []
    seen_sat: set[str] = set()
    for alt in parse_altitudes(altitudes):
        recs = scan_view_folder(base / str(alt) / folder, SUES200_TEST[folder], alt)
        if SUES200_TEST[folder] == "satellite":
            recs = [r for r in recs if r.location not in seen_sat]
            seen_sat.update(r.location for r in recs)
        out += recs
    return out


def list_images(items: list[str | Path], arg: str) -> list[Path]:
    """The image files named by ``items`` (files, or folders searched below), each checked to be
    an image; ``arg`` names the command-line argument in the errors."""
    photos: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            photos += images_under(p)
        elif p.is_file():
            photos.append(p)
        else:
            raise DatasetLayoutError(f"{arg}={p}: no such image or folder")
    if not photos:
        shown = ", ".join(str(i) for i in items)
        raise DatasetLayoutError(f"{arg}={shown}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for p in photos:
        check_image_file(p)
    return photos
