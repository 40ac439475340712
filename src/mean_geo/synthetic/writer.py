"""Write a synthetic world in the exact on-disk layout of University-1652, SUES-200, DenseUAV or
GTA-UAV (:mod:`mean_geo.synthetic.gta_map`).

The world is rendered into a temporary sibling folder and renamed into place only when complete,
so an interrupted run never leaves a half-written world that looks finished, and an existing
folder is never written into.  ``world.json`` at the root records the parameters; asking again for
the same world is a no-op (that is how ``make train`` generates it "if absent").
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mean_geo.data import denseuav
from mean_geo.data.coordinates import Coords, write_place_coordinates
from mean_geo.data.layouts import SUES200_ALTITUDES
from mean_geo.errors import MeanGeoError
from mean_geo.synthetic.gta_map import write_gta_world
from mean_geo.synthetic.render import DroneCamera, cast_shadows, render_drone, render_satellite
from mean_geo.synthetic.world import Place, generate_place
from mean_geo.utils.atomic import atomic_path, remove_stale_partials, unique_partial_dir

LAYOUTS = ("university1652", "sues200", "denseuav", "gta_uav")
SATELLITE_SIDE_M = 200.0  # default side of the north-up satellite tile
U1652_ALTITUDE_RANGE = (256.0, 121.5)  # the real drone spirals down from 256 m to 121.5 m
U1652_DISTRACTORS_PER_TEST_PLACE = 250 / 701  # real: 701 test buildings, 250 gallery-only distractors
MAX_LOCATION_ID = 9999  # ids are written as 4 digits, 0001-9999
DENSEUAV_TEST_SHARE = 777 / 3033  # real: 2,256 training places, 777 test places
DENSEUAV_VFOV_DEG = 60.0  # nadir photos: at 80 m they see ~92 m of ground, the H80 tile's side


@dataclass(frozen=True)
class WorldSpec:
    """Everything that determines the bytes of a synthetic world."""

    layout: str
    locations: int = 40
    seed: int = 0
    image_size: int = 256
    drone_per_location: int = 10
    altitudes: tuple[int, ...] = field(default=SUES200_ALTITUDES)
    satellite_side_m: float = SATELLITE_SIDE_M
    #: held-out places; None keeps the real dataset's proportion (SUES-200: 40 % of ``locations``;
    #: University-1652: as many as training buildings).  Many training places with a fixed test
    #: set is what lets a randomly initialised model generalise (docs/experiments.md).
    test_locations: int | None = None
    #: drone photos are ray-traced at ``supersample`` x the image size and box-filtered down: small
    #: worlds (the demo's 64 px) stay free of aliasing and need no resizing when loaded
    supersample: int = 1

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise MeanGeoError(f"layout '{self.layout}': expected one of {list(LAYOUTS)}")
        if self.locations < 2:
            raise MeanGeoError(f"locations={self.locations}: need at least 2")
        if not 50.0 <= self.satellite_side_m <= 600.0:  # a place is generated 600 m across
            raise MeanGeoError(f"satellite_side_m={self.satellite_side_m}: expected 50-600 metres")
        if not 1 <= self.supersample <= 4:
            raise MeanGeoError(f"supersample={self.supersample}: expected 1-4")
        if self.image_size < 32 or self.drone_per_location < 1:
            raise MeanGeoError("image_size must be >= 32 and drone_per_location >= 1")
        if self.layout == "gta_uav" and self.test_locations is not None:
            raise MeanGeoError("test_locations: GTA-UAV's splits are by area (its JSON files), not a count")
        if self.test_locations is not None:
            # SUES-200: some places must train; University-1652: test places and their
            # distractors come after the training ids, and the ids run out at MAX_LOCATION_ID
            if self.layout in ("sues200", "denseuav"):
                most = self.locations - 1
            else:
                most = int((MAX_LOCATION_ID - self.locations) / (1 + U1652_DISTRACTORS_PER_TEST_PLACE))
            if not 1 <= self.test_locations <= most:
                raise MeanGeoError(
                    f"test_locations={self.test_locations}: expected 1-{most} for {self.locations} locations"
                )
        allowed = denseuav.HEIGHTS if self.layout == "denseuav" else SUES200_ALTITUDES
        bad = [a for a in self.altitudes if a not in allowed]
        if self.layout != "gta_uav" and (bad or not self.altitudes):
            raise MeanGeoError(f"altitudes {bad or []}: expected some of {list(allowed)} for the {self.layout} layout")

    def to_json(self) -> dict:
        d = asdict(self)
        d["altitudes"] = list(self.altitudes)
        return d


def split_ids(spec: WorldSpec) -> dict[str, list[str]]:
    """Location ids per role, scaled from the real datasets' proportions unless
    ``spec.test_locations`` fixes the held-out count."""
    n = spec.locations
    ids = [f"{i:04d}" for i in range(1, MAX_LOCATION_ID + 1)]
    if spec.layout == "university1652":
        # real: 701 training buildings, 701 other test buildings, 250 gallery-only distractors
        n_test = spec.test_locations or n
        extra = max(1, round(n_test * U1652_DISTRACTORS_PER_TEST_PLACE))
        test_end = n + n_test
        return {"train": ids[:n], "test": ids[n:test_end], "distractor": ids[test_end : test_end + extra]}
    if spec.layout == "denseuav":  # 6-digit ids from 000000, the test places after the training ones
        n_test = spec.test_locations or max(1, round(n * DENSEUAV_TEST_SHARE))
        dense = [f"{i:06d}" for i in range(n)]
        return {"train": dense[: n - n_test], "test": dense[n - n_test :], "distractor": []}
    # SUES-200: 200 places, 120 train / 80 test; galleries hold all places
    n_train = n - spec.test_locations if spec.test_locations else max(1, round(n * 120 / 200))
    rng = np.random.default_rng(1)  # fixed like the official list: the split does not move with --seed
    order = rng.permutation(n)
    train = sorted(ids[i] for i in order[:n_train])
    test = sorted(ids[i] for i in order[n_train:])
    return {"train": train, "test": test, "distractor": []}


def _encode(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(img).save(buf, format="JPEG", quality=92)
    elif fmt == "TIFF":
        Image.fromarray(img).save(buf, format="TIFF")
    else:
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _drone_cameras(spec: WorldSpec, rng: np.random.Generator, altitude: int | None) -> list[DroneCamera]:
    n = spec.drone_per_location
    start = rng.uniform(0, 2 * np.pi)
    cams = []
    for k in range(n):
        if altitude is None:  # University-1652: one descending orbit around the building
            frac = k / max(n - 1, 1)
            alt = U1652_ALTITUDE_RANGE[0] + frac * (U1652_ALTITUDE_RANGE[1] - U1652_ALTITUDE_RANGE[0])
            az = start + 2 * np.pi * k / n
        else:  # SUES-200: frames along the approach at a fixed height
            alt = altitude * rng.uniform(0.97, 1.03)
            az = start + rng.uniform(-np.pi / 2, np.pi / 2)
        cams.append(
            DroneCamera(
                azimuth=float(az + rng.uniform(-0.1, 0.1)),
                altitude=float(alt),
                pitch_deg=float(rng.uniform(55, 68)),
                vfov_deg=45.0,
                roll_deg=float(rng.uniform(-4, 4)),
            )
        )
    return cams


def _drone_photo(
    spec: WorldSpec, place: Place, shade: np.ndarray, cam: DroneCamera, rng: np.random.Generator
) -> np.ndarray:
    """One drone photo at the world's size, ray-traced at ``spec.supersample`` x and box-filtered."""
    k = spec.supersample
    img = render_drone(place, shade, cam, spec.image_size * k, rng)
    return img if k == 1 else np.asarray(Image.fromarray(img).reduce(k))


def render_location(spec: WorldSpec, index: int) -> dict[str, list[bytes]]:
    """All images of one location: {"satellite": [bytes], "drone@<alt>": [bytes, ...]}."""
    place = generate_place(spec.seed, index)
    rng = np.random.default_rng([spec.seed, index, 11])
    sat_shade = cast_shadows(place, rng.uniform(0, 2 * np.pi), rng.uniform(35, 65))
    drone_shade = cast_shadows(place, rng.uniform(0, 2 * np.pi), rng.uniform(30, 65))
    sat = render_satellite(place, sat_shade, spec.image_size, spec.satellite_side_m)
    # the satellite pass was taken on another day: global tint and contrast change
    sat = np.clip((sat.astype(np.float32) - 128) * rng.uniform(0.85, 1.15) + 128, 0, 255)
    sat = np.clip(sat * rng.uniform(0.92, 1.08, size=3), 0, 255).astype(np.uint8)
    if spec.layout == "denseuav":
        return _denseuav_location(spec, place, sat_shade, drone_shade, rng)
    sat_fmt = "PNG" if spec.layout == "sues200" else "JPEG"
    out: dict[str, list[bytes]] = {"satellite": [_encode(sat, sat_fmt)]}
    alts: list[int | None] = list(spec.altitudes) if spec.layout == "sues200" else [None]
    for alt in alts:
        imgs = [
            _encode(_drone_photo(spec, place, drone_shade, cam, rng), "JPEG") for cam in _drone_cameras(spec, rng, alt)
        ]
        out[f"drone@{alt}"] = imgs
    return out


def _denseuav_location(
    spec: WorldSpec, place: Place, sat_shade: np.ndarray, drone_shade: np.ndarray, rng: np.random.Generator
) -> dict[str, list[bytes]]:
    """DenseUAV's images of a place: one nadir photo per height; per height a tile of the ground the
    photo sees and an older one (another day's light): {"drone@<h>": [JPEG], "satellite@<h>": [new, old] TIFF}."""
    out: dict[str, list[bytes]] = {}
    heading = rng.uniform(0, 2 * np.pi)
    for height in spec.altitudes:
        cam = DroneCamera(
            azimuth=float(heading + rng.uniform(-0.05, 0.05)),
            altitude=float(height * rng.uniform(0.98, 1.02)),
            pitch_deg=float(rng.uniform(87.0, 89.0)),
            vfov_deg=DENSEUAV_VFOV_DEG,
            roll_deg=float(rng.uniform(-2, 2)),
        )
        out[f"drone@{height}"] = [_encode(_drone_photo(spec, place, drone_shade, cam, rng), "JPEG")]
        side = 2 * height * math.tan(math.radians(DENSEUAV_VFOV_DEG / 2))
        tiles = []
        for shade, gain in ((sat_shade, rng.uniform(0.9, 1.1)), (drone_shade, rng.uniform(0.75, 0.95))):
            tile = render_satellite(place, shade, spec.image_size, side).astype(np.float32)
            tile = np.clip((tile - 128) * gain + 128, 0, 255) * rng.uniform(0.92, 1.08, size=3)
            tiles.append(_encode(np.clip(tile, 0, 255).astype(np.uint8), "TIFF"))
        out[f"satellite@{height}"] = tiles
    return out


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_u1652(root: Path, loc: str, role: str, imgs: dict[str, list[bytes]]) -> None:
    sat = imgs["satellite"][0]
    drones = imgs["drone@None"]
    drone_names = [f"image-{k + 1:02d}.jpeg" for k in range(len(drones))]
    if role == "train":
        _write(root / "train" / "satellite" / loc / f"{loc}.jpg", sat)
        for name, data in zip(drone_names, drones, strict=True):
            _write(root / "train" / "drone" / loc / name, data)
        return
    _write(root / "test" / "gallery_satellite" / loc / f"{loc}.jpg", sat)
    for name, data in zip(drone_names, drones, strict=True):
        _write(root / "test" / "gallery_drone" / loc / name, data)
    if role == "test":
        _write(root / "test" / "query_satellite" / loc / f"{loc}.jpg", sat)
        for name, data in zip(drone_names, drones, strict=True):
            _write(root / "test" / "query_drone" / loc / name, data)


def _write_sues200(root: Path, loc: str, role: str, imgs: dict[str, list[bytes]], altitudes) -> None:
    sat = imgs["satellite"][0]
    for alt in altitudes:
        drones = imgs[f"drone@{alt}"]
        test = root / "Testing" / str(alt)
        # the galleries hold every place, training places included (they act as distractors)
        _write(test / "gallery_satellite" / loc / "0.png", sat)
        for k, data in enumerate(drones):
            _write(test / "gallery_drone" / loc / f"{k}.jpg", data)
        if role == "train":
            _write(root / "Training" / str(alt) / "satellite" / loc / "0.png", sat)
            for k, data in enumerate(drones):
                _write(root / "Training" / str(alt) / "drone" / loc / f"{k}.jpg", data)
        else:
            _write(test / "query_satellite" / loc / "0.png", sat)
            for k, data in enumerate(drones):
                _write(test / "query_drone" / loc / f"{k}.jpg", data)


def _write_denseuav(root: Path, loc: str, role: str, imgs: dict[str, list[bytes]], heights) -> None:
    """train/{drone,satellite}/<id>/ or, for a test place, test/query_*; every place in test/gallery_*."""
    drones = {f"H{h}.JPG": imgs[f"drone@{h}"][0] for h in heights}
    tiles = {f"H{h}{old}.tif": imgs[f"satellite@{h}"][k] for h in heights for k, old in enumerate(("", "_old"))}
    folders = ["gallery"] + (["train"] if role == "train" else ["query"])
    for folder in folders:
        drone_dir = root / "train" / "drone" if folder == "train" else root / "test" / f"{folder}_drone"
        sat_dir = root / "train" / "satellite" if folder == "train" else root / "test" / f"{folder}_satellite"
        for name, data in drones.items():
            _write(drone_dir / loc / name, data)
        for name, data in tiles.items():
            _write(sat_dir / loc / name, data)


def write_denseuav_gps(root: Path, spec: WorldSpec) -> None:
    """Dense_GPS_ALL.txt and its train/test halves: ``<split>/satellite/<id>/H80.tif E<lon> N<lat> <h>``
    (DenseUAV's columns: longitude first), the height that of the lowest photo."""
    where = place_coordinates(spec)
    ids = split_ids(spec)
    lines = {}
    for role, folder in (("train", "train/satellite"), ("test", "test/query_satellite")):
        low = spec.altitudes[0]
        lines[role] = [
            f"{folder}/{loc}/H{low}.tif E{where[loc][1]:.8f} N{where[loc][0]:.8f} {low:.2f}\n" for loc in ids[role]
        ]
    (root / denseuav.GPS_TRAIN).write_text("".join(lines["train"]))
    (root / denseuav.GPS_TEST).write_text("".join(lines["test"]))
    (root / denseuav.GPS_ALL).write_text("".join(lines["train"] + lines["test"]))


def _render_job(args: tuple[WorldSpec, int]) -> dict[str, list[bytes]]:
    return render_location(*args)


def existing_spec(root: Path) -> dict | None:
    """The world.json of ``root``, completed with the defaults of fields added since it was written."""
    marker = root / "world.json"
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
            return WorldSpec(**{**recorded, "altitudes": tuple(recorded["altitudes"])}).to_json()
        except (OSError, json.JSONDecodeError, KeyError, TypeError, MeanGeoError):
            return None
    return None


#: where a world's places lie: ``place,lat,lon`` (the place's centre = its satellite tile's centre,
#: where its drone photos look); read by the datamodule (distance metrics) and mean_geo.index
COORDINATES = "coordinates.csv"
#: the synthetic region: SUES-200's city (Shanghai); places on a 1.2 km grid (each is generated
#: 600 m across), jittered by up to ±200 m, so a wrong match is hundreds of metres off
REGION_CENTRE = (31.2304, 121.4737)
PLACE_SPACING_M, PLACE_JITTER_M = 1200.0, 200.0
#: DenseUAV's region (Xiasha university town, Hangzhou) and its dense places
DENSEUAV_REGION_CENTRE = (30.32, 120.36)
DENSE_SPACING_M, DENSE_JITTER_M = 40.0, 8.0


def place_coordinates(spec: WorldSpec) -> dict[str, Coords]:
    """Latitude/longitude of every place of the world (training, test and distractor places),
    deterministic for the spec's seed.  DenseUAV's places are dense: tens of metres apart."""
    ids = [loc for role in ("train", "test", "distractor") for loc in split_ids(spec)[role]]
    columns = math.ceil(math.sqrt(len(ids)))
    rng = np.random.default_rng(spec.seed + 7919)
    dense = spec.layout == "denseuav"
    spacing, jitter_m = (DENSE_SPACING_M, DENSE_JITTER_M) if dense else (PLACE_SPACING_M, PLACE_JITTER_M)
    jitter = rng.uniform(-jitter_m, jitter_m, size=(len(ids), 2))
    lat0, lon0 = DENSEUAV_REGION_CENTRE if dense else REGION_CENTRE
    metres_per_degree = 111_320.0
    out = {}
    for i, loc in enumerate(ids):
        north = (i // columns - columns / 2) * spacing + jitter[i, 0]
        east = (i % columns - columns / 2) * spacing + jitter[i, 1]
        lat = lat0 + north / metres_per_degree
        out[loc] = (lat, lon0 + east / (metres_per_degree * math.cos(math.radians(lat0))))
    return out


def refuse_foreign_folder(root: Path) -> None:
    """A world is never written into a folder that holds anything (but the same world, which the
    callers check first: asking again is a no-op)."""
    if not root.is_dir() or any(root.iterdir()):
        raise MeanGeoError(
            f"{root}: exists and is not this synthetic world (world.json differs or is missing); "
            "choose another --out or remove it yourself"
        )


def write_world(spec: WorldSpec, root: str | Path, workers: int | None = None, progress: bool = True) -> Path:
    """Render ``spec`` into ``root``; a no-op if ``root`` already holds exactly this world.

    Refuses (MeanGeoError) to touch a non-empty ``root`` that is anything else.
    """
    root = Path(root).expanduser()
    if root.exists():
        if existing_spec(root) == spec.to_json():
            if not (root / COORDINATES).is_file():  # a world written before worlds had coordinates
                with atomic_path(root / COORDINATES) as partial:
                    write_place_coordinates(partial, place_coordinates(spec))
            return root
        refuse_foreign_folder(root)
    with partial_world(root) as tmp:
        if spec.layout == "gta_uav":  # one map, not places: its own writer
            with _terminate_cleanly():
                write_gta_world(tmp, spec.locations, spec.image_size, spec.seed)
        else:
            _write_places(spec, tmp, workers, progress)
        (tmp / "world.json").write_text(json.dumps({**spec.to_json()}, indent=1) + "\n")
        _move_into_place(tmp, root, spec)
    return root


@contextmanager
def partial_world(root: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``root`` to write a world into (the caller renames it into
    place when complete); removed when the writing fails or is interrupted."""
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(root)
    tmp = unique_partial_dir(root)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_places(spec: WorldSpec, tmp: Path, workers: int | None, progress: bool) -> None:
    """Render every place of a place-based layout into ``tmp``, with its coordinates files."""
    ids = split_ids(spec)
    jobs = [(loc, role) for role in ("train", "test", "distractor") for loc in ids[role]]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    args = [(spec, int(loc)) for loc, _ in jobs]
    with _terminate_cleanly(), _worker_pool(workers) if workers > 1 else _Inline() as pool:
        results = pool.map(_render_job, args, chunksize=1)
        for (loc, role), imgs in tqdm(
            zip(jobs, results, strict=True), total=len(jobs), desc=f"synth {spec.layout}", disable=not progress
        ):
            if spec.layout == "university1652":
                _write_u1652(tmp, loc, role, imgs)
            elif spec.layout == "denseuav":
                _write_denseuav(tmp, loc, role, imgs, spec.altitudes)
            else:
                _write_sues200(tmp, loc, role, imgs, spec.altitudes)
    write_place_coordinates(tmp / COORDINATES, place_coordinates(spec))
    if spec.layout == "denseuav":
        write_denseuav_gps(tmp, spec)


def _move_into_place(tmp: Path, root: Path, spec: WorldSpec, attempts: int = 5) -> None:
    """Rename the finished world to ``root``.  Another writer of the same world (a second
    generator, another DDP rank) may be removing the empty root or renaming its own copy at the
    same moment: its finished copy counts as ours; anything else at ``root`` is refused."""
    for attempt in range(attempts):
        try:
            if root.exists():
                root.rmdir()  # empty (checked by the caller) unless another writer just put its world here
            tmp.rename(root)
            return
        except OSError:
            if existing_spec(root) == spec.to_json():
                shutil.rmtree(tmp, ignore_errors=True)
                return
            if attempt == attempts - 1 or (root.is_dir() and any(root.iterdir())):
                raise
            time.sleep(0.05 * (attempt + 1))  # the other writer is between its rmdir and its rename

    return True


def _die_with_parent() -> None:
    """Pool workers end with their parent: after a kill -9 they would otherwise wait on a pipe forever."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


class _worker_pool:
    """A process pool that, on an error or a signal, cancels what is queued and stops its workers
    instead of finishing the whole world first (what ``ProcessPoolExecutor.__exit__`` does)."""

    def __init__(self, workers: int) -> None:
        self.pool = ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent)

    def __enter__(self) -> ProcessPoolExecutor:
        return self.pool

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.pool.shutdown()
            return False
        processes = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        return False


class _terminate_cleanly:
    """SIGTERM becomes SystemExit while writing, so the partial folder is removed (main thread only)."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._exit)
        return self

    @staticmethod
    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


class _Inline:
    """Stand-in for a process pool when one worker is asked for (simpler to debug/profile)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, items, chunksize=1):
        return map(fn, items)
