"""Typed checks of every user-facing config value, in one table, before any work.

Hydra passes command-line values through untyped (``seed=abc`` is the string ``'abc'``,
``trainer.max_epochs=-1`` a legal int), so a wrong value would otherwise surface as a traceback
from deep inside torch or Lightning, or not at all.  Each entry point checks its composed config
against :data:`RULES` first; a value of the wrong kind or outside its range is one line naming the
key, what it got and what is expected.  Keys a config does not have are skipped, so one table
serves train, eval and index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mean_geo.errors import ConfigError

_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """What one key accepts: ``check(value)`` returns None when it fits, else what is expected."""

    check: Callable[[Any], str | None]
    nullable: bool = False
    tasks: frozenset[str] | None = None  # None: every task that has the key


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def whole(least: int | None = None, most: int | None = None, note: str = "") -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if _is_int(v) and (least is None or v >= least) and (most is None or v <= most):
            return None
        span = f" in {least}..{most}" if most is not None else (f" >= {least}" if least is not None else "")
        return f"a whole number{span}{note}"

    return check


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False):
    def check(v: Any) -> str | None:
        ok = _is_number(v) and (v > low if low_open else v >= low)
        ok = ok and (high is None or (v < high if high_open else v <= high))
        if ok:
            return None
        if high is None:
            return f"a number {'>' if low_open else '>='} {low:g}"
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


def one_of(*choices: Any) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if any(v == c and type(v) is type(c) for c in choices) else f"one of {', '.join(map(str, choices))}"

    return check


def either(*checks: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        misses = [c(v) for c in checks]
        return None if None in misses else " or ".join(m for m in misses if m)

    return check


def list_of(item: Callable[[Any], str | None], non_empty: bool = True) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, Sequence) and not isinstance(v, str) and (len(v) > 0 or not non_empty)
        if ok and all(item(x) is None for x in v):
            return None
        return f"a {'non-empty ' if non_empty else ''}list, each item {item(object())}"  # the item's expectation

    return check


def lightning_strategy(v: Any) -> str | None:
    """A strategy name Lightning's registry knows (``ddp``, ``ddp_spawn``, ``fsdp``, …) or ``auto``."""
    from lightning.pytorch.strategies import StrategyRegistry

    known = ["auto", *StrategyRegistry.available_strategies()]
    return None if isinstance(v, str) and v in known else f"one of {', '.join(known)}"


TRAIN = frozenset({"train"})
BATCH_NORM_NOTE = " (2 or more: the BatchNorm layers of the branches cannot train on one pair)"
PRECISIONS = (
    *("auto", "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "64", "16", "bf16"),
    *("transformer-engine", "transformer-engine-float16"),
)
FRACTION_OR_COUNT = either(number(0.0, 1.0), whole(0))

#: key -> what it accepts.  Ranges say what the code can run, not what is sensible.
RULES: dict[str, Rule] = {
    "seed": Rule(whole(0, 2**32 - 1)),
    "channels_last": Rule(boolean),
    "test": Rule(boolean),
    "optimized_metric": Rule(text, nullable=True),
    "official_temperature": Rule(boolean),
    # evaluation conventions (train and eval)
    "eval.ks": Rule(list_of(whole(1))),
    "eval.drop_unmatched_gallery": Rule(boolean, nullable=True),
    "eval.multi_query": Rule(one_of("none", "mean", "max", "vote")),
    "eval.flip_tta": Rule(boolean),
    "eval.rerank": Rule(boolean),
    "eval.rerank_k1": Rule(whole(1)),
    "eval.rerank_k2": Rule(whole(1)),
    "eval.rerank_lambda": Rule(number(0.0, 1.0)),
    "eval.corruptions": Rule(either(text, list_of(text, non_empty=False))),  # fog | all | [fog, rain]
    "eval.severities": Rule(either(whole(1, 5), list_of(whole(1, 5)))),  # 3 | [1, 3, 5]
    "eval.plots": Rule(boolean),
    # optimiser and schedule
    "optim.optimizer.lr": Rule(number(0.0, low_open=True)),
    "optim.optimizer.weight_decay": Rule(number(0.0)),
    "optim.optimizer.eps": Rule(number(0.0, low_open=True)),
    "optim.optimizer.betas": Rule(list_of(number(0.0, 1.0, high_open=True))),
    "optim.scheduler.warmup_fraction": Rule(number(0.0, 1.0)),
    # the trainer (train, eval, index share it; training keys only matter to train)
    "trainer.max_epochs": Rule(whole(-1), tasks=TRAIN),
    "trainer.max_steps": Rule(whole(-1), tasks=TRAIN),
    "trainer.devices": Rule(either(whole(1), one_of(-1), text, list_of(whole(0)))),  # 2 | -1 | "auto" | "0,1" | [0, 1]
    "trainer.num_nodes": Rule(whole(1)),
    "trainer.accelerator": Rule(one_of("auto", "cpu", "gpu", "cuda", "mps")),
    "trainer.strategy": Rule(lightning_strategy),
    "trainer.precision": Rule(either(one_of(*PRECISIONS), one_of(16, 32, 64))),
    "trainer.gradient_clip_val": Rule(number(0.0), nullable=True, tasks=TRAIN),
    "trainer.gradient_clip_algorithm": Rule(one_of("value", "norm"), nullable=True, tasks=TRAIN),
    "trainer.accumulate_grad_batches": Rule(whole(1), tasks=TRAIN),
    "trainer.log_every_n_steps": Rule(whole(1)),
    "trainer.check_val_every_n_epoch": Rule(whole(1), nullable=True, tasks=TRAIN),
    "trainer.val_check_interval": Rule(either(number(0.0, 1.0, low_open=True), whole(1)), nullable=True, tasks=TRAIN),
    "trainer.num_sanity_val_steps": Rule(whole(-1), tasks=TRAIN),
    "trainer.limit_train_batches": Rule(FRACTION_OR_COUNT, tasks=TRAIN),
    "trainer.limit_val_batches": Rule(FRACTION_OR_COUNT, tasks=TRAIN),
    "trainer.limit_test_batches": Rule(FRACTION_OR_COUNT),
    "trainer.overfit_batches": Rule(FRACTION_OR_COUNT, tasks=TRAIN),
    "trainer.fast_dev_run": Rule(either(boolean, whole(0)), tasks=TRAIN),
    "trainer.deterministic": Rule(either(boolean, one_of("warn")), nullable=True),
    "trainer.enable_progress_bar": Rule(boolean),
    "trainer.enable_checkpointing": Rule(boolean),
    # data (eval: null keeps what the checkpoint recorded)
    "dataset.image_size": Rule(whole(8, 4096), nullable=True),
    "dataset.batch_size": Rule(whole(2, note=BATCH_NORM_NOTE), tasks=TRAIN),
    "dataset.eval_batch_size": Rule(whole(1), nullable=True),
    "dataset.num_workers": Rule(whole(0), nullable=True),
    "dataset.seed": Rule(whole(0, 2**32 - 1), tasks=frozenset({"train", "eval"})),
    "dataset.augment": Rule(either(boolean, one_of("geometric")), tasks=TRAIN),
    "dataset.decode_on": Rule(one_of("cpu", "gpu"), tasks=TRAIN),
    "dataset.cache": Rule(one_of("none", "uint8"), tasks=TRAIN),
    "dataset.cache_dir": Rule(text, tasks=TRAIN),
    "dataset.val_locations": Rule(number(0.0, 1.0, high_open=True), tasks=TRAIN),
    "dataset.joint_flip_p": Rule(number(0.0, 1.0), tasks=TRAIN),
    "dataset.directions": Rule(list_of(one_of("d2s", "s2d")), nullable=True),
    "dataset.pin_memory": Rule(boolean, nullable=True),
    "dataset.root": Rule(text, nullable=True),
    "dataset.coordinates_csv": Rule(text, nullable=True),
    "dataset.synthesize.locations": Rule(whole(2)),
    "dataset.synthesize.image_size": Rule(whole(8, 4096)),
    "dataset.synthesize.drone_per_location": Rule(whole(1)),
    "dataset.synthesize.supersample": Rule(whole(1)),
    "dataset.synthesize.seed": Rule(whole(0)),
    # model and loss (what a checkpoint records; the specs check the rest against the constructors)
    "model.pretrained": Rule(boolean, tasks=TRAIN),
    "model.num_local": Rule(whole(1), tasks=TRAIN),
    "model.cea_proj_dim": Rule(whole(1), tasks=TRAIN),
    "model.cea_out_dim": Rule(whole(1), tasks=TRAIN),
    "loss.weight_infonce": Rule(number(0.0), tasks=TRAIN),
    "loss.weight_ce": Rule(number(0.0), tasks=TRAIN),
    "loss.weight_cda": Rule(number(0.0), tasks=TRAIN),
    "loss.infonce.temperature": Rule(number(0.0, low_open=True), tasks=TRAIN),
    "loss.infonce.label_smoothing": Rule(number(0.0, 1.0, high_open=True), tasks=TRAIN),
    "loss.infonce.learnable_temperature": Rule(boolean, tasks=TRAIN),
    "loss.infonce.pair_weight_k": Rule(number(0.0, low_open=True), tasks=TRAIN),
    "loss.weight_dsa": Rule(number(0.0), tasks=TRAIN),
    "loss.weight_part_mse": Rule(number(0.0), tasks=TRAIN),
    "loss.weight_blocks": Rule(number(0.0), tasks=TRAIN),
    "loss.ece_weight": Rule(number(0.0, low_open=True), tasks=TRAIN),
    "loss.block_infonce.temperature": Rule(number(0.0, low_open=True), tasks=TRAIN),
    "loss.block_infonce.label_smoothing": Rule(number(0.0, 1.0, high_open=True), tasks=TRAIN),
    "model.part_blocks": Rule(whole(1), tasks=TRAIN),
    "model.position_grid": Rule(whole(1), tasks=TRAIN),
    "model.dsa_dim": Rule(whole(1), tasks=TRAIN),
    "model.head_dropout": Rule(number(0.0, 1.0, high_open=True), tasks=TRAIN),
    "model.pooling": Rule(one_of("auto", "token", "avg", "gem"), tasks=TRAIN),
    "model.finetune": Rule(one_of("full", "frozen", "lora"), tasks=TRAIN),
    "model.trainable_blocks": Rule(whole(0), tasks=TRAIN),
    "model.lora.r": Rule(whole(1), tasks=TRAIN),
    "model.lora.alpha": Rule(number(0.0, low_open=True), tasks=TRAIN),
    "model.lora.dropout": Rule(number(0.0, 1.0, high_open=True), tasks=TRAIN),
    "model.lora.targets": Rule(list_of(text), tasks=TRAIN),
    "model.grad_checkpointing": Rule(boolean, tasks=TRAIN),
    "optim.backbone_lr_factor": Rule(number(0.0, low_open=True), tasks=TRAIN),
    "grad_cache.chunk_size": Rule(whole(1), nullable=True, tasks=TRAIN),
    "callbacks.progress_bar.every_s": Rule(number(0.0), tasks=TRAIN),
    # the index
    "batch_size": Rule(whole(1), tasks=frozenset({"index"})),
    "num_workers": Rule(whole(0), tasks=frozenset({"index"})),
    "part_size": Rule(whole(1), tasks=frozenset({"index"})),
    "flip_tta": Rule(boolean, tasks=frozenset({"index"})),
    "tile_m": Rule(number(0.0, low_open=True), tasks=frozenset({"index"})),
    "tile_overlap": Rule(number(0.0, 1.0, high_open=True), tasks=frozenset({"index"})),
}


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def check_settings(config: Mapping[str, Any], task: str) -> None:
    """Refuse the first value of :data:`RULES` that ``config`` (plain, resolved) gets wrong.

    Raises:
        ConfigError: one line, ``key=value: expected …``.
    """
    for key, rule in RULES.items():
        if rule.tasks is not None and task not in rule.tasks:
            continue
        value = _lookup(config, key)
        if value is _ABSENT or (value is None and rule.nullable):
            continue
        expected = rule.check(value)
        if expected is not None:
            raise ConfigError(f"{key}={value!r}: expected {expected}")
    if task == "train":
        _check_training_length(config)


def _check_training_length(config: Mapping[str, Any]) -> None:
    """Lightning reads ``max_epochs=-1`` with ``max_steps=-1`` as "train forever"; the cosine
    schedule needs a length, and a run that never ends is never what a user meant."""
    epochs, steps = _lookup(config, "trainer.max_epochs"), _lookup(config, "trainer.max_steps")
    if epochs is _ABSENT:
        return
    steps = -1 if steps is _ABSENT else steps
    if epochs == -1 and steps == -1:
        raise ConfigError(
            "trainer.max_epochs=-1 with trainer.max_steps=-1 would train forever (and the cosine schedule "
            "needs a length): set trainer.max_epochs >= 1 or trainer.max_steps >= 1"
        )
    if epochs == 0 or steps == 0:
        key = "trainer.max_epochs" if epochs == 0 else "trainer.max_steps"
        raise ConfigError(f"{key}=0 trains nothing: expected >= 1 (or -1 for no limit, with the other one set)")
