"""A flight's frames in time order: image files with their times, or a video's frames.

Where a frame's time comes from, first found wins:

1. ``--frames-csv`` (``path,time_s`` and optionally ``course_deg``, ``altitude_m``);
2. ``--fps``: the frames in natural name order (``frame_2`` before ``frame_10``), ``i / fps`` seconds;
3. the file name: ``…_t<seconds>.<ext>`` (``flight0_000012_t12.000.png``, as the synthetic flights
   and the video reader name frames);
4. the photo's EXIF ``DateTimeOriginal`` (+ ``SubSecTimeOriginal``), as drone cameras write it.

A video is read with OpenCV (its FFmpeg build): every frame, or ``sample_fps`` frames a second;
each kept frame is written as a lossless PNG named ``<video stem>_<frame:06d>_t<seconds>.png`` so
that strips, the track CSV and truth files name frames as files.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image

from mean_geo.data.coordinates import photo_row
from mean_geo.data.numbers import parse_finite
from mean_geo.errors import MeanGeoError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg"})
_TIME_IN_NAME = re.compile(r"_t(\d+(?:\.\d+)?)s?$")
_EXIF_IFD, _DATETIME_ORIGINAL, _SUBSEC_ORIGINAL, _DATETIME = 0x8769, 36867, 37521, 306


@dataclass
class SequenceFrame:
    """One frame: its image file, its time (s) and what the flight log may add."""

    path: Path
    time_s: float
    course_deg: float = math.nan
    altitude_m: float = math.nan


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def time_from_name(path: Path) -> float | None:
    m = _TIME_IN_NAME.search(path.stem)
    return float(m.group(1)) if m else None


def time_from_exif(path: Path) -> float | None:
    """Seconds since the epoch (naive local time, as cameras write it) from the EXIF tags."""
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            sub = exif.get_ifd(_EXIF_IFD)
            stamp = sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
            fraction = sub.get(_SUBSEC_ORIGINAL)
    except OSError:
        return None
    if not isinstance(stamp, str):
        return None
    try:
        seconds = datetime.strptime(stamp.strip("\x00 "), "%Y:%m:%d %H:%M:%S").timestamp()
    except ValueError:
        return None
    digits = str(fraction).strip("\x00 ") if fraction is not None else ""
    return seconds + (float(f"0.{digits}") if digits.isdigit() else 0.0)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _read_frames_csv(path: Path, photos: list[Path]) -> list[SequenceFrame]:
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
            fields = set(rows[0].keys()) if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MeanGeoError(f"--frames-csv {path}: not a readable CSV ({exc})") from None
    if not {"path", "time_s"} <= fields:
        raise MeanGeoError(f"--frames-csv {path}: expected a header 'path,time_s[,course_deg][,altitude_m]'")
    table: dict[str, tuple[int, dict]] = {row["path"]: (line, row) for line, row in enumerate(rows, start=2)}
    frames = []
    for p in photos:
        found = photo_row(table, p)
        if found is None:
            raise MeanGeoError(f"--frames-csv {path}: no row for the frame {p} (by path or file name)")
        line, row = found
        time_s = parse_finite(row["time_s"])
        if time_s is None:
            raise MeanGeoError(f"--frames-csv {path}:{line}: time_s '{row['time_s']}' is not a finite number")
        extra = {}
        for key in ("course_deg", "altitude_m"):
            text = (row.get(key) or "").strip()
            if text:
                value = parse_finite(text)
                if value is None:
                    raise MeanGeoError(f"--frames-csv {path}:{line}: {key} '{text}' is not a finite number")
                extra[key] = value
        frames.append(SequenceFrame(p, time_s, **extra))
    return frames


def order_frames(
    photos: list[Path], fps: float | None = None, frames_csv: str | Path | None = None
) -> list[SequenceFrame]:
    """The frames with their times, in time order.

    Args:
        photos: the frame files (any order).
        fps: frames a second; the frames are in natural name order.
        frames_csv: a ``path,time_s[,course_deg][,altitude_m]`` file naming every frame.

    Returns:
        The frames, earliest first.

    Raises:
        MeanGeoError: a frame without a time (one line naming it), or two frames at one time.
    """
    if frames_csv is not None:
        frames = _read_frames_csv(Path(frames_csv).expanduser(), photos)
    elif fps is not None:
        frames = [SequenceFrame(p, i / fps) for i, p in enumerate(sorted(photos, key=_natural_key))]
    else:
        frames = []
        for p in photos:
            time_s = time_from_name(p)
            time_s = time_from_exif(p) if time_s is None else time_s
            if time_s is None:
                raise MeanGeoError(
                    f"{p}: the frame has no time (no '_t<seconds>' at the end of its name, no EXIF "
                    "DateTimeOriginal); give --fps for frames in name order, or --frames-csv path,time_s"
                )
            frames.append(SequenceFrame(p, time_s))
    frames.sort(key=lambda f: f.time_s)
    for a, b in zip(frames, frames[1:], strict=False):
        if b.time_s <= a.time_s:
            raise MeanGeoError(
                f"{a.path} and {b.path}: two frames at {a.time_s:g} s; a flight's frames need distinct times"
            )
    return frames


def read_video(video: Path, out: Path, sample_fps: float | None = None) -> list[SequenceFrame]:
    """The frames of a video, written into ``out`` as PNG files.

    Args:
        video: the video file.
        out: the folder for the frames (created).
        sample_fps: keep this many frames a second (default every frame).

    Returns:
        The kept frames, in order, with their times from the video's frame rate.

    Raises:
        MeanGeoError: a file OpenCV cannot open or decode, or a video without frames or frame rate.
    """
    import cv2

    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise MeanGeoError(f"{video}: not a video OpenCV can read (a damaged file or a codec its FFmpeg lacks)")
        rate = capture.get(cv2.CAP_PROP_FPS)
        if not (math.isfinite(rate) and rate > 0):
            raise MeanGeoError(f"{video}: the video gives no frame rate; extract its frames and pass --fps")
        step = 1 if sample_fps is None else max(1, round(rate / sample_fps))
        out.mkdir(parents=True, exist_ok=True)
        frames, index = [], 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            if index % step == 0:
                time_s = index / rate
                path = out / f"{video.stem}_{index:06d}_t{time_s:.3f}.png"
                if not cv2.imwrite(str(path), image):
                    raise MeanGeoError(f"{path}: could not write the video frame")
                frames.append(SequenceFrame(path, time_s))
            index += 1
    finally:
        capture.release()
    if not frames:
        raise MeanGeoError(f"{video}: no frame could be decoded (an empty or damaged video)")
    return frames
