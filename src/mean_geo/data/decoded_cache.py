"""``dataset.cache=uint8``: the training images decoded once, at the training size, into one memory map.

A worker's time goes to decoding JPEGs (``loader 384px`` in docs/benchmarks.md); a dataset read for
many epochs and many runs pays that again every time.  The cache holds every training image resized
to the training size as uint8 (S, S, 3) rows of one file, written once (its size is printed first),
read through ``np.memmap`` by every worker, epoch and run with the same images and size.  The key
is a hash of the size and of every file's path, size and modification time: a changed file makes a
new cache, never a stale one.  It lives in ``dataset.cache_dir`` (by default beside the runs), never
inside the dataset.  The one change to the augmentation: the JPEG recompression (p 0.5) runs on the
stored training-size image instead of the full-size one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from mean_geo.data.datasets import PairedViewsDataset, read_image
from mean_geo.errors import ConfigError
from mean_geo.utils import atomic
from mean_geo.utils.atomic import atomic_path
from mean_geo.utils.output import writable_folder

log = logging.getLogger(__name__)
CACHE_KINDS = ("none", "uint8")


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def decode_at(path: Path, size: int) -> np.ndarray:
    """One image as the cache stores it: (size, size, 3) uint8, resized as the training path resizes."""
    image = read_image(path, size)
    if image.shape[-2:] != (size, size):
        image = TF.resize(image, [size, size], antialias=True)
    return image.permute(1, 2, 0).numpy()


def _decode_many(job: tuple[list[str], int]) -> list[np.ndarray]:
    paths, size = job
    torch.set_num_threads(1)
    return [decode_at(Path(p), size) for p in paths]


class DecodedCache:
    """The decoded training images of one dataset at one size.

    Args:
        folder: where cache files are kept (created when needed).
        paths: every image the training pairs use.
        size: the training image size.
    """

    def __init__(self, folder: Path, paths: Sequence[Path], size: int) -> None:
        self.folder = Path(folder)
        self.paths = sorted({str(p) for p in paths})
        self.size = size
        digest = hashlib.sha256(str(size).encode())
        for p in self.paths:
            st = os.stat(p)
            digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        stem = f"train_{size}px_{len(self.paths)}img_{digest.hexdigest()[:16]}"
        self.file = self.folder / f"{stem}.u8"
        self.index_file = self.folder / f"{stem}.json"
        self.row_of = {p: i for i, p in enumerate(self.paths)}

    @property
    def nbytes(self) -> int:
        return len(self.paths) * self.size * self.size * 3

    def ready(self) -> bool:
        """Written completely (the index is written last, after the rows)."""
        return self.index_file.is_file() and self.file.is_file() and self.file.stat().st_size == self.nbytes

    def build(self, workers: int = 1) -> None:
        """Decode every image into the file: the disk cost is logged first, and a disk without room
        for it is one line before anything is written."""
        if self.ready():
            return
        writable_folder(self.folder, "dataset.cache_dir")
        free = shutil.disk_usage(self.folder).free
        if self.nbytes > free:
            raise ConfigError(
                f"dataset.cache=uint8: {len(self.paths)} images at {self.size} px need {_size(self.nbytes)} in "
                f"{self.folder}, which has {_size(free)} free (set dataset.cache_dir elsewhere)"
            )
        log.warning(
            "dataset.cache=uint8: decoding %d training images at %d px once: %s in %s",
            len(self.paths),
            self.size,
            _size(self.nbytes),
            self.file,
        )
        with atomic_path(self.file) as partial:  # complete or absent, whatever stops the decoding
            images = np.memmap(partial, dtype=np.uint8, mode="w+", shape=(len(self.paths), self.size, self.size, 3))
            chunk = 64
            jobs = [(self.paths[i : i + chunk], self.size) for i in range(0, len(self.paths), chunk)]
            if workers > 1:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    results = pool.map(_decode_many, jobs)
                    for start, block in zip(range(0, len(self.paths), chunk), results, strict=True):
                        images[start : start + len(block)] = np.stack(block)
            else:
                for start, job in zip(range(0, len(self.paths), chunk), jobs, strict=True):
                    images[start : start + len(job[0])] = np.stack(_decode_many(job))
            images.flush()
            del images
        atomic.write_text(self.index_file, json.dumps({"size": self.size, "paths": self.paths}))

    def images(self) -> np.ndarray:
        """The rows, memory-mapped read-only: (N, S, S, 3) uint8."""
        return np.memmap(self.file, dtype=np.uint8, mode="r", shape=(len(self.paths), self.size, self.size, 3))


class CachedPairsDataset(PairedViewsDataset):
    """The paired dataset read from a :class:`DecodedCache` (built first) instead of the image files."""

    def __init__(self, *args, cache: DecodedCache, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.drone_recipe.size != cache.size or self.satellite_recipe.size != cache.size:
            raise ValueError("the cache holds another image size than the recipes'")
        self.cache = cache
        self._images: np.ndarray | None = None  # opened in each worker (a memmap does not pickle as one)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def load(self, path: Path, size: int) -> torch.Tensor:
        if self._images is None:
            self._images = self.cache.images()
        return torch.from_numpy(np.array(self._images[self.cache.row_of[str(path)]])).permute(2, 0, 1)


def check_cache_dir(cache_dir: Path, dataset_root: Path) -> None:
    """The cache is never written inside the dataset (what the user has is only read), and its
    folder can be written (checked before any image is decoded)."""
    folder, root = Path(cache_dir).resolve(), Path(dataset_root).resolve()
    if folder == root or root in folder.parents:
        raise ConfigError(
            f"dataset.cache_dir={cache_dir}: inside the dataset root {dataset_root}; the dataset is only read "
            "(put the cache beside the runs, the default)"
        )
    writable_folder(cache_dir, "dataset.cache_dir")
