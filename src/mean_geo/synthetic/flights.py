"""Synthetic flights: a georeferenced map cut into overlapping tiles, and drone flights over it whose
every frame has a known time, position, course and altitude (docs/synthetic_world.md, "Flights").

The map is one generated neighbourhood (:func:`~mean_geo.synthetic.world.generate_place`) with cast
shadows, ``map_m`` metres a side, centred on :data:`REGION_CENTRE`.  Tiles are north-up squares of
``tile_m`` metres every ``tile_m · (1 - overlap)`` metres, each PNG with a world file (``.pgw``) in
latitude/longitude, so ``python -m mean_geo.index`` places them with no CSV.  A flight is a smooth
random path (constant ground speed, a turn rate that wanders, steered back before the map's edge);
its camera looks along the course, ``pitch_deg`` below the horizon (90: nadir), with GTA-UAV's
field of view (74° × 59°, 4:3 frames); the frame is the map seen through that camera (a
perspective warp of the map: flat ground, no parallax), with per-frame gain and sensor noise.
The same frames are written as an MP4 video.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mean_geo.errors import MeanGeoError
from mean_geo.synthetic.gta_map import HFOV_DEG, VFOV_DEG
from mean_geo.synthetic.render import cast_shadows
from mean_geo.synthetic.world import generate_place
from mean_geo.synthetic.writer import partial_world, refuse_foreign_folder

LAYOUT = "flights"
REGION_CENTRE = (31.2304, 121.4737)  # the other synthetic worlds' region (Shanghai)
#: metres per degree of latitude on the sphere the metrics measure on (haversine, mean Earth radius),
#: so a flight's speed and a tile's side are the same in the truth files as in the spec
METRES_PER_DEGREE = math.radians(1.0) * 6_371_008.8
#: the ground cell of the generated map: finer than a 128-px tile of 200 m needs
MAP_CELL_M = 1.0


@dataclass(frozen=True)
class FlightSpec:
    """Everything that determines a synthetic flights world."""

    flights: int = 2
    frames: int = 60
    fps: float = 1.0
    speed_mps: float = 12.0
    altitude_m: float = 120.0
    pitch_deg: float = 90.0
    image_size: int = 128
    tile_m: float = 200.0
    overlap: float = 0.5
    map_m: float = 2000.0
    seed: int = 0
    layout: str = LAYOUT

    def __post_init__(self) -> None:
        checks = [
            (self.flights >= 1, f"flights={self.flights}: expected at least 1"),
            (self.frames >= 2, f"frames={self.frames}: expected at least 2"),
            (0 < self.fps <= 60, f"fps={self.fps}: expected 0-60 frames a second"),
            (0 < self.speed_mps <= 50, f"speed_mps={self.speed_mps}: expected 0-50 m/s"),
            (30 <= self.altitude_m <= 500, f"altitude_m={self.altitude_m}: expected 30-500 m"),
            (45 <= self.pitch_deg <= 90, f"pitch_deg={self.pitch_deg}: expected 45 (oblique) to 90 (nadir)"),
            (
                self.image_size >= 32 and self.image_size % 8 == 0,
                f"image_size={self.image_size}: expected a multiple of 8 from 32 px "
                "(4:3 MPEG-4 frames need even sides)",
            ),
            (50 <= self.tile_m <= 1000, f"tile_m={self.tile_m}: expected 50-1000 m"),
            (0 <= self.overlap < 1, f"overlap={self.overlap}: expected a share in [0, 1)"),
            (self.map_m >= 2 * self.tile_m and self.map_m <= 8000, f"map_m={self.map_m}: expected 2 tiles to 8 km"),
            (self.layout == LAYOUT, f"layout={self.layout}: expected {LAYOUT}"),
        ]
        for ok, message in checks:
            if not ok:
                raise MeanGeoError(message)
        if self.map_m < 2 * self.margin_m() + 4 * self.speed_mps / self.fps:
            raise MeanGeoError(
                f"map_m={self.map_m}: too small for frames that see {self.margin_m():.0f} m around the drone; "
                "a larger map or a lower altitude"
            )

    def to_json(self) -> dict:
        return asdict(self)

    def margin_m(self) -> float:
        """How far from the drone its frame sees the ground: the path keeps this far from the edge."""
        corners = camera_footprint((0.0, 0.0), self.altitude_m, 0.0, self.pitch_deg)
        return float(np.hypot(corners[:, 0], corners[:, 1]).max()) + self.tile_m / 2


def latlon(x: float | np.ndarray, y: float | np.ndarray, map_m: float):
    """Map metres (x east from the west edge, y south from the north edge) → latitude, longitude."""
    lat0, lon0 = REGION_CENTRE
    lat = lat0 + (map_m / 2 - np.asarray(y)) / METRES_PER_DEGREE
    lon = lon0 + (np.asarray(x) - map_m / 2) / (METRES_PER_DEGREE * math.cos(math.radians(lat0)))
    return lat, lon


def camera_footprint(centre: tuple[float, float], altitude: float, course: float, pitch_deg: float) -> np.ndarray:
    """Where the frame's corners (upper-left, upper-right, lower-right, lower-left) and centre meet
    the ground: ``(5, 2)`` map metres, for a camera at ``centre`` looking along ``course`` (radians
    clockwise from north) ``pitch_deg`` below the horizon."""
    forward = np.array([math.sin(course), -math.cos(course), 0.0])  # x east, y south, z up
    right = np.array([math.cos(course), math.sin(course), 0.0])
    pitch = math.radians(pitch_deg)
    axis = math.cos(pitch) * forward + math.sin(pitch) * np.array([0.0, 0.0, -1.0])
    up = np.cross(axis, right)
    tx, ty = math.tan(math.radians(HFOV_DEG / 2)), math.tan(math.radians(VFOV_DEG / 2))
    camera = np.array([centre[0], centre[1], altitude])
    points = []
    for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1), (0, 0)):
        ray = axis + sx * tx * right - sy * ty * up
        points.append((camera + altitude / -ray[2] * ray)[:2])
    return np.array(points)


def flight_path(spec: FlightSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Drone positions ``(n, 2)`` (map metres) and courses ``(n,)`` (radians) at the frame times."""
    dt, margin, side = 1.0 / spec.fps, spec.margin_m(), spec.map_m
    centre = np.array([side / 2, side / 2])
    pos = centre + rng.uniform(-0.5, 0.5, 2) * (side - 2 * margin)
    course, turn = rng.uniform(0, 2 * math.pi), 0.0
    positions, courses = [], []
    for _ in range(spec.frames):
        positions.append(pos.copy())
        courses.append(course % (2 * math.pi))
        turn = 0.9 * turn + rng.normal(0.0, 0.01)  # rad/s, wandering (about 1.3°/s)
        inward = math.atan2(centre[0] - pos[0], -(centre[1] - pos[1]))  # bearing to the centre
        if np.any(np.abs(pos - centre) > side / 2 - margin - 2 * spec.speed_mps * dt):
            turn = ((inward - course + math.pi) % (2 * math.pi) - math.pi) / max(4 * dt, 1.0)
        course += turn * dt
        pos = pos + spec.speed_mps * dt * np.array([math.sin(course), -math.cos(course)])
    return np.array(positions), np.array(courses)


def _frame(albedo: Image.Image, corners_m: np.ndarray, width: int, height: int, per_m: float) -> Image.Image:
    """The map seen through the camera: a perspective warp taking the frame's pixel corners to the
    footprint's corners on the map."""
    import cv2

    src = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    dst = np.float32(corners_m[:4] * per_m)
    h = cv2.getPerspectiveTransform(src, dst)
    coefficients = tuple((h / h[2, 2]).reshape(-1)[:8])
    return albedo.transform((width, height), Image.PERSPECTIVE, coefficients, Image.BILINEAR)


def _write_tiles(root: Path, albedo: Image.Image, spec: FlightSpec, per_m: float) -> int:
    folder = root / "tiles"
    folder.mkdir(parents=True)
    stride = spec.tile_m * (1 - spec.overlap)
    count = int(math.floor((spec.map_m - spec.tile_m) / stride + 1e-9)) + 1
    px_m = spec.tile_m / spec.image_size
    lat0 = REGION_CENTRE[0]
    for row in range(count):
        for col in range(count):
            x0, y0 = col * stride, row * stride
            box = (x0 * per_m, y0 * per_m, (x0 + spec.tile_m) * per_m, (y0 + spec.tile_m) * per_m)
            tile = albedo.resize((spec.image_size, spec.image_size), Image.BILINEAR, box=box)
            name = f"r{row:03d}_c{col:03d}"  # not "<a>_<b>": that reads as a <lat>_<lon> name
            tile.save(folder / f"{name}.png", compress_level=1)
            # world file: pixel centre (col, row) -> lon = A·col + C, lat = E·row + F (north-up)
            lat, lon = latlon(x0 + px_m / 2, y0 + px_m / 2, spec.map_m)
            a = px_m / (METRES_PER_DEGREE * math.cos(math.radians(lat0)))
            e = -px_m / METRES_PER_DEGREE
            (folder / f"{name}.pgw").write_text(f"{a:.12e}\n0\n0\n{e:.12e}\n{float(lon):.10f}\n{float(lat):.10f}\n")
    return count * count


def _write_flight(root: Path, albedo: Image.Image, spec: FlightSpec, per_m: float, flight: int) -> None:
    import cv2

    name = f"flight{flight:02d}"
    folder = root / "flights" / name
    (folder / "frames").mkdir(parents=True)
    rng = np.random.default_rng([spec.seed, 31, flight])
    positions, courses = flight_path(spec, rng)
    width, height = spec.image_size, spec.image_size * 3 // 4  # 4:3, both even
    video = cv2.VideoWriter(str(folder / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), spec.fps, (width, height))
    if not video.isOpened():
        raise MeanGeoError(f"{folder / name}.mp4: OpenCV cannot write MP4 (mp4v) videos here")
    truth, log = [], []
    try:
        for i, (pos, course) in enumerate(zip(positions, courses, strict=True)):
            footprint = camera_footprint((pos[0], pos[1]), spec.altitude_m, course, spec.pitch_deg)
            frame = np.asarray(_frame(albedo, footprint, width, height, per_m), dtype=np.float32)
            frame = frame * rng.uniform(0.9, 1.1) + rng.normal(0.0, 3.0, frame.shape)
            frame = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
            time_s = i / spec.fps
            file = f"{name}_{i:06d}_t{time_s:.3f}.png"
            Image.fromarray(frame).save(folder / "frames" / file, compress_level=1)
            video.write(np.ascontiguousarray(frame[..., ::-1]))
            look_lat, look_lon = latlon(*footprint[4], spec.map_m)
            drone_lat, drone_lon = latlon(*pos, spec.map_m)
            truth.append([file, f"{look_lat:.8f}", f"{look_lon:.8f}", f"{drone_lat:.8f}", f"{drone_lon:.8f}"])
            log.append([file, f"{time_s:.3f}", f"{math.degrees(course):.2f}", f"{spec.altitude_m:.1f}"])
    finally:
        video.release()
    _csv(folder / "truth.csv", ["path", "lat", "lon", "drone_lat", "drone_lon"], truth)
    _csv(folder / "frames.csv", ["path", "time_s", "course_deg", "altitude_m"], log)


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_flights_world(spec: FlightSpec, root: str | Path) -> Path:
    """Write the map's tiles and ``spec.flights`` flights into ``root``; a no-op if ``root`` holds
    exactly this world.  Written into a partial folder and renamed when complete.

    Raises:
        MeanGeoError: ``root`` exists and is something else.
    """
    root = Path(root).expanduser()
    if root.exists():
        marker = root / "world.json"
        try:
            same = marker.is_file() and json.loads(marker.read_text()) == spec.to_json()
        except (OSError, ValueError):
            same = False
        if same:
            return root
        refuse_foreign_folder(root)
    with partial_world(root) as tmp:
        place = generate_place(spec.seed, 0, radius_m=spec.map_m / 2, cell_m=MAP_CELL_M)
        rng = np.random.default_rng([spec.seed, 29])
        shade = cast_shadows(place, rng.uniform(0, 2 * np.pi), rng.uniform(40, 65))
        albedo = Image.fromarray(np.clip(place.colour * shade[..., None], 0, 255).astype(np.uint8))
        per_m = place.size / spec.map_m
        _write_tiles(tmp, albedo, spec, per_m)
        for flight in range(spec.flights):
            _write_flight(tmp, albedo, spec, per_m, flight)
        (tmp / "world.json").write_text(json.dumps(spec.to_json(), indent=1) + "\n")
        if root.exists():
            root.rmdir()
        tmp.rename(root)
    return root
