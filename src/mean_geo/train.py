"""``python -m mean_geo.train``: fit MEAN, then evaluate the best checkpoint on the test split.

A thin composition root: the config is read here and by :mod:`mean_geo.training.composition`;
what they build takes plain arguments.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from mean_geo.cli.hydra_app import hydra_app

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Train (and test) as configured; returns the metrics written to metrics.json."""
    # Lightning and the model stack load here, not when the module does: --help, --cfg and a bad
    # value answer in 2 s instead of 7 (Lightning's import alone is 3.7 s)
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from mean_geo.files.checkpoints import check_weights_fit, read_checkpoint
    from mean_geo.models.official import load_official_checkpoint
    from mean_geo.reporting.run_file import read_metrics
    from mean_geo.training.composition import (
        build_callbacks,
        build_evaluation,
        build_lit_module,
        build_trainer,
        check_input_size,
        dataset_settings,
        eval_options,
        manual_clipping,
        refine_request,
        run_spec,
        to_plain,
    )
    from mean_geo.training.hardware import check_gpu_decoding
    from mean_geo.training.identity import run_config, run_identity, run_summary
    from mean_geo.training.loggers import adopt_csv_header, build_loggers, finish
    from mean_geo.training.progress import ProgressLog
    from mean_geo.training.results import ResultsWriter

    L.seed_everything(cfg.seed, workers=True)
    # resume: refuse a foreign, broken or crafted file before anything is built or written
    resume = read_checkpoint(cfg.resume, "resume") if cfg.resume else None
    out_dir = Path(cfg.paths.output_dir)
    options = eval_options(cfg.eval)  # a wrong evaluation option stops before a world is made or a step trained
    dataset = dataset_settings(cfg)
    refine = refine_request(cfg.eval, dataset.get("directions") or ("d2s", "s2d"))
    check_gpu_decoding(dataset, cfg.trainer)
    check_input_size(cfg)
    dm, options = build_evaluation(dataset, options, refine)
    dm.prepare_data()  # generates the synthetic world if it is configured and absent
    chunk = (cfg.get("grad_cache") or {}).get("chunk_size")
    trainer_cfg, clip = manual_clipping(cfg.trainer, chunk)
    lit = build_lit_module(
        run_spec(cfg, dm.num_classes), cfg.optim, options, cfg.channels_last, chunk, gradient_clip=clip
    )
    if cfg.get("init_from"):  # fine-tune from a mean_geo checkpoint or export (a LoRA run's merged)
        from mean_geo.inference.export_format import retrieval_state
        from mean_geo.inference.loading import load_model
        from mean_geo.models.finetune import load_plain_state

        source = load_model(cfg.init_from, "init_from")
        parts = tuple(f"{p}." for p in getattr(lit.model, "retrieval_parts", ()))
        taken = load_plain_state(lit.model, retrieval_state(source.model), parts)
        log.info("initialised %d tensors of the retrieval network from %s", len(taken), cfg.init_from)
    if cfg.get("init_from_official"):  # fine-tune from the authors' released weights
        loss = lit.loss if cfg.get("official_temperature", True) else None
        report = load_official_checkpoint(cfg.init_from_official, lit.model, loss)
        temperature = f", temperature {lit.loss.infonce.temperature:.4f}" if loss is not None else ""
        log.info(
            "initialised from the authors' checkpoint %s: %s%s", cfg.init_from_official, report.summary(), temperature
        )
    identity = run_identity(cfg, "train")
    log.info("%s: %s", identity.name, describe(cfg, dm.num_classes, out_dir))
    writer = ResultsWriter(
        out_dir,
        dm.describe(),
        dm.protocol,
        make_plots=cfg.eval.get("plots", True),
        extra={"run": run_summary(cfg, identity)},
        refine=refine,
    )
    callbacks = build_callbacks(cfg.get("callbacks"), cfg.trainer.get("enable_progress_bar", True))
    if not dm.has_validation:  # nothing to select on (never the test split): keep and test the last
        log.info("no validation places (dataset.val_locations=0): the last checkpoint is tested, as the authors do")
        callbacks = [c for c in callbacks if not isinstance(c, EarlyStopping)]
        for c in callbacks:
            if isinstance(c, ModelCheckpoint):
                c.monitor = None
        trainer_cfg["limit_val_batches"] = 0  # no validation loop (Lightning would warn of its empty loader list)
    loggers = build_loggers(to_plain(cfg.get("logger")), identity, run_config(cfg, identity))
    try:
        trainer = build_trainer(trainer_cfg, callbacks=[*callbacks, ProgressLog(), writer], logger=loggers or False)
        if resume is not None:  # another experiment's weights: one line, before Lightning reads the file
            check_weights_fit(lit, resume.state_dict, f"resume={cfg.resume}")
        trainer.fit(lit, datamodule=dm, ckpt_path=cfg.resume, weights_only=True)
        # callback_metrics come back to this process whatever the strategy (ddp_spawn included)
        val_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not cfg.get("test", True) or trainer.fast_dev_run:
            return val_metrics
        ckpt = trainer.checkpoint_callback
        best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
        selected = (
            f"best {ckpt.monitor} on {len(dm.val_split.locations)} held-out training places"
            if best and ckpt.monitor and dm.has_validation
            else "last"
        )
        writer.extra.update(
            tested_checkpoint=best or "the weights in memory at the end of training", checkpoint_selection=selected
        )
        adopt_csv_header(loggers)
        trainer.test(lit, datamodule=dm, ckpt_path=best, weights_only=True, verbose=False)
        return read_metrics(out_dir)
    finally:
        finish(loggers)  # one W&B run per job, also in an in-process sweep


def describe(cfg: DictConfig, num_classes: int, out_dir: Path) -> str:
    """One-line summary of what is about to train, for the console and the run's log."""
    d, m, t = cfg.dataset, cfg.model, cfg.trainer
    pretrained = "local weights" if m.get("weights_file") else ("pretrained" if m.get("pretrained") else "random init")
    return (
        f"{d.get('name')} at {d.get('root')} ({num_classes} training places, {d.get('image_size')} px, "
        f"batch {d.get('batch_size')}), {m.get('backbone')} ({pretrained}), {t.get('max_epochs')} epochs, "
        f"{t.get('precision')} on {t.get('accelerator')}; writing to {out_dir}"
    )


@hydra_app("train")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    value = metrics.get(cfg.get("optimized_metric"))
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
