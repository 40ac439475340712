"""``python -m mean_geo.eval ckpt=…``: evaluate a training checkpoint in both directions.

The checkpoint carries the spec of its model and dataset (checked data, never code: see
:mod:`mean_geo.files.specs`), so nothing else is needed; override
the dataset (``dataset=sues200 dataset.root=…`` or just ``dataset.root=…``) to test elsewhere.
Writes metrics.json and plots into this run's directory.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from mean_geo.cli.hydra_app import hydra_app
from mean_geo.errors import ConfigError


def write_challenge_submission(cfg: DictConfig) -> Path:
    """``eval.submission=answer.txt``: rank a gallery folder for every query image (no labels)."""
    from mean_geo.data.layouts import list_images
    from mean_geo.inference.loading import load_model
    from mean_geo.inference.localization import embed_images
    from mean_geo.inference.submission import ordered_queries, refuse_existing, write_submission
    from mean_geo.training.composition import to_plain

    settings = to_plain(cfg.eval)
    for key in ("submission_queries", "submission_gallery"):
        if not settings.get(key):
            raise ConfigError(f"eval.{key} is required with eval.submission; pass eval.{key}=FOLDER")
    refuse_existing(settings["submission"])  # before any work
    loaded = load_model(cfg.ckpt, "ckpt")
    queries = ordered_queries(settings["submission_queries"], settings.get("submission_order"))
    gallery = list_images([settings["submission_gallery"]], "eval.submission_gallery")
    flip = bool(settings.get("flip_tta", False))
    return write_submission(
        settings["submission"],
        embed_images(loaded, queries, flip_tta=flip),
        embed_images(loaded, gallery, flip_tta=flip),
        [p.stem for p in gallery],
    )


def run(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt`` (or write a challenge submission); returns the metrics written."""
    # Lightning and the model stack load here, not when the module does (see mean_geo.train)
    import lightning as L

    from mean_geo.files.checkpoints import check_weights_fit, read_checkpoint
    from mean_geo.files.specs import image_size_of
    from mean_geo.models.input_size import check_spec_image_size
    from mean_geo.reporting.run_file import read_metrics
    from mean_geo.training.composition import (
        build_evaluation,
        build_trainer,
        eval_options,
        refine_request,
        to_plain,
    )
    from mean_geo.training.identity import run_config, run_identity, run_summary
    from mean_geo.training.lit_module import MEANLitModule
    from mean_geo.training.loggers import build_loggers, finish
    from mean_geo.training.results import ResultsWriter

    L.seed_everything(cfg.seed, workers=True)
    if cfg.eval.get("submission"):
        out = write_challenge_submission(cfg)
        print(f"wrote {out}")
        return {}
    ckpt = read_checkpoint(cfg.ckpt, "ckpt")
    dataset = dict(ckpt.spec.get("dataset") or {})
    override = {k: v for k, v in to_plain(cfg.get("dataset")).items() if v is not None}
    if "name" in override or "_target_" in override:  # another dataset entirely
        dataset = override
    elif override:
        if "altitude" in override and "altitude" not in dataset:
            raise ConfigError("dataset.altitude: the checkpoint's dataset has no altitudes (not SUES-200)")
        dataset.update(override)
    options = eval_options(cfg.eval)
    refine = refine_request(cfg.eval, dataset.get("directions") or ("d2s", "s2d"))
    check_spec_image_size(ckpt.spec["model"], image_size_of({"dataset": dataset}))  # an override too
    dm, options = build_evaluation(dataset, options, refine)
    dm.prepare_data()
    lit = MEANLitModule(spec=ckpt.spec, eval_options=options, channels_last=cfg.channels_last)
    check_weights_fit(lit, ckpt.state_dict, f"ckpt={ckpt.path}")
    lit.load_state_dict(ckpt.state_dict)
    out_dir = Path(cfg.paths.output_dir)
    identity = run_identity(cfg, "eval")
    summary = run_summary(cfg, identity, model=dict(ckpt.spec.get("model") or {}), dataset=dataset)
    writer = ResultsWriter(
        out_dir,
        dm.describe(),
        dm.protocol,
        make_plots=cfg.eval.get("plots", True),
        extra={"checkpoint": str(cfg.ckpt), "run": summary},
        refine=refine,
    )
    loggers = build_loggers(to_plain(cfg.get("logger")), identity, run_config(cfg, identity))
    try:
        trainer = build_trainer(cfg.trainer, callbacks=[writer], logger=loggers or False)
        trainer.test(lit, datamodule=dm, verbose=False)
    finally:
        finish(loggers)
    return read_metrics(out_dir)


@hydra_app("eval")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
