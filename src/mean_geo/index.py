"""``python -m mean_geo.index gallery_dir=… ckpt=… out=…``: embed a folder of satellite tiles.

The index file (:mod:`mean_geo.retrieval.index_store`) holds the L2-normalised embeddings, the tile
paths, ids, coordinates where known (see :mod:`mean_geo.inference.geo`) and the model fingerprint.
Embedding runs through Lightning's predict loop, so ``hardware=ddp`` spreads it over GPUs/nodes; it
proceeds in parts written atomically into ``<out>.parts/``, so an interrupted run continues where it
stopped, and the index itself appears only when complete.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from mean_geo.cli.hydra_app import hydra_app
from mean_geo.data.datasets import ImageFiles
from mean_geo.data.layouts import list_images
from mean_geo.data.transforms import eval_transform
from mean_geo.errors import MeanGeoError, whole_number
from mean_geo.inference.geo import locate_tiles_on_ground
from mean_geo.inference.loading import load_model
from mean_geo.retrieval.index_store import write_index
from mean_geo.utils.output import writable_file

if TYPE_CHECKING:  # Lightning loads with the embedding, not with --help or a bad value (see mean_geo.train)
    import lightning as L

log = logging.getLogger(__name__)
PARTS_VERSION = 2
STORABLE_FEATURES = (
    "sift",
    "orb",
)  # positions in part files are gallery positions (version 1: positions within the part)


def build_index(
    gallery_dir: str | Path,
    ckpt: str | Path,
    out: str | Path,
    trainer: L.Trainer,
    batch_size: int = 64,
    num_workers: int = 2,
    part_size: int = 4096,
    coords_csv: str | Path | None = None,
    flip_tta: bool = False,
    features: str | None = None,
) -> Path | None:
    """Embed every tile; returns the index path (on global rank 0; None on other ranks).

    ``flip_tta``: each tile's embedding is of it and its mirror image (``eval.flip_tta``); the index
    records it and :func:`~mean_geo.inference.localization.localize` embeds the photos alike.
    ``features`` (``sift`` or ``orb``): each tile's local features are stored too, so ``localize
    --refine`` with that matcher computes only the photo's."""
    from mean_geo.training.index_pipeline import embed_in_parts

    for key, value, least in (
        ("batch_size", batch_size, 1),
        ("num_workers", num_workers, 0),
        ("part_size", part_size, 1),
    ):
        whole_number(key, value, least)
    out = Path(out).expanduser()
    if out.exists():
        raise MeanGeoError(f"out={out}: exists; choose another name (an index is never overwritten)")
    writable_file(out, "out", create=False)  # and its parts folder beside it: before any tile is embedded
    root = Path(gallery_dir).expanduser()
    if not root.is_dir():
        raise MeanGeoError(f"gallery_dir={root}: no such folder")
    if features is not None and features not in STORABLE_FEATURES:
        raise MeanGeoError(f"features={features}: expected one of {', '.join(STORABLE_FEATURES)} (or null)")
    paths = list_images([root], "gallery_dir")
    coords, geometries = locate_tiles_on_ground(paths, root, coords_csv)
    missing = sum(c is None for c in coords)
    if missing and (coords_csv or missing < len(coords)):
        log.warning(
            "%d of %d tiles have no coordinates (not in coords_csv, no GeoTIFF tags, world file or z/x/y name): "
            "localize gives no position or metres for them",
            missing,
            len(coords),
        )
    loaded = load_model(ckpt)
    tiles = ImageFiles(paths, eval_transform(loaded.image_size, loaded.mean, loaded.std))
    embeddings = embed_in_parts(
        tiles,
        loaded.model,
        loaded.model.embedding_dim,
        flip_tta=flip_tta,
        parts_dir=Path(f"{out}.parts"),
        # flip_tta only when set: parts an interrupted run of 0.2 left are still reused
        manifest={
            "fingerprint": loaded.fingerprint,
            "version": PARTS_VERSION,
            **({"flip_tta": True} if flip_tta else {}),
        },
        trainer=trainer,
        batch_size=batch_size,
        num_workers=num_workers,
        part_size=part_size,
    )
    if embeddings is None:
        return None
    stored = None
    if features is not None:
        from mean_geo.inference.refinement import tile_features
        from mean_geo.localization.matching import MAX_SIDE, build_matcher

        log.info("computing the tiles' %s features", features)
        stored = tile_features(paths, build_matcher(features), MAX_SIDE)
    placed = [g.as_list() if g is not None else None for g in geometries]
    return write_index(
        out, embeddings, paths, root, coords, loaded.fingerprint, loaded.image_size, flip_tta, placed, stored
    )


@hydra_app("index")
def main(cfg: DictConfig) -> None:
    from mean_geo.training.composition import build_trainer, to_plain
    from mean_geo.training.index_pipeline import PartWriter

    # training's use_distributed_sampler is false (its batch sampler splits batches per rank); the
    # tiles are split by Lightning's sampler, or every rank would embed every tile
    trainer_cfg = {**to_plain(cfg.trainer), "use_distributed_sampler": True}
    trainer = build_trainer(trainer_cfg, callbacks=[PartWriter()], logger=False)
    gallery = Path(cfg.gallery_dir).expanduser()
    if gallery.is_file():  # a map: its tiles first, beside the index
        from mean_geo.localization.tiling import tiles_for_index

        out_path = Path(cfg.out).expanduser()
        gallery = tiles_for_index(gallery, out_path.with_name(f"{out_path.stem}_tiles"), cfg.tile_m, cfg.tile_overlap)
        log.info("indexing the tiles of %s in %s", cfg.gallery_dir, gallery)
    out = build_index(
        gallery,
        cfg.ckpt,
        cfg.out,
        trainer,
        cfg.batch_size,
        cfg.num_workers,
        cfg.part_size,
        cfg.coords_csv,
        cfg.flip_tta,
        cfg.features,
    )
    if out is not None:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
