"""Who a run is, for dashboards: its name, group and job type, and the full config it ran with.

W&B and TensorBoard users filter and group runs by these.  The name is the experiment and the
job's own overrides (``smoke seed=2``), the group is the sweep (or the experiment for a single run),
the job type is the entry point (``train``/``eval``).  Read from Hydra's runtime when there is one.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# overrides that say where things go or how they look, not what was run
_NOT_IN_NAME = ("hydra.", "paths.", "trainer.enable_progress_bar", "experiment=", "logger")


@dataclass
class RunIdentity:
    name: str
    group: str
    job_type: str
    experiment: str
    overrides: list[str] = field(default_factory=list)
    sweep_dir: str | None = None


def git_commit() -> str | None:
    """The commit of the checkout mean_geo runs from, if it is one (None for an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_identity(cfg: DictConfig, job_type: str) -> RunIdentity:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    experiment, overrides, sweep_dir = None, [], None
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        experiment = hc.runtime.choices.get("experiment")
        overrides = list(hc.overrides.task)
        if hc.mode == RunMode.MULTIRUN:
            sweep_dir = str(hc.sweep.dir)
    experiment = experiment or str(cfg.get("task_name") or job_type)
    shown = [o for o in overrides if not o.startswith(_NOT_IN_NAME)]
    name = " ".join([experiment, *shown])[:128]
    group = f"{experiment} {Path(sweep_dir).name}" if sweep_dir else experiment
    return RunIdentity(name, group, job_type, experiment, overrides, sweep_dir)


def run_config(cfg: DictConfig, identity: RunIdentity) -> dict:
    """Everything a dashboard filters on: the resolved config plus the run's identity and commit."""
    from hydra.core.hydra_config import HydraConfig

    plain = OmegaConf.to_container(cfg, resolve=True)
    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    plain["run"] = {
        "experiment": identity.experiment,
        "job_type": identity.job_type,
        "overrides": identity.overrides,
        "sweep_dir": identity.sweep_dir,
        "choices": {k: v for k, v in choices.items() if not k.startswith("hydra/")},
        "git_commit": git_commit(),
    }
    return plain


def run_summary(cfg: DictConfig, identity: RunIdentity, model: dict | None = None, dataset: dict | None = None) -> dict:
    """What ran, for the report's columns (``metrics.json``'s ``run``): the method, model and data
    settings people vary in sweeps, the seed, and the job's own overrides.

    Args:
        cfg: the composed config of this job.
        identity: from :func:`run_identity`.
        model: the model spec when it does not come from ``cfg.model`` (eval: the checkpoint's).
        dataset: the dataset settings actually used (eval: the checkpoint's with the overrides).

    Returns:
        Plain values only (JSON-ready).
    """
    from hydra.core.hydra_config import HydraConfig

    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    model = dict(model if model is not None else OmegaConf.to_container(cfg.get("model") or {}, resolve=True))
    data = dict(dataset if dataset is not None else OmegaConf.to_container(cfg.get("dataset") or {}, resolve=True))
    loss = OmegaConf.to_container(cfg.get("loss") or {}, resolve=True) if identity.job_type == "train" else {}
    trainer = cfg.get("trainer") or {}

    def plain(value: object) -> object:
        return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)

    return {
        "entry": identity.job_type,
        "experiment": identity.experiment,
        "method": choices.get("method") if identity.job_type == "train" else model.get("architecture"),
        "architecture": plain(model.get("architecture")),
        "backbone": plain(model.get("backbone")),
        "loss": plain(loss.get("name")) if isinstance(loss, dict) else None,
        "dataset": plain(data.get("name")),
        "altitude": plain(data.get("altitude")),
        "image_size": plain(data.get("image_size")),
        "batch_size": plain(data.get("batch_size")) if identity.job_type == "train" else None,
        "epochs": plain(trainer.get("max_epochs")) if identity.job_type == "train" else None,
        "seed": plain(cfg.get("seed")) if identity.job_type == "train" else None,
        "overrides": [o for o in identity.overrides if not o.startswith(_NOT_IN_NAME)],
        "git_commit": git_commit(),
    }
