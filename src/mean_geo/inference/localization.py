"""Localizing drone photos against a gallery index (plain torch: no Lightning).

The photos are embedded with the model that built the index; each photo's best-matching tiles come
back with their scores and coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mean_geo.data.coordinates import Coords, photo_row, read_coordinates_csv
from mean_geo.data.datasets import load_rgb
from mean_geo.data.transforms import eval_transform
from mean_geo.errors import MeanGeoError
from mean_geo.inference.loading import InferenceModel, load_model
from mean_geo.models.mean import retrieval_embedding
from mean_geo.retrieval.distances import haversine_m
from mean_geo.retrieval.index_store import GalleryIndex
from mean_geo.retrieval.search import topk_search
from mean_geo.retrieval.strips import QUERY, Cell, write_strips


@dataclass
class Match:
    """One tile matched to a photo: its rank, place id, score, file and position."""

    rank: int
    id: str
    score: float
    path: str
    lat: float | None
    lon: float | None
    #: metres from where the photo was taken, when that is known (``photo_positions``)
    distance_m: float | None = None


@torch.inference_mode()
def embed_images(
    loaded: InferenceModel, paths: list[Path], batch_size: int = 32, flip_tta: bool = False
) -> torch.Tensor:
    """L2-normalised embeddings of image files, in order, as the model was trained to see them.

    Args:
        loaded: the model, with its input size and statistics.
        paths: the image files.
        batch_size: images per forward pass.
        flip_tta: embed each image with its mirror image, summed (``eval.flip_tta``).

    Returns:
        ``(len(paths), D)`` float32 unit vectors.
    """
    tf = eval_transform(loaded.image_size, loaded.mean, loaded.std)
    embs = []
    for i in range(0, len(paths), batch_size):
        batch = torch.stack([tf(load_rgb(p)) for p in paths[i : i + batch_size]])
        embs.append(retrieval_embedding(loaded.model, batch, flip_tta).float())
    return torch.cat(embs)


def localize(
    photos: list[Path],
    index: GalleryIndex,
    ckpt: str | Path | InferenceModel,
    k: int = 5,
    batch_size: int = 32,
    backend: str = "auto",
) -> list[list[Match]]:
    """Top-k matches of every photo.

    Photos are embedded as the index's tiles were (with their mirror images when it was built with
    ``flip_tta``).

    Args:
        photos: the drone photos.
        index: a gallery index (:func:`~mean_geo.retrieval.index_store.read_index`).
        ckpt: the model that built the index: a checkpoint, an export folder or a loaded model.
        k: matches per photo.
        batch_size: photos per forward pass.
        backend: the top-k search (:data:`~mean_geo.retrieval.search.BACKENDS`).

    Returns:
        ``[[Match, …], …]``, best first, one list per photo.

    Raises:
        MeanGeoError: another model built the index.
    """
    loaded = ckpt if isinstance(ckpt, InferenceModel) else load_model(ckpt, "ckpt")
    if loaded.fingerprint != index.fingerprint:
        raise MeanGeoError(
            f"ckpt={ckpt}: this model (fingerprint {loaded.fingerprint}) did not build the index "
            f"(fingerprint {index.fingerprint}); use the same checkpoint or rebuild the index"
        )
    scores, idx = topk_search(
        embed_images(loaded, photos, batch_size, index.flip_tta), index.embeddings.float(), k=k, backend=backend
    )
    results = []
    for row_s, row_i in zip(scores.tolist(), idx.tolist(), strict=True):
        matches = []
        for rank, (s, i) in enumerate(zip(row_s, row_i, strict=True), start=1):
            tile = index.tiles[i]
            latlon = tile.get("latlon") or (None, None)
            matches.append(Match(rank, tile["id"], s, tile["path"], latlon[0], latlon[1]))
        results.append(matches)
    return results


def photo_positions(photos: list[Path], coords_csv: str | Path) -> list[Coords | None]:
    """Where each photo was taken, from a coordinates CSV.

    A ``path,lat,lon`` CSV names the photo as given, absolutely, or by file name; in a
    ``place,lat,lon`` CSV the photo's folder is its place, as in the datasets.
    """
    key, table = read_coordinates_csv(coords_csv)
    if key == "place":
        return [table.get(p.parent.name) for p in photos]
    return [photo_row(table, p) for p in photos]


def add_distances(results: list[list[Match]], positions: list[Coords | None]) -> None:
    """Fill each match's ``distance_m`` from its photo's true position (where known)."""
    for matches, truth in zip(results, positions, strict=True):
        for m in matches:
            if truth is not None and m.lat is not None and m.lon is not None:
                here, there = (torch.tensor(c, dtype=torch.float64) for c in (truth, (m.lat, m.lon)))
                m.distance_m = float(haversine_m(here, there))


def write_strip(photo: Path, matches: list[Match], out: Path, size: int = 128) -> Path:
    """The photo beside its matches (rank, id, score under each) as one PNG row; returns ``out``."""
    cells = [Cell(photo, "query", QUERY)] + [Cell(Path(m.path), f"#{m.rank} {m.id} {m.score:.2f}") for m in matches]
    write_strips([cells], out, size)
    return out
