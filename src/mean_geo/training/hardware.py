"""The hardware's precision policy: what ``precision: auto`` means where, the authors' GradScaler on
a GPU, and what a CPU-only machine refuses before any work."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mean_geo.errors import ConfigError

#: the authors' GradScaler starts at 2**10 (Lightning's default 2**16 skips more steps at the start)
AMP_INIT_SCALE = 2.0**10


def cpu_supports_bf16() -> bool:
    """Native bf16 on this CPU (AVX512-BF16/AMX): 2-3x faster training; emulated it is slower."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def resolve_precision(accelerator: str, precision: str) -> str:
    """``precision: auto``: fp16 AMP on a GPU (the authors' recipe), bf16 autocast on a CPU that
    has it, else fp32.  Anything else is passed through as the user wrote it."""
    if str(precision) != "auto":
        return precision
    if uses_gpu(accelerator):
        return "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


def check_gpu_decoding(dataset: Mapping, trainer_cfg: Mapping) -> None:
    """``dataset.decode_on=gpu`` where training does not run on a CUDA GPU is refused before any work,
    as ``hardware=gpu`` without one is: the images would be decoded inside the training process,
    one batch after the other, the slowest arrangement there is."""
    if dataset.get("decode_on", "cpu") != "gpu":
        return
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if not uses_gpu(accelerator) or not torch.cuda.is_available():
        raise ConfigError(
            f"dataset.decode_on=gpu: training runs on the CPU here (trainer.accelerator={accelerator}"
            f"{'' if torch.cuda.is_available() else ', no CUDA GPU visible'}); use dataset.decode_on=cpu, "
            "where the loader's workers decode in parallel"
        )


def is_precision_plugin(plugin) -> bool:
    """Whether a ``trainer.plugins`` entry (an object, or a config with ``_target_``) sets the precision."""
    from hydra.utils import get_class
    from lightning.pytorch.plugins.precision import Precision

    if isinstance(plugin, dict) and "_target_" in plugin:
        try:
            plugin = get_class(str(plugin["_target_"]))
        except Exception:  # noqa: BLE001 - instantiating it will name what is wrong
            return False
    cls = plugin if isinstance(plugin, type) else type(plugin)
    return issubclass(cls, Precision)


def amp_plugin(device: str = "cuda"):
    from lightning.pytorch.plugins import MixedPrecision

    return MixedPrecision("16-mixed", device, scaler=torch.amp.GradScaler(device, init_scale=AMP_INIT_SCALE))


def precision_plugins(cfg: dict, accelerator: str) -> list:
    """Settle ``cfg["precision"]`` (``auto`` resolved) and the trainer's plugins: fp16 AMP on a GPU
    gets the authors' GradScaler start unless the user's own plugins set the precision.

    Args:
        cfg: the trainer's plain config; its ``precision`` and ``plugins`` are taken over.
        accelerator: ``trainer.accelerator``.

    Returns:
        The plugins to give the Trainer (the user's, and ours).
    """
    cfg["precision"] = resolve_precision(accelerator, cfg.get("precision", "32-true"))
    plugins = list(cfg.pop("plugins", None) or [])
    # a user's cluster environment or checkpoint plugin must not replace the GradScaler's start;
    # only a precision plugin of their own does
    amp = cfg["precision"] in ("16-mixed", 16, "16") and uses_gpu(accelerator)
    if amp and not any(is_precision_plugin(p) for p in plugins):
        plugins.append(amp_plugin())
        cfg.pop("precision")
    return plugins
