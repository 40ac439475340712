"""docs/img/track.png: a synthetic flight decoded from a retrieval of known quality.

    python docs/scripts/track_figure.py [--out docs/img/track.png]

One synthetic flight (150 frames, 1 a second, 12 m/s, nadir at 120 m) over a 2 km map cut into
200 m tiles every 100 m; each frame's top-20 from :mod:`mean_geo.inference.simulated_retrieval`
with the right tile first half of the time, and frames 60-79 given nothing right at all (a stretch
the camera lost); then both decoders, as ``localize --track`` runs them.  Prints the metrics.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

from mean_geo.inference.flight import decode_flight, flight_metrics
from mean_geo.inference.geo import locate_tiles
from mean_geo.inference.simulated_retrieval import simulated_matches
from mean_geo.localization.sequence import order_frames
from mean_geo.localization.track import MotionModel, tile_spacing_m
from mean_geo.localization.track_plot import plot_track
from mean_geo.synthetic.flights import FlightSpec, write_flights_world

LOST = (60, 80)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/img/track.png")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = write_flights_world(FlightSpec(flights=1, frames=150, image_size=64, seed=0), Path(tmp) / "w")
        folder = world / "flights" / "flight00"
        frames = order_frames(sorted((folder / "frames").glob("*.png")), frames_csv=folder / "frames.csv")
        with (folder / "truth.csv").open() as fh:
            table = {row["path"]: (float(row["lat"]), float(row["lon"])) for row in csv.DictReader(fh)}
        truth = [table[f.path.name] for f in frames]
        tiles = np.array(locate_tiles(sorted((world / "tiles").glob("*.png")), world / "tiles"))
    rng = np.random.default_rng(0)
    matches = simulated_matches(truth, tiles, p_right=0.5, k=20, rng=rng)
    elsewhere = [(31.0, 121.0)] * (LOST[1] - LOST[0])  # far off the map: the right tile is never offered
    matches[LOST[0] : LOST[1]] = simulated_matches(elsewhere, tiles, p_right=0.0, k=20, rng=rng)
    flight = decode_flight(frames, matches, MotionModel(position_sigma_m=tile_spacing_m(tiles)))
    metrics = flight_metrics(flight, truth, corrupted=LOST)
    for name in ("flight_top1", "flight_online", "flight_offline"):
        shown = {k.split("/")[-1]: round(v, 1) for k, v in metrics.items() if f"/{name}/" in k}
        print(name, shown)
    plot_track(
        Path(args.out),
        tiles,
        np.array([(m[0].lat, m[0].lon) for m in matches]),
        np.array([(q.lat, q.lon) for q in flight.online]),
        np.array([(q.lat, q.lon) for q in flight.offline]),
        np.array(truth),
        "150 frames; simulated top-20, top-1 right half the time; frames 60-79 lost",
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
