"""``python -m mean_geo.index gallery_dir=… ckpt=… out=…``: embed a folder of satellite tiles.

The index file (safetensors) holds the L2-normalised embeddings, and in its metadata the tile
paths, ids (folder or file name), coordinates where known (see :mod:`mean_geo.geo`) and the model
fingerprint.  Embedding runs through Lightning's predict loop, so ``hardware=ddp`` spreads it over
GPUs/nodes; it proceeds in parts written atomically into ``<out>.parts/``, so an interrupted run
continues where it stopped, and the index itself appears only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from mean_geo.cli import CONF_DIR, report_user_errors
from mean_geo.data.datasets import load_rgb
from mean_geo.data.layouts import IMAGE_SUFFIXES, check_image_file, images_under
from mean_geo.data.transforms import eval_transform
from mean_geo.errors import MeanGeoError
from mean_geo.geo import locate_tiles
from mean_geo.hub import InferenceModel, load_model

INDEX_FORMAT = "mean_geo-index/1"


class TileFolder(Dataset):
    """Images of a folder tree, in sorted order: (image, position)."""

    def __init__(self, paths: list[Path], image_size: int, mean=None, std=None) -> None:
        self.paths = paths
        self.transform = eval_transform(image_size, mean, std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(load_rgb(self.paths[i])), i


class Embedder(L.LightningModule):
    """Just the forward pass, for ``trainer.predict`` (any strategy, any number of devices)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def predict_step(self, batch, batch_idx: int):
        images, positions = batch
        return self.model(images).float(), positions


class PartWriter(BasePredictionWriter):
    """Each rank writes its embeddings of a part to its own file (atomically)."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.target: Path | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        emb = torch.cat([p[0] for p in predictions]) if predictions else torch.zeros(0)
        pos = torch.cat([p[1] for p in predictions]) if predictions else torch.zeros(0, dtype=torch.long)
        target = Path(f"{self.target}.rank{trainer.global_rank}")
        tmp = target.with_suffix(".tmp")
        save_file({"embeddings": emb.contiguous(), "positions": pos.long().contiguous()}, str(tmp))
        os.replace(tmp, target)


def list_tiles(gallery_dir: str | Path) -> tuple[Path, list[Path]]:
    root = Path(gallery_dir).expanduser()
    if not root.is_dir():
        raise MeanGeoError(f"gallery_dir={root}: no such folder")
    paths = images_under(root)
    if not paths:
        raise MeanGeoError(f"gallery_dir={root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for p in paths:
        check_image_file(p)
    return root, paths


def tile_id(path: Path, root: Path) -> str:
    """Dataset galleries keep one folder per place (``<id>/<image>``); elsewhere the file stem."""
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else path.stem


def build_index(
    gallery_dir: str | Path,
    ckpt: str | Path,
    out: str | Path,
    trainer: L.Trainer,
    batch_size: int = 64,
    num_workers: int = 2,
    part_size: int = 4096,
    coords_csv: str | Path | None = None,
) -> Path | None:
    """Embed every tile; returns the index path (on global rank 0; None on other ranks)."""
    for key, value, least in (
        ("batch_size", batch_size, 1),
        ("num_workers", num_workers, 0),
        ("part_size", part_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise MeanGeoError(f"{key}={value!r}: expected a whole number >= {least}")
    out = Path(out).expanduser()
    if out.exists():
        raise MeanGeoError(f"out={out}: exists; choose another name (an index is never overwritten)")
    root, paths = list_tiles(gallery_dir)
    coords = locate_tiles(paths, root, coords_csv)
    loaded: InferenceModel = load_model(ckpt)
    parts_dir = Path(f"{out}.parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"fingerprint": loaded.fingerprint, "n": len(paths), "part_size": part_size}
    manifest_file = parts_dir / "manifest.json"
    if manifest_file.exists() and json.loads(manifest_file.read_text()) != manifest:
        raise MeanGeoError(f"{parts_dir}: left by a run with another model or gallery; remove it to start over")
    manifest_file.write_text(json.dumps(manifest))
    writer = next(c for c in trainer.callbacks if isinstance(c, PartWriter))
    embedder = Embedder(loaded.model)
    n_parts = (len(paths) + part_size - 1) // part_size
    world = trainer.world_size
    for k in range(n_parts):
        part = parts_dir / f"part_{k:05d}"
        if all(Path(f"{part}.rank{r}").exists() for r in range(world)):
            continue  # done by an earlier (interrupted) run
        sl = paths[k * part_size : (k + 1) * part_size]
        dataset = TileFolder(sl, loaded.image_size, loaded.mean, loaded.std)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
        writer.target = part
        trainer.predict(embedder, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()
    if not trainer.is_global_zero:
        return None
    embeddings = torch.zeros(len(paths), loaded.model.embedding_dim)
    seen = torch.zeros(len(paths), dtype=torch.bool)
    for k in range(n_parts):
        offset = k * part_size
        for r in range(world):
            shard = load_file(str(parts_dir / f"part_{k:05d}.rank{r}"))
            idx = shard["positions"] + offset
            embeddings[idx] = shard["embeddings"]
            seen[idx] = True
    if not bool(seen.all()):
        raise MeanGeoError(f"{parts_dir}: parts are incomplete; run the same command again")
    metadata = {
        "format": INDEX_FORMAT,
        "fingerprint": loaded.fingerprint,
        "image_size": str(loaded.image_size),
        "root": str(root),
        "tiles": json.dumps(
            [{"path": str(p), "id": tile_id(p, root), "latlon": c} for p, c in zip(paths, coords, strict=True)]
        ),
    }
    tmp = out.with_name(out.name + ".tmp")
    save_file({"embeddings": embeddings.contiguous()}, str(tmp), metadata=metadata)
    os.replace(tmp, out)
    shutil.rmtree(parts_dir)
    return out


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="index")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from mean_geo.composition import build_trainer

    trainer = build_trainer(cfg.trainer, callbacks=[PartWriter()], logger=False)
    out = build_index(
        cfg.gallery_dir, cfg.ckpt, cfg.out, trainer, cfg.batch_size, cfg.num_workers, cfg.part_size, cfg.coords_csv
    )
    if out is not None:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
