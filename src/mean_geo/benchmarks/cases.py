"""Benchmark cases.  Each runs in its own process (see ``__main__``) so its peak memory is its own."""

from __future__ import annotations

import contextlib
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mean_geo.benchmarks.timing import median_time, peak_memory_mb, sync

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _autocast(precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(DEVICE, dtype=dtype)


def _setup(backbone: str, channels_last: bool, batch: int, image_size: int, num_classes: int = 120):
    """Model + loss on the device, in the asked memory format, and a random batch of images."""
    from mean_geo.losses import MEANLoss
    from mean_geo.models.mean import MEAN

    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = MEAN(num_classes, backbone=backbone).to(DEVICE).to(memory_format=memory_format)
    images = torch.randn(batch, 3, image_size, image_size, device=DEVICE).to(memory_format=memory_format)
    return model, MEANLoss().to(DEVICE), images


def _our_step(model, loss, drone: torch.Tensor, sat: torch.Tensor, precision: str, grad_cache_chunk: int | None = None):
    """One optimisation step of ours, as ``MEANLitModule.training_step`` runs it (one backbone pass
    for both views; with ``grad_cache_chunk``, the backbone in chunks: gradient caching), with its
    own AdamW and grad scaler."""
    from mean_geo.training.grad_cache import grad_cached_backward

    model.train()
    opt = torch.optim.AdamW([*model.parameters(), *loss.parameters()], lr=1e-4)
    scaler = torch.amp.GradScaler(DEVICE, enabled=precision == "fp16")
    labels = torch.arange(drone.shape[0], device=DEVICE)

    def step():
        opt.zero_grad(set_to_none=True)
        with _autocast(precision):
            if grad_cache_chunk is None:
                scaler.scale(loss(*model.forward_pair(drone, sat), labels)["loss"]).backward()
            else:
                backward = lambda t: scaler.scale(t).backward()  # noqa: E731
                grad_cached_backward(model, loss, drone, sat, labels, grad_cache_chunk, backward=backward)
        scaler.step(opt)
        scaler.update()

    return step


def train_step(
    image_size: int,
    precision: str,
    batch: int,
    channels_last: bool = False,
    backbone: str = "convnext_tiny.fb_in22k_ft_in1k",
    repeats: int = 3,
    grad_cache_chunk: int | None = None,
    compile: bool = False,
) -> dict:
    """Forward of both views + all three losses + backward + AdamW step; pairs/s and images/s.
    ``grad_cache_chunk``: the backbone in chunks of that many pairs (peak memory of a chunk);
    ``compile``: the backbone through ``torch.compile`` (its compile time is in the warm-up run)."""
    model, loss, drone = _setup(backbone, channels_last, batch, image_size)
    if compile:
        model.backbone = torch.compile(model.backbone)
    step = _our_step(model, loss, drone, torch.randn_like(drone), precision, grad_cache_chunk)

    t = median_time(step, repeats=repeats)
    return {**t, "pairs_per_s": batch / t["median_s"], "images_per_s": 2 * batch / t["median_s"], **peak_memory_mb()}


def embed(
    image_size: int,
    precision: str,
    batch: int,
    channels_last: bool = False,
    backbone: str = "convnext_tiny.fb_in22k_ft_in1k",
    repeats: int = 3,
) -> dict:
    """Inference embedding throughput (what gallery indexing and evaluation cost)."""
    model, _, x = _setup(backbone, channels_last, batch, image_size)
    model.eval()

    def run():
        with torch.inference_mode(), _autocast(precision):
            model(x)

    t = median_time(run, repeats=repeats)
    return {**t, "images_per_s": batch / t["median_s"], **peak_memory_mb()}


NOISE = 2.2  # spread of embeddings around their place's centre (see _problem)


def _problem(n_query: int, n_gallery: int, positives: int, dim: int = 768, seed: int = 0):
    """Random unit embeddings with University-1652-like labels: ``positives`` gallery items per
    place, queries drawn from the first 701 places (the rest are distractor places).  The noise
    around each place's centre is set so the metrics resemble a trained model's (R@1 ≈ 90 % D→S,
    AP ≈ 95 % S→D; the paper reports 93.6 / 93.5), not a trivially perfect 100 %: how many
    negatives outscore the positives is what an evaluator's work depends on.  Components are
    rounded to multiples of 2^-10: every dot product is then exact in fp32 whatever the summation
    order, so both implementations rank the same numbers (exact ties included) and the metrics can
    be compared for equality; with unrounded floats, matmul and matvec round differently."""
    rng = np.random.default_rng(seed)
    gl = np.arange(n_gallery) // positives
    ql = rng.integers(0, min(701, gl.max() + 1), size=n_query)
    centres = rng.standard_normal((gl.max() + 1, dim)).astype(np.float32)

    def unit(x):
        return (np.round(x / np.linalg.norm(x, axis=1, keepdims=True) * 1024) / 1024).astype(np.float32)

    qf = unit(centres[ql] + NOISE * rng.standard_normal((n_query, dim)).astype(np.float32))
    gf = unit(centres[gl] + NOISE * rng.standard_normal((n_gallery, dim)).astype(np.float32))
    return qf, ql, gf, gl


def evaluation(n_query: int, n_gallery: int, positives: int, repeats: int = 3) -> dict:
    """Our batched evaluator vs the official per-query loop on the same problem; metrics must agree."""
    from mean_geo.retrieval.evaluate import evaluate
    from mean_geo.retrieval.official import official_evaluate

    qf, ql, gf, gl = _problem(n_query, n_gallery, positives)
    tq, tg = torch.from_numpy(qf).to(DEVICE), torch.from_numpy(gf).to(DEVICE)
    ours = median_time(lambda: evaluate(tq, ql, tg, gl), repeats=repeats)
    ref = median_time(lambda: official_evaluate(qf, ql, gf, gl), repeats=1, warmup=0)
    got, expected = evaluate(tq, ql, tg, gl), official_evaluate(qf, ql, gf, gl)
    agree = all(abs(got[k] - expected[k]) < 1e-6 for k in expected)
    if not agree:
        raise AssertionError(f"metrics differ: ours {got} vs official loop {expected}")
    return {
        "ours_s": ours["median_s"],
        "official_loop_s": ref["median_s"],
        "speedup": ref["median_s"] / ours["median_s"],
        "metrics": got,
        "metrics_equal": agree,
        **peak_memory_mb(),
    }


def rerank(n_query: int, n_gallery: int, positives: int, reference: bool = False) -> dict:
    """k-reciprocal re-ranking (k1 20, k2 6, λ 0.3) of a University-1652-shaped problem: time and
    peak memory of the batched version; with ``reference``, also the dense per-item version on the
    same problem (distances must agree) — only affordable at small sizes: it holds (N, N) matrices."""
    from mean_geo.retrieval.official import official_k_reciprocal
    from mean_geo.retrieval.rerank import k_reciprocal_distances

    qf, _, gf, _ = _problem(n_query, n_gallery, positives)
    tq, tg = torch.from_numpy(qf).to(DEVICE), torch.from_numpy(gf).to(DEVICE)
    ours = median_time(lambda: k_reciprocal_distances(tq, tg), repeats=1, warmup=0)
    n = n_query + n_gallery
    out = {
        "ours_s": ours["median_s"],
        # what the dense version would hold: the (N, N) distances, V and the neighbour order, float32/int64
        "dense_matrices_gb": round(n * n * (4 + 4 + 8) / 1e9, 2),
        **peak_memory_mb(),
    }
    if reference:
        got = k_reciprocal_distances(tq.double(), tg.double()).cpu().numpy()
        ref = median_time(lambda: official_k_reciprocal(qf, gf), repeats=1, warmup=0)
        expected = official_k_reciprocal(qf, gf)
        out.update(
            reference_s=ref["median_s"],
            speedup=ref["median_s"] / ours["median_s"],
            max_abs_difference=float(np.abs(got - expected).max()),
        )
    return out


def search(n_gallery: int, n_query: int, backend: str, dtype: str = "fp32", repeats: int = 1) -> dict:
    """Exact top-10 of ``n_query`` queries in a gallery of ``n_gallery`` 768-d embeddings.

    ``backend="auto"`` first calibrates in a fresh cache folder (its seconds and verdict are part of
    the result), then times the search as a user's second call runs it: with the verdict cached."""
    import tempfile

    from mean_geo.retrieval import backend_choice
    from mean_geo.retrieval.search import topk_search

    gen = torch.Generator().manual_seed(0)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    gallery = torch.nn.functional.normalize(torch.randn(n_gallery, 768, generator=gen), dim=1).to(torch_dtype)
    query = torch.nn.functional.normalize(torch.randn(n_query, 768, generator=gen), dim=1).to(torch_dtype)
    gallery, query = gallery.to(DEVICE), query.to(DEVICE)
    extra: dict = {}
    if backend == "auto":
        os.environ["MEAN_GEO_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_search_cache_")
        start = time.perf_counter()
        shape = (n_query, n_gallery, 768, 10, query.device, query.dtype)
        extra["chosen"] = backend_choice.choose_backend(*shape, search=topk_search)
        extra["calibration_s"] = time.perf_counter() - start
    t = median_time(lambda: topk_search(query, gallery, k=10, backend=backend), repeats=repeats, warmup=0)
    return {**t, **extra, **peak_memory_mb()}


def _timed_steps(steps: dict, repeats: int) -> dict[str, list[float]]:
    """Run the steps interleaved (A, B, A, B, …) after one warm-up each, so slow drifts of a shared
    machine hit both alike; returns every step's seconds per name."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def reference_train_step(
    image_size: int, batch: int, precision: str, repeats: int = 5, channels_last: bool = True
) -> dict:
    """The authors' model (imported from the user's checkout in MEAN_REF) against ours, interleaved
    in one process, same batch, same precision, same three losses.  Each runs as its code runs by
    default: ours channels-last with the fast depthwise backward (``train.yaml``), theirs NCHW.

    Skipped (a reason is returned) when MEAN_REF is unset or their code cannot be imported; their
    backbone asks timm for pretrained weights, which is turned off here (no download needed).
    """
    ref = os.environ.get("MEAN_REF")
    if not ref or not Path(ref, "sample4geo").is_dir():
        return {"skipped": "set MEAN_REF=/path/to/a/checkout/of/ISChenawei/MEAN"}
    # ours first: their module re-registers timm's "convnext_tiny" with their own class
    model, loss, drone = _setup("convnext_tiny.fb_in22k_ft_in1k", channels_last, batch, image_size)
    sys.path.insert(0, ref)
    try:
        import timm

        real_create = timm.models.create_model

        def no_download(*args, **kwargs):
            kwargs["pretrained"] = False
            return real_create(*args, **kwargs)

        make_model = importlib.import_module("sample4geo.hand_convnext.ConvNext.make_model")
        make_model.create_model = no_download
        net = (
            importlib.import_module("sample4geo.hand_convnext.model")
            .two_view_net(120, block=2, return_f=True)
            .to(DEVICE)
        )
    except Exception as exc:  # noqa: BLE001 - their checkout, their errors: report and skip
        return {"skipped": f"authors' code did not import: {type(exc).__name__}: {exc}"[:300]}
    from mean_geo.losses import CDALoss, IdentityLoss, InfoNCELoss

    infonce, ce, cda = InfoNCELoss(), IdentityLoss(), CDALoss()
    net.train()
    their_opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    their_scaler = torch.amp.GradScaler(DEVICE, enabled=precision == "fp16")
    sat = torch.randn_like(drone)
    their_drone, their_sat = drone.contiguous(), sat.contiguous()
    labels = torch.arange(batch, device=DEVICE)

    def theirs():
        their_opt.zero_grad(set_to_none=True)
        with _autocast(precision):
            (a1, cls1, _, gap1, _), (a2, cls2, _, gap2, _) = net(their_sat, their_drone)
            total = infonce(gap1, gap2) + 0.1 * (ce(cls1, labels) + ce(cls2, labels)) + 1.3 * cda(a1, a2)
        their_scaler.scale(total).backward()
        their_scaler.step(their_opt)
        their_scaler.update()

    ours = _our_step(model, loss, drone, sat, precision)
    times = _timed_steps({"ours": ours, "theirs": theirs}, repeats)
    ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["theirs"])
    return {
        "median_s": theirs_s,
        "pairs_per_s": batch / theirs_s,
        "ours_interleaved_s": ours_s,
        "ours_vs_authors": theirs_s / ours_s,
        "runs_s": times,
        **peak_memory_mb(),
    }


def ddp_smoke(devices: int = 1, timeout_s: int = 300) -> dict:
    """``python -m mean_geo.train experiment=smoke hardware=ddp`` as a user runs it (NCCL, one
    process per GPU), in a fresh folder: wall time and the test R@1 it wrote."""
    import json
    import subprocess
    import tempfile

    if not torch.cuda.is_available():
        return {"skipped": "needs a CUDA GPU"}
    with tempfile.TemporaryDirectory() as work:
        command = [
            sys.executable,
            "-m",
            "mean_geo.train",
            "experiment=smoke",
            "hardware=ddp",
            f"trainer.devices={devices}",
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=timeout_s)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-400:]}")
        (metrics,) = Path(work, "logs", "smoke", "runs").glob("*/metrics.json")
        r1 = json.loads(metrics.read_text())["metrics"].get("test/d2s/R@1")
    return {"median_s": wall, "wall_s": wall, "test_d2s_R@1": r1, **peak_memory_mb()}


def loader(**kwargs) -> dict:
    """The training input pipeline, ours vs the authors' (:mod:`mean_geo.benchmarks.loader`)."""
    from mean_geo.benchmarks.loader import loader as run

    return run(**kwargs)


def starvation(
    image_size: int = 384,
    batch: int = 16,
    workers: int | None = None,
    batches: int = 20,
    backbone: str = "convnext_tiny.fb_in22k_ft_in1k",
    source_size: int = 512,
    on_cpu: bool = False,
) -> dict:
    """Is the GPU starved?  The training loader alone (decode_on=cpu and =gpu, with this node's CPU
    workers) against the model step alone (bf16, channels-last), in pairs/s.  ``on_cpu``: run it
    without a GPU anyway (the test of this case; its numbers mean nothing there)."""
    from mean_geo.benchmarks.loader import loader_rates

    if DEVICE != "cuda" and not on_cpu:
        return {"skipped": "no CUDA device: the starvation line compares a GPU's step with its loader"}
    workers = workers or min(16, os.cpu_count() or 1)
    rates = loader_rates(torch.device(DEVICE), image_size, batch, workers, batches, source_size)
    model, loss, drone = _setup(backbone, True, batch, image_size)
    step_s = median_time(_our_step(model, loss, drone, torch.randn_like(drone), "bf16"), repeats=5)["median_s"]
    step = batch / step_s
    # decode_on=gpu: the device decodes and augments in the training stream, then steps; the workers
    # only read bytes, so training runs at the slower of the two
    device_bound = batch / (step_s + rates["gpu_decode_device_s_per_batch"])
    return {
        **rates,
        "step_pairs_per_s": step,
        "train_pairs_per_s_with_gpu_decode": min(rates["loader_gpu_decode_pairs_per_s"], device_bound),
        "starved": rates["loader_pairs_per_s"] < step,
        "starved_with_gpu_decode": rates["loader_gpu_decode_pairs_per_s"] < device_bound,
        "median_s": step_s,
        **peak_memory_mb(),
    }


def dino_step(
    backbone: str,
    finetune: str,
    grad_checkpointing: bool = False,
    image_size: int = 224,
    batch: int = 8,
    repeats: int = 3,
) -> dict:
    """One training step of method=dino (both views, InfoNCE, AdamW on what trains) with the backbone
    fully, not at all, or LoRA-fine-tuned, with or without gradient checkpointing: seconds per step,
    trainable and total parameters, peak memory of the process (a fresh one per case)."""
    from mean_geo.files.specs import model_spec
    from mean_geo.losses import build_loss
    from mean_geo.models.registry import build_architecture

    torch.manual_seed(0)
    spec = {
        "architecture": "dino",
        "backbone": backbone,
        "pretrained": False,
        "finetune": finetune,
        "grad_checkpointing": grad_checkpointing,
    }
    model = build_architecture(model_spec(spec)).to(DEVICE)
    loss = build_loss({"name": "sample4geo"}).to(DEVICE)
    drone = torch.randn(batch, 3, image_size, image_size, device=DEVICE)
    step = _our_step(model, loss, drone, torch.randn_like(drone), "fp32")
    t = median_time(step, repeats=repeats)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {
        **t,
        "pairs_per_s": batch / t["median_s"],
        "trainable_m": trainable / 1e6,
        "total_m": total / 1e6,
        **peak_memory_mb(),
    }


def track(n_gallery: int, k: int, frames: int, image_size: int = 256, backbone: str = "resnet18") -> dict:
    """A flight of ``frames`` frames against a gallery of ``n_gallery`` tiles (a square grid 100 m
    apart, 512-d embeddings): frames per second of the top-``k`` search, of the online filter and of
    the offline smoother over those candidates, next to the embedding of one frame at a time (what a
    drone in flight runs) with the demo's ResNet-18.  Torch's threads as the machine gives them."""
    from mean_geo.localization.track import Frames, MotionModel, decode_offline, filter_online
    from mean_geo.retrieval.search import topk_search

    gen = torch.Generator().manual_seed(0)
    side = int(round(n_gallery**0.5))
    grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    positions = grid.double() * 100.0
    gallery = torch.nn.functional.normalize(torch.randn(len(grid), 512, generator=gen), dim=1)
    # a straight flight at 10 m/s, 1 frame a second; each frame looks like its nearest tile plus noise
    path = torch.stack([torch.arange(frames) * 10.0 % (side * 100.0), torch.full((frames,), side * 50.0)], 1)
    nearest = torch.cdist(path.double(), positions).argmin(1)
    queries = torch.nn.functional.normalize(gallery[nearest] + 0.06 * torch.randn(frames, 512, generator=gen), dim=1)
    found: dict = {}

    def search():
        found["scores"], found["idx"] = topk_search(queries, gallery, k=k, backend="torch")

    t_search = median_time(search, repeats=3)
    candidates = Frames(
        times_s=np.arange(frames, dtype=np.float64),
        positions_m=positions[found["idx"]].numpy(),
        scores=found["scores"].double().numpy(),
    )
    motion = MotionModel(position_sigma_m=100.0)
    t_online = median_time(lambda: filter_online(candidates, motion), repeats=3)
    t_offline = median_time(lambda: decode_offline(candidates, motion), repeats=3)
    model, _, x = _setup(backbone, False, 1, image_size)
    model.eval()

    def embed_one():
        with torch.inference_mode():
            model(x)

    t_embed = median_time(embed_one, repeats=5)
    return {
        "search_fps": frames / t_search["median_s"],
        "online_fps": frames / t_online["median_s"],
        "offline_fps": frames / t_offline["median_s"],
        "embed_fps": 1.0 / t_embed["median_s"],
        "median_s": t_online["median_s"] / frames,
        **peak_memory_mb(),
    }


def refine(photos: int = 10, side: int = 512, top_n: int = 5, matcher: str = "sift") -> dict:
    """Seconds per query: retrieval alone (embedding one photo, ResNet-18 at 256 px, and the top-N
    search) and with the top-N verified (``matcher``, photos and tiles at ``side`` px), the tiles'
    features cached (stored in the index) or computed per query.  The photos are nadir frames of a
    synthetic flight over 200 m tiles (``python -m mean_geo.synth --layout flights``); each one's
    candidates are its ``top_n`` nearest tiles, the right one among them."""
    import csv
    import tempfile

    from mean_geo.inference.geo import locate_tiles, raster_geometry
    from mean_geo.localization.matching import build_matcher, read_for_matching
    from mean_geo.localization.refine import Candidate, RefineSettings, refine
    from mean_geo.localization.track import to_local_m
    from mean_geo.synthetic.flights import FlightSpec, write_flights_world

    with tempfile.TemporaryDirectory() as tmp:
        spec = FlightSpec(flights=1, frames=photos, image_size=side, map_m=1200.0, fps=0.2, seed=1)
        world = write_flights_world(spec, Path(tmp) / "w")
        tiles = sorted((world / "tiles").glob("*.png"))
        centres = np.array(locate_tiles(tiles, world / "tiles"))
        frames = sorted((world / "flights" / "flight00" / "frames").glob("*.png"))
        with (world / "flights" / "flight00" / "truth.csv").open() as fh:
            truth = {r["path"]: (float(r["lat"]), float(r["lon"])) for r in csv.DictReader(fh)}
        m = build_matcher(matcher)
        settings = RefineSettings(top_n=top_n)
        grid = to_local_m(centres, tuple(centres.mean(axis=0)))
        cached, geometry = {}, {}
        for path in tiles:
            image, sx, sy = read_for_matching(path, side)
            cached[path] = m.features(image)
            geometry[path] = raster_geometry(path).resized(sx, sy)
        model, _, x = _setup("resnet18", False, 1, 256)
        model.eval()
        gallery = torch.nn.functional.normalize(torch.randn(len(tiles), model.embedding_dim), dim=1)
        times = {"retrieval": [], "cached": [], "uncached": []}
        accepted = 0
        for frame in frames:
            start = time.perf_counter()
            with torch.inference_mode():
                (model(x) @ gallery.T).topk(top_n)
            retrieval = time.perf_counter() - start
            here = to_local_m(np.array(truth[frame.name]), tuple(centres.mean(axis=0)))
            nearest = np.argsort(np.hypot(*(grid - here).T))[:top_n]
            for mode in ("cached", "uncached"):
                start = time.perf_counter()
                image, _, _ = read_for_matching(frame, side)
                photo = m.features(image)
                candidates = []
                for rank, i in enumerate(nearest, start=1):
                    if mode == "cached":
                        feats = cached[tiles[i]]
                    else:
                        feats = m.features(read_for_matching(tiles[i], side)[0])
                    candidates.append(Candidate(rank, tiles[i].stem, 1.0 / rank, feats, geometry[tiles[i]], None))
                position, _ = refine(photo, candidates, m, settings)  # as localize --refine runs it
                times[mode].append(retrieval + time.perf_counter() - start)
                if mode == "cached":
                    accepted += position.refined
            times["retrieval"].append(retrieval)
    med = {k: float(statistics.median(v)) for k, v in times.items()}
    return {
        "median_s": med["cached"],
        "retrieval_s": med["retrieval"],
        "refine_cached_s": med["cached"],
        "refine_uncached_s": med["uncached"],
        "accepted_share": accepted / len(frames),
        **peak_memory_mb(),
    }


def _write_big_map(path: Path, side: int, pixel_m: float = 0.5) -> int:
    """A ``side`` × ``side`` RGB GeoTIFF in UTM 32N (deflate, 512-px blocks), written a strip of
    blocks at a time from a textured 512-px pattern, so the bench process never holds the map."""
    import rasterio
    from rasterio.windows import Window

    from mean_geo.synthetic.world import generate_place

    pattern = np.clip(generate_place(0, 0, radius_m=128.0, cell_m=pixel_m).colour, 0, 255).astype(np.uint8)
    pattern = pattern.transpose(2, 0, 1)[:, :512, :512]
    transform = rasterio.transform.Affine(pixel_m, 0.0, 465000.0, 0.0, -pixel_m, 5247000.0)
    profile = dict(
        driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32632", transform=transform,
        compress="deflate", zlevel=1, tiled=True, blockxsize=512, blockysize=512, photometric="RGB", BIGTIFF="YES",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, side, 512):
            height = min(512, side - row)
            strip = np.tile(pattern[:, :height], (1, 1, side // 512 + 1))[:, :, :side]
            strip = np.roll(strip, row // 512 * 97, axis=2)  # not one block repeated: each row shifted
            dst.write(strip, window=Window(0, row, side, height))
    return side * side * 3


def tile_map(side: int = 20_000, tile_m: float = 256.0, overlap: float = 0.0) -> dict:
    """``python -m mean_geo.tile`` on a ``side`` × ``side``-pixel GeoTIFF at 0.5 m a pixel, run as
    users run it (its own process): wall time, tiles a second, and the process's peak memory next
    to the map's size decoded (the target: under 1 GB whatever the map's size)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench_tile_") as tmp:
        raster = Path(tmp) / "map.tif"
        t0 = time.perf_counter()
        decoded = _write_big_map(raster, side)
        write_s = time.perf_counter() - t0
        # the peak of the tiler's own memory: VmHWM (ru_maxrss would count this process's pages at the fork)
        code = (
            "import re, sys, time\n"
            "from mean_geo.tile import main\n"
            "t = time.perf_counter()\n"
            "rc = main(sys.argv[1:])\n"
            "print('WALL', time.perf_counter() - t)\n"
            "status = open('/proc/self/status').read()\n"
            "print('PEAK_KB', re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
            "sys.exit(rc)\n"
        )
        args = [str(raster), "--out", str(Path(tmp) / "tiles"), "--tile-m", str(tile_m), "--overlap", str(overlap)]
        done = subprocess.run([sys.executable, "-c", code, *args, "--quiet"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"tile failed: {done.stderr[-2000:]}")
        found = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("WALL", "PEAK_KB")))
        tiles = len(list((Path(tmp) / "tiles").glob("*.tif")))
    wall = float(found["WALL"])
    peak_mb = int(found["PEAK_KB"]) / 1024
    return {
        "median_s": wall,
        "tiles": tiles,
        "tiles_per_s": tiles / wall,
        "map_pixels": side * side,
        "map_decoded_mb": round(decoded / 2**20, 1),
        "peak_rss_mb": round(peak_mb, 1),  # the tiler's process (VmHWM), not this one
        "peak_vs_map": round(peak_mb / (decoded / 2**20), 4),
        "write_map_s": round(write_s, 1),
    }
