"""Training augmentation: each op's probability and effect, the OpenCV kernels against torchvision's
(the ops the pipeline used before), the device path against the CPU path, and the decoder."""

import io
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from mean_geo.data import augment
from mean_geo.data.augment import Draw, ViewRecipe, apply, draw, normalize_batch
from mean_geo.data.datasets import PairedViewsDataset, load_rgb, read_image
from mean_geo.data.device_decode import EncodedPairsDataset, collate_encoded, decode_and_augment, encode
from mean_geo.errors import DatasetLayoutError

FILL = augment.mean_fill(None)


def photo(size=96, seed=0, grain=0.0) -> torch.Tensor:
    """A smooth, colourful uint8 image (what photos are like: not noise), with some grain if asked."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=g)
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    image = image + grain * torch.randn(image.shape, generator=g)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def jpeg_file(path, image: torch.Tensor, **save) -> None:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, format="JPEG", quality=95, **save)


def within(count: int, n: int, p: float) -> bool:
    """A binomial count within 5 standard deviations of n·p."""
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_each_op_is_drawn_with_its_probability_and_range():
    torch.manual_seed(0)
    recipe = ViewRecipe(64, rotate=True, jitter=(0.15, 0.7, 0.3, 0.3))
    n = 4000
    draws = [draw(recipe) for _ in range(n)]
    count = {op: sum(op in d.ops for d in draws) for op in ("jpeg", "jitter", "blur", "sharpen", "erase")}
    assert within(count["jpeg"], n, 0.5) and within(count["jitter"], n, 0.5)
    assert within(count["blur"], n, 0.15) and within(count["sharpen"], n, 0.15)
    assert within(count["erase"], n, 0.3)
    for k in range(4):
        assert within(sum(d.turns == k for d in draws), n, 0.25)
    jittered = [d.jitter for d in draws if d.jitter]
    for op in augment.JITTER_OPS:  # the order is a random permutation: each op first a quarter of the time
        assert within(sum(j[0][0] == op for j in jittered), len(jittered), 0.25)
    factors = {op: [f for j in jittered for o, f in j if o == op] for op in augment.JITTER_OPS}
    for op, (low, high) in {"brightness": (0.85, 1.15), "contrast": (0.3, 1.7), "saturation": (0.7, 1.3)}.items():
        assert low <= min(factors[op]) and max(factors[op]) <= high
        assert max(factors[op]) - min(factors[op]) > 0.9 * (high - low)  # the whole range is used
    assert -0.3 <= min(factors["hue"]) < -0.28 and 0.28 < max(factors["hue"]) <= 0.3
    qualities = {d.jpeg_quality for d in draws if d.jpeg_quality}
    assert qualities == set(range(90, 101))
    sigmas = [d.filter[1] for d in draws if d.filter and d.filter[0] == "blur"]
    assert 0.1 <= min(sigmas) < 0.15 and 1.45 < max(sigmas) <= 1.5
    shares = [d.erase[2] * d.erase[3] / 64**2 for d in draws if d.erase]
    assert 0.015 < min(shares) and max(shares) < 0.11  # 2-10 % of the image (boxes are rounded)


def test_without_photometric_only_turns_are_drawn():
    torch.manual_seed(1)
    geometric = [draw(ViewRecipe(32, photometric=False, rotate=True)) for _ in range(200)]
    assert all(not d.ops for d in geometric) and {d.turns for d in geometric} == {0, 1, 2, 3}
    assert all(draw(ViewRecipe(32, photometric=False)) == Draw() for _ in range(20))


@pytest.mark.parametrize(
    "op, factor, max_diff, mean_diff",
    [
        ("brightness", 1.13, 1, 0.01),
        ("brightness", 0.86, 1, 0.01),
        ("contrast", 1.6, 2, 0.6),
        ("contrast", 0.4, 2, 0.6),
        ("saturation", 1.3, 1, 0.6),
        ("saturation", 0.7, 1, 0.6),
        ("hue", 0.21, 12, 1.5),  # OpenCV's hue is 8-bit (1/256 of a turn)
        ("hue", -0.27, 12, 1.5),
    ],
)
def test_opencv_jitter_does_what_torchvision_does(op, factor, max_diff, mean_diff):
    image = photo()
    d = Draw(jitter=[(op, factor)])
    ours = apply(image, d, ViewRecipe(96), FILL, kernels="cv2").int()
    reference = apply(image, d, ViewRecipe(96), FILL, kernels="torch").int()
    assert not torch.equal(reference, image.int()), "the op must change the image"
    diff = (ours - reference).abs()
    assert diff.max() <= max_diff and diff.float().mean() <= mean_diff, (diff.max(), diff.float().mean())


@pytest.mark.parametrize("kind, value", [("blur", 0.4), ("blur", 1.5), ("sharpen", 2.0)])
def test_opencv_blur_and_sharpen_do_what_torchvision_does(kind, value):
    image = photo(seed=3, grain=0.05)
    d = Draw(filter=(kind, value))
    ours = apply(image, d, ViewRecipe(96), FILL, kernels="cv2").int()
    reference = apply(image, d, ViewRecipe(96), FILL, kernels="torch").int()
    assert (ours - reference).abs().max() <= 1
    assert (reference - image.int()).abs().float().mean() > 0.05  # it does something


def test_a_whole_draw_is_the_same_augmentation_with_either_kernel():
    torch.manual_seed(2)
    recipe = ViewRecipe(64, rotate=True)
    image = photo(128, seed=4)
    for _ in range(30):
        d = draw(recipe)
        ours = apply(image, d, recipe, FILL, kernels="cv2").int()
        reference = apply(image, d, recipe, FILL, kernels="torch").int()
        assert ours.shape == (3, 64, 64)
        assert (ours - reference).abs().float().mean() < 2.0, d


def test_resize_erase_and_turns():
    image = photo(80)
    recipe = ViewRecipe(40)
    resized = apply(image, Draw(), recipe, FILL)
    assert torch.equal(resized, TF.resize(image, [40, 40], antialias=True))
    erased = apply(image, Draw(erase=(3, 5, 10, 7)), recipe, FILL)
    assert (erased[:, 3:13, 5:12] == torch.tensor(FILL, dtype=torch.uint8).view(3, 1, 1)).all()
    outside = torch.ones(40, 40, dtype=torch.bool)
    outside[3:13, 5:12] = False
    assert torch.equal(erased[:, outside], resized[:, outside])
    assert torch.equal(image, photo(80)), "the caller's image is not written to"
    for k in range(4):
        assert torch.equal(apply(image, Draw(turns=k), recipe, FILL), torch.rot90(resized, k, dims=(-2, -1)))
    assert FILL == (124, 116, 104)  # the ImageNet mean: 0 once normalised, as the reference erases


def test_jpeg_recompression_is_mild_and_at_the_drawn_quality():
    image = photo(96, seed=5)
    recipe = ViewRecipe(96)
    worst = apply(image, Draw(jpeg_quality=90), recipe, FILL).float()
    best = apply(image, Draw(jpeg_quality=100), recipe, FILL).float()
    mse_90, mse_100 = ((worst - image) ** 2).mean(), ((best - image) ** 2).mean()
    assert 0 < mse_100 < mse_90
    assert 10 * math.log10(255**2 / mse_90) > 35  # PSNR: artefacts, not damage


def test_normalize_batch():
    batch = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = normalize_batch(batch, mean, std)
    expected = (batch.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-5)
    assert normalize_batch(out, mean, std) is out


def test_collate_pairs_is_default_collate_in_channels_last_memory(tmp_path):
    """The same batch values as ``default_collate`` (labels, GTA-UAV's weights), stacked in the HWC
    memory the augmentation leaves; normalised, the batch is contiguous and equal either way."""
    from torch.utils.data import default_collate

    from mean_geo.data.datasets import WeightedPairsDataset, collate_pairs

    files = []
    for i in range(3):
        jpeg_file(tmp_path / f"d{i}.jpg", photo(64, seed=i))
        jpeg_file(tmp_path / f"s{i}.jpg", photo(64, seed=10 + i))
        files.append((tmp_path / f"d{i}.jpg", tmp_path / f"s{i}.jpg", i))
    recipes = ViewRecipe(48), ViewRecipe(48, rotate=True)
    for dataset in (PairedViewsDataset(files, *recipes), WeightedPairsDataset(files, [0.5, 0.25, 1.0], *recipes)):
        torch.manual_seed(3)
        items = [dataset[i] for i in range(3)]
        ours, reference = collate_pairs(items), default_collate(items)
        assert list(ours) == ["drone", "satellite", "label", "weight"][: len(items[0])] == list(ours)[: len(reference)]
        for mine, theirs in zip(ours.values(), reference, strict=True):
            assert mine.dtype == theirs.dtype and torch.equal(mine, theirs)
        assert ours["drone"].is_contiguous(memory_format=torch.channels_last)
        normal = normalize_batch(ours["drone"], None, None)
        assert normal.is_contiguous() and torch.equal(normal, normalize_batch(reference[0], None, None))


def test_read_image_sees_what_load_rgb_sees(tmp_path):
    base = photo(48, seed=6)
    cases = {}
    jpeg_file(tmp_path / "plain.jpg", base)
    cases["plain.jpg"] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg_file(tmp_path / "rotated.jpg", base[:, :, :24], exif=exif)
    cases["rotated.jpg"] = 0
    Image.fromarray(base.permute(1, 2, 0).numpy()).save(tmp_path / "tile.png")
    cases["tile.png"] = 0
    Image.fromarray(base.permute(1, 2, 0).numpy()).save(tmp_path / "tile.tif")
    cases["tile.tif"] = 0
    Image.fromarray(np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 28).save(tmp_path / "deep.png")
    cases["deep.png"] = 1  # 16-bit greyscale, scaled to 8 bits
    Image.fromarray(base.permute(1, 2, 0).numpy()).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cases["cmyk.jpg"] = 3
    for name, tolerance in cases.items():
        ours = read_image(tmp_path / name)
        reference = torch.from_numpy(np.asarray(load_rgb(tmp_path / name)).copy()).permute(2, 0, 1)
        assert ours.dtype == torch.uint8 and ours.shape == reference.shape, name
        assert (ours.int() - reference.int()).abs().max() <= tolerance, name
    assert read_image(tmp_path / "rotated.jpg").shape == (3, 24, 48)  # EXIF orientation applied


def test_a_large_jpeg_is_decoded_at_reduced_scale_never_below_the_training_size(tmp_path):
    big = TF.resize(photo(64, seed=7), [400, 400], antialias=True)
    jpeg_file(tmp_path / "big.jpg", big)
    assert read_image(tmp_path / "big.jpg", 100).shape == (3, 100, 100)  # 1/4 scale
    assert read_image(tmp_path / "big.jpg", 120).shape == (3, 200, 200)  # 1/2: 1/4 would be below 120
    assert read_image(tmp_path / "big.jpg", 300).shape == (3, 400, 400)
    assert read_image(tmp_path / "big.jpg").shape == (3, 400, 400)


def test_an_undecodable_file_is_one_line(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(DatasetLayoutError, match="broken.jpg: cannot be decoded as an image"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(DatasetLayoutError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")


def _pairs(tmp_path, n=6):
    pairs = []
    for i in range(n):
        jpeg_file(tmp_path / f"d{i}.jpg", photo(80, seed=10 + i))
        Image.fromarray(photo(72, seed=30 + i).permute(1, 2, 0).numpy()).save(tmp_path / f"s{i}.png")
        pairs.append((tmp_path / f"d{i}.jpg", tmp_path / f"s{i}.png", i))
    return pairs


def test_the_device_path_is_the_cpu_path_with_the_same_seed(tmp_path):
    """decode_on=gpu on CPU tensors: the worker draws what the CPU path draws (same seed, same
    order), the device decodes and augments with torchvision's kernels: the same batch up to the
    kernels' rounding; per-sample randomness; the same batch again under the same seed."""
    pairs = _pairs(tmp_path)
    drone, sat = ViewRecipe(48, jitter=(0.15, 0.7, 0.3, 0.3)), ViewRecipe(48, rotate=True)
    cpu = PairedViewsDataset(pairs, drone, sat, fill=FILL)
    device = EncodedPairsDataset(pairs, drone, sat, fill=FILL)

    def device_batch(seed):
        torch.manual_seed(seed)
        batch = collate_encoded([device[i] for i in range(len(pairs))])
        drones, sats, labels, dd, sd, flips = batch.values()
        assert isinstance(drones[0], np.ndarray) and isinstance(sats[0], torch.Tensor)  # JPEG bytes; PNG decoded
        cpu_device = torch.device("cpu")
        return (
            decode_and_augment(drones, dd, flips, drone, FILL, cpu_device),
            decode_and_augment(sats, sd, flips, sat, FILL, cpu_device),
            labels,
        )

    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        items = [cpu[i] for i in range(len(pairs))]
        d_gpu, s_gpu, labels = device_batch(seed)
        d_cpu, s_cpu = torch.stack([x[0] for x in items]), torch.stack([x[1] for x in items])
        assert labels.tolist() == list(range(len(pairs)))
        assert d_gpu.shape == d_cpu.shape == (len(pairs), 3, 48, 48) and d_gpu.dtype == torch.uint8
        assert (d_gpu.int() - d_cpu.int()).abs().float().mean() < 2.0
        assert (s_gpu.int() - s_cpu.int()).abs().float().mean() < 2.0
        again = device_batch(seed)
        assert torch.equal(again[0], d_gpu) and torch.equal(again[1], s_gpu)
    # per-sample randomness: one image, six draws, six different results
    same = [(pairs[0][0], pairs[0][1], 0)] * 6
    torch.manual_seed(5)
    batch = collate_encoded([EncodedPairsDataset(same, drone, sat, fill=FILL)[i] for i in range(6)])
    out = decode_and_augment(
        batch["satellite_encoded"], batch["satellite_draws"], batch["flips"], sat, FILL, torch.device("cpu")
    )
    assert len({tuple(x.flatten()[:500].tolist()) for x in out}) == 6


def test_encode_sends_only_upright_baseline_jpegs_as_bytes(tmp_path):
    jpeg_file(tmp_path / "plain.jpg", photo(40))
    exif = Image.Exif()
    exif[0x0112] = 3
    jpeg_file(tmp_path / "turned.jpg", photo(40), exif=exif)
    assert isinstance(encode(tmp_path / "plain.jpg", 32), np.ndarray)
    turned = encode(tmp_path / "turned.jpg", 32)
    assert isinstance(turned, torch.Tensor) and torch.equal(turned, read_image(tmp_path / "turned.jpg", 32))
    buffer = io.BytesIO()
    Image.fromarray(photo(40).permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    (tmp_path / "tile.png").write_bytes(buffer.getvalue())
    assert isinstance(encode(tmp_path / "tile.png", 32), torch.Tensor)


FORKED_WORKER_SCRIPT = """
import cv2, numpy as np, torch
from torch.utils.data import DataLoader, Dataset
{import_first}
cv2.setNumThreads(2)  # the parent's own OpenCV work, on OpenCV's thread pool
for _ in range(5):
    cv2.GaussianBlur(np.zeros((1500, 1500, 3), np.uint8), (0, 0), 3)
{import_after}
from mean_geo.data.augment import Draw, ViewRecipe, apply, mean_fill

class Blurred(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        d = Draw(jitter=[("brightness", 1.1)], filter=("blur", 1.0))
        return apply(torch.full((3, 64, 64), 100, dtype=torch.uint8), d, ViewRecipe(64), mean_fill(None))

batches = list(DataLoader(Blurred(), batch_size=2, num_workers=1, multiprocessing_context="fork"))
print("ok", len(batches), cv2.getNumThreads())
"""


@pytest.mark.parametrize("before", [True, False], ids=["imported-before-the-pool", "imported-after"])
def test_a_forked_worker_runs_opencv_after_the_parent_used_its_thread_pool(before):
    """OpenCV's thread pool does not survive fork(): a DataLoader worker forked from a process whose
    pool had started hung in its first OpenCV call (CI hung here for an hour).  Run it in a child
    process with a deadline, so a hang is a failure."""
    import subprocess
    import sys

    line = "import mean_geo.data.augment"
    script = FORKED_WORKER_SCRIPT.format(import_first=line if before else "", import_after="" if before else line)
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked DataLoader worker hung in OpenCV")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", "2", "2"]  # and the parent keeps the threads it asked for
