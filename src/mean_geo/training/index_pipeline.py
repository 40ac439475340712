"""The index's embedding of many images through Lightning's predict loop, so ``hardware=ddp`` spreads the work over
GPUs and nodes, in parts written atomically: an interrupted run continues where it stopped."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from mean_geo.errors import MeanGeoError
from mean_geo.models.mean import retrieval_embedding
from mean_geo.utils.atomic import atomic_path, write_text

log = logging.getLogger(__name__)


class Embedder(L.LightningModule):
    """The retrieval embedding alone, for ``trainer.predict`` (any strategy, any number of devices)."""

    def __init__(self, model: torch.nn.Module, flip_tta: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        self.flip_tta = flip_tta

    def predict_step(self, batch, batch_idx: int):
        images, positions = batch
        return retrieval_embedding(self.model, images, self.flip_tta).float(), positions


class PartWriter(BasePredictionWriter):
    """Each rank writes its embeddings of a part to its own file (atomically)."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.target: Path | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        emb = torch.cat([p[0] for p in predictions]) if predictions else torch.zeros(0)
        pos = torch.cat([p[1] for p in predictions]) if predictions else torch.zeros(0, dtype=torch.long)
        log.info(
            "%s: rank %d of %d embedded %d tiles",
            Path(str(self.target)).name,
            trainer.global_rank,
            trainer.world_size,
            len(pos),
        )
        target = Path(f"{self.target}.rank{trainer.global_rank}")
        with atomic_path(target) as partial:
            save_file({"embeddings": emb.contiguous(), "positions": pos.long().contiguous()}, str(partial))


def embed_in_parts(
    dataset: Dataset,
    model: torch.nn.Module,
    embedding_dim: int,
    parts_dir: Path,
    manifest: dict,
    trainer: L.Trainer,
    batch_size: int,
    num_workers: int,
    part_size: int,
    flip_tta: bool = False,
) -> torch.Tensor | None:
    """Embeddings of every item of ``dataset`` (``(image, position)`` pairs), on global rank 0
    (None elsewhere).  Parts already in ``parts_dir`` from an interrupted run with the same
    ``manifest`` are reused; the folder is removed once everything is gathered."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    manifest = {**manifest, "n": len(dataset), "part_size": part_size}
    manifest_file = parts_dir / "manifest.json"
    if manifest_file.exists() and json.loads(manifest_file.read_text()) != manifest:
        raise MeanGeoError(f"{parts_dir}: left by a run with another model or gallery; remove it to start over")
    write_text(manifest_file, json.dumps(manifest))
    writer = next((c for c in trainer.callbacks if isinstance(c, PartWriter)), None)
    if writer is None:
        raise ValueError("the trainer needs a PartWriter callback")
    embedder = Embedder(model, flip_tta)
    n = len(dataset)
    n_parts = (n + part_size - 1) // part_size
    world = trainer.world_size
    pin = trainer.strategy.root_device.type == "cuda"  # pinned pages copy to a GPU asynchronously
    for k in range(n_parts):
        part = parts_dir / f"part_{k:05d}"
        if all(Path(f"{part}.rank{r}").exists() for r in range(world)):
            continue  # done by an earlier (interrupted) run
        subset = torch.utils.data.Subset(dataset, range(k * part_size, min(n, (k + 1) * part_size)))
        loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers, shuffle=False, pin_memory=pin)
        writer.target = part
        trainer.predict(embedder, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier()
    if not trainer.is_global_zero:
        return None
    embeddings = torch.zeros(n, embedding_dim)
    seen = torch.zeros(n, dtype=torch.bool)
    for k in range(n_parts):
        for r in range(world):
            shard = load_file(str(parts_dir / f"part_{k:05d}.rank{r}"))
            idx = shard["positions"]
            embeddings[idx] = shard["embeddings"]
            seen[idx] = True
    if not bool(seen.all()):
        raise MeanGeoError(f"{parts_dir}: parts are incomplete; run the same command again")
    shutil.rmtree(parts_dir)
    return embeddings
