"""Bench case ``loader``: the training input pipeline, ours against the authors', per worker.

The same synthetic 512 px JPEGs (drone photos and satellite tiles written as University-1652 stores
them) go through (a) our :class:`~mean_geo.data.datasets.PairedViewsDataset` and (b) the authors'
pipeline rebuilt from their code's list (spec §5): ``cv2.imread`` + BGR→RGB, the joint mirror, then
albumentations ``ImageCompression → Resize(INTER_LINEAR_EXACT) → ColorJitter → OneOf[AdvancedBlur,
Sharpen] → OneOf[GridDropout, CoarseDropout] → RandomRotate90 (satellite) → Normalize →
ToTensorV2`` (albumentations ≥ 2 spells their arguments ``quality_range``, ``num_holes_range``,
``hole_height_range``), and ``default_collate``.  albumentations is a bench extra
(``pip install mean-geo[bench]``).

A DataLoader worker is one process with one thread, so a worker's rate is measured as one: the
pipelines run in this process with torch and OpenCV held to one thread, interleaved pair by pair
so that a drifting machine hits both alike.  Our batch is normalised on the device it trains on;
that cost (on this CPU) is reported beside, not in, the worker's rate.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

PHASES = ("read", "decode", "augment", "collate")


def write_images(folder: Path, places: int, drones_per_place: int, size: int) -> list[tuple[Path, Path, int]]:
    """Synthetic University-1652-style JPEGs (the demo world's renderer): (drone, satellite, label)."""
    from mean_geo.synthetic.writer import WorldSpec, render_location

    spec = WorldSpec(layout="university1652", locations=places, image_size=size, drone_per_location=drones_per_place)
    pairs = []
    for place in range(places):
        images = render_location(spec, place)
        sat = folder / f"satellite_{place:04d}.jpg"
        sat.write_bytes(images["satellite"][0])
        for k, data in enumerate(images["drone@None"]):
            drone = folder / f"drone_{place:04d}_{k:02d}.jpeg"
            drone.write_bytes(data)
            pairs.append((drone, sat, place))
    return pairs


def authors_transforms(image_size: int, view: str):
    """The authors' albumentations list for one view (their ``get_transforms``, MEAN's jitter values)."""
    import albumentations as A
    import cv2
    from albumentations.pytorch import ToTensorV2

    side = image_size
    hole = (int(0.1 * side), int(0.2 * side))
    steps = [
        A.ImageCompression(quality_range=(90, 100), p=0.5),
        A.Resize(side, side, interpolation=cv2.INTER_LINEAR_EXACT),
        A.ColorJitter(brightness=0.15, contrast=0.3 if view == "satellite" else 0.7, saturation=0.3, hue=0.3, p=0.5),
        A.OneOf([A.AdvancedBlur(p=1.0), A.Sharpen(p=1.0)], p=0.3),
        A.OneOf(
            [
                A.GridDropout(ratio=0.4, p=1.0),
                A.CoarseDropout(num_holes_range=(10, 25), hole_height_range=hole, hole_width_range=hole, p=1.0),
            ],
            p=0.3,
        ),
    ]
    if view == "satellite":
        steps.append(A.RandomRotate90(p=1.0))
    steps += [A.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), ToTensorV2()]
    return A.Compose(steps)


def _authors_pair(drone_tf, sat_tf) -> Callable:
    import cv2

    def load(path: Path, clock: dict) -> np.ndarray:
        start = time.perf_counter()
        data = np.fromfile(path, np.uint8)
        mid = time.perf_counter()
        image = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        clock["read"] += mid - start
        clock["decode"] += time.perf_counter() - mid
        return image

    def pair(drone_path: Path, sat_path: Path, label: int, clock: dict):
        drone, sat = load(drone_path, clock), load(sat_path, clock)
        start = time.perf_counter()
        if np.random.random() < 0.5:
            drone, sat = cv2.flip(drone, 1), cv2.flip(sat, 1)
        out = drone_tf(image=drone)["image"], sat_tf(image=sat)["image"], label
        clock["augment"] += time.perf_counter() - start
        return out

    return pair


def _our_pair(dataset) -> Callable:
    from mean_geo.data import datasets as ds
    from mean_geo.data.augment import apply, draw

    cached = hasattr(dataset, "cache")

    def load(path: Path, size: int, clock: dict) -> torch.Tensor:
        start = time.perf_counter()
        if cached:  # a row of the memory map: read, nothing to decode
            image = dataset.load(path, size)
            clock["read"] += time.perf_counter() - start
            return image
        Path(path).read_bytes()  # what read_image reads first, timed on its own (page cache)
        mid = time.perf_counter()
        image = ds.read_image(path, size)
        end = time.perf_counter()
        clock["read"] += mid - start
        clock["decode"] += (end - mid) - (mid - start)  # read_image reads the bytes again
        return image

    def pair(drone_path: Path, sat_path: Path, label: int, clock: dict):
        drone = load(drone_path, dataset.drone_recipe.size, clock)
        sat = load(sat_path, dataset.satellite_recipe.size, clock)
        start = time.perf_counter()
        if torch.rand(()) < dataset.joint_flip_p:
            drone, sat = drone.flip(-1), sat.flip(-1)
        drone = apply(drone, draw(dataset.drone_recipe), dataset.drone_recipe, dataset.fill)
        sat = apply(sat, draw(dataset.satellite_recipe), dataset.satellite_recipe, dataset.fill)
        clock["augment"] += time.perf_counter() - start
        return drone, sat, label

    return pair


def uncached_floor_ms(files: list[tuple[Path, Path, int]], recipes: dict, repeats: int = 3) -> dict[str, float]:
    """What no pipeline that decodes every epoch avoids, per pair (ms, best of ``repeats``): decoding
    both images, the recipe's JPEG recompression at their decoded size (an encode and a decode, times
    its probability) and the resize to the training size, each timed alone on these files."""
    import torchvision.transforms.v2.functional as TF

    from mean_geo.data import datasets as ds
    from mean_geo.data.augment import _jpeg

    def best(fn) -> float:
        fn()  # first-call costs
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000 * min(times)

    per_image: dict[tuple[Path, str], tuple[float, float, float]] = {}
    for drone, sat, _ in files:
        for path, view in ((drone, "drone"), (sat, "satellite")):
            if (path, view) in per_image:
                continue
            recipe = recipes[view]
            image = ds.read_image(path, recipe.size)
            mid = (recipe.jpeg_quality[0] + recipe.jpeg_quality[1]) // 2
            per_image[path, view] = (
                best(lambda path=path, size=recipe.size: ds.read_image(path, size)),
                recipe.jpeg_p * best(lambda image=image, q=mid: _jpeg(image, q)),
                best(lambda image=image, size=recipe.size: TF.resize(image, [size, size], antialias=True)),
            )
    phases = ("decode", "recompress", "resize")
    floor = {k: 0.0 for k in phases}
    for drone, sat, _ in files:
        for key in ((drone, "drone"), (sat, "satellite")):
            for phase, ms in zip(phases, per_image[key], strict=True):
                floor[phase] += ms / len(files)
    return floor


@contextmanager
def _one_thread(cv2) -> Iterator[None]:
    """A worker's threads (torch's and OpenCV's) for the measurement; the caller's back after."""
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)


def loader(
    image_size: int = 384,
    source_size: int = 512,
    pairs: int = 240,
    batch: int = 16,
    places: int = 8,
    cache: bool = False,
) -> dict:
    """Pairs per second of one worker, ours and the authors', with the time split per pair (ms).
    ``cache``: ours reads ``dataset.cache=uint8``'s memory map (built first, its time reported)."""
    import cv2
    from torch.utils.data import default_collate

    from mean_geo.benchmarks.timing import peak_memory_mb
    from mean_geo.data.augment import COLOR_JITTER, ViewRecipe, normalize_batch
    from mean_geo.data.datasets import PairedViewsDataset, collate_pairs

    try:
        drone_tf, sat_tf = authors_transforms(image_size, "drone"), authors_transforms(image_size, "satellite")
    except ImportError as exc:
        return {"skipped": f"the authors' pipeline needs albumentations (pip install mean-geo[bench]): {exc}"}
    torch.manual_seed(0)
    np.random.seed(0)
    with _one_thread(cv2), tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        files = write_images(Path(tmp), places, max(1, pairs // places // 4), source_size)
        recipes = {v: ViewRecipe(image_size, rotate=v == "satellite", jitter=COLOR_JITTER[v]) for v in COLOR_JITTER}
        dataset = PairedViewsDataset(files, recipes["drone"], recipes["satellite"])
        extra: dict = {}
        n = (pairs + batch - 1) // batch * batch  # pairs measured per pipeline
        if cache:
            from mean_geo.data.decoded_cache import CachedPairsDataset, DecodedCache

            store = DecodedCache(Path(tmp) / "cache", [p for d, s, _ in files for p in (d, s)], image_size)
            t0 = time.perf_counter()
            store.build()
            extra = {"cache_build_s": time.perf_counter() - t0, "cache_images": len(store.paths)}
            dataset = CachedPairsDataset(files, recipes["drone"], recipes["satellite"], cache=store)
        pipelines = {"ours": _our_pair(dataset), "authors": _authors_pair(drone_tf, sat_tf)}
        collates = {"ours": collate_pairs, "authors": default_collate}
        clocks = {name: dict.fromkeys(PHASES, 0.0) for name in pipelines}
        normalize_s = 0.0
        for run in pipelines.values():  # warm-up: page cache, first-call costs
            run(*files[0], dict.fromkeys(PHASES, 0.0))
        for start in range(0, pairs, batch):
            for name, run in pipelines.items():
                items = [run(*files[(start + i) % len(files)], clocks[name]) for i in range(batch)]
                t0 = time.perf_counter()
                collated = collates[name](items)
                clocks[name]["collate"] += time.perf_counter() - t0
                if name == "ours":
                    t0 = time.perf_counter()
                    normalize_batch(collated["drone"], None, None), normalize_batch(collated["satellite"], None, None)
                    normalize_s += time.perf_counter() - t0
        floor = None if cache else uncached_floor_ms(files, recipes)
    ours_s, theirs_s = sum(clocks["ours"].values()), sum(clocks["authors"].values())
    if floor:  # the least any pipeline that decodes every epoch spends a pair: the most it can be theirs
        extra["uncached_floor_ms_per_pair"] = floor
        extra["uncached_ceiling_vs_authors"] = 1000 * theirs_s / n / sum(floor.values())
    return {
        "pairs": n,
        "image_size": image_size,
        "source_size": source_size,
        "pairs_per_s_per_worker": n / ours_s,
        "authors_pairs_per_s_per_worker": n / theirs_s,
        "ours_vs_authors": theirs_s / ours_s,
        "ms_per_pair": {k: 1000 * v / n for k, v in clocks["ours"].items()},
        "authors_ms_per_pair": {k: 1000 * v / n for k, v in clocks["authors"].items()},
        "normalize_ms_per_pair_on_this_cpu": 1000 * normalize_s / n,
        "median_s": ours_s,
        **extra,
        **peak_memory_mb(),
    }


def _loader_rate(dataset, collate: Callable, batch: int, workers: int, batches: int, finish: Callable) -> float:
    """Pairs per second of a DataLoader with ``workers`` workers (batched by ``collate``, as the
    datamodule batches that dataset), ``finish`` run on each batch (the
    device side: transfer, decoding and augmentation for decode_on=gpu, normalisation), after a
    warm-up of as many batches as workers."""
    from torch.utils.data import DataLoader, RandomSampler

    from mean_geo.benchmarks.timing import sync

    sampler = RandomSampler(dataset, replacement=True, num_samples=batch * (batches + workers))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate)
    it = iter(loader)
    for _ in range(workers):
        finish(next(it))
    sync()
    start = time.perf_counter()
    for _ in range(batches):
        finish(next(it))
    sync()
    return batch * batches / (time.perf_counter() - start)


def loader_rates(
    device: torch.device, image_size: int, batch: int, workers: int, batches: int, source_size: int = 512
) -> dict:
    """The training loader alone, in pairs/s with ``workers`` workers, both ways: decode_on=cpu (the
    batch moved to ``device`` and normalised) and decode_on=gpu (decoded and augmented on ``device``
    by the datamodule's own code); and the device's share of decode_on=gpu alone, in seconds per
    batch (it runs in the training stream, so it adds to each step instead of overlapping it)."""
    from torch.utils.data import DataLoader

    from mean_geo.benchmarks.timing import sync
    from mean_geo.data.augment import COLOR_JITTER, ViewRecipe, mean_fill, normalize_batch
    from mean_geo.data.datasets import PairedViewsDataset, collate_pairs
    from mean_geo.data.device_decode import EncodedPairsDataset, collate_encoded, finish_encoded_batch

    recipes = {v: ViewRecipe(image_size, rotate=v == "satellite", jitter=COLOR_JITTER[v]) for v in COLOR_JITTER}
    fill = mean_fill(None)
    with tempfile.TemporaryDirectory(prefix="bench_loader_rates_") as tmp:
        files = write_images(Path(tmp), 4, 4, source_size)
        cpu_set = PairedViewsDataset(files, recipes["drone"], recipes["satellite"], fill=fill)

        def finish_cpu(b):
            drone, sat = (b[view].to(device, non_blocking=True) for view in ("drone", "satellite"))
            return normalize_batch(drone, None, None), normalize_batch(sat, None, None)

        on_cpu = _loader_rate(cpu_set, collate_pairs, batch, workers, batches, finish_cpu)
        gpu_set = EncodedPairsDataset(files, recipes["drone"], recipes["satellite"], fill=fill)

        def finish_gpu(b):  # what Lightning's transfer and the datamodule's on_after_batch_transfer do
            moved = {k: x.to(device) if isinstance(x, torch.Tensor) else x for k, x in b.items()}
            views = finish_encoded_batch(moved, recipes["drone"], recipes["satellite"], fill)
            return normalize_batch(views["drone"], None, None), normalize_batch(views["satellite"], None, None)

        on_device = _loader_rate(gpu_set, collate_encoded, batch, workers, batches, finish_gpu)
        ready = list(DataLoader(gpu_set, batch_size=batch, num_workers=0, collate_fn=collate_encoded))[:batches]
        finish_gpu(ready[0])  # warm-up
        sync()
        start = time.perf_counter()
        for b in ready:
            finish_gpu(b)
        sync()
        device_s = (time.perf_counter() - start) / len(ready)
    return {
        "workers": workers,
        "loader_pairs_per_s": on_cpu,
        "loader_gpu_decode_pairs_per_s": on_device,
        "gpu_decode_device_s_per_batch": device_s,
    }
