"""``@hydra_app("train")``: a Hydra entry point whose every user mistake is one ``error:`` line.

Hydra handles what goes wrong before the task runs (a config choice that does not exist, an
override it cannot parse, a run folder it cannot create) by itself: a search-path dump or a
traceback, exit code 1.  Here Hydra is asked to raise those instead (``HYDRA_FULL_ERROR`` for the
call, unless the user set it), and they are printed as one line with exit code 2, like the task's
own errors.  Inside the task, the user's ``plugins=[...]`` are imported and the composed config is
checked against the typed table of :mod:`mean_geo.cli.settings`, before anything is built.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import hydra
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mean_geo.cli import CONF_DIR, report_user_errors, user_asked_for_tracebacks
from mean_geo.cli.plugins import import_plugins
from mean_geo.cli.settings import RULES, check_settings
from mean_geo.errors import ConfigError

T = TypeVar("T")
#: set while Hydra raises because we asked it to (not because the user wants tracebacks)
RAISING_FOR_US = "MEAN_GEO_HYDRA_RAISES"
_ABSENT = object()
#: keys an earlier release read, per entry point: the one line names the key that replaced them
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "train": {"ckpt_path": "resume"},
    "eval": {"ckpt_path": "ckpt"},
}


def hydra_app(config_name: str) -> Callable[[Callable[[DictConfig], T]], Callable[..., T | None]]:
    """Decorate ``main(cfg)`` of the entry point that composes ``conf/<config_name>.yaml``."""

    def decorate(fn: Callable[[DictConfig], T]) -> Callable[..., T | None]:
        @report_user_errors
        @functools.wraps(fn)  # Hydra names the job (<task>.log) after the function it unwraps to
        def task(cfg: DictConfig) -> T:
            for old, new in RENAMED_KEYS.get(config_name, {}).items():  # `+ckpt_path=...` would be ignored
                if old in cfg:
                    raise ConfigError(f"{old}= was renamed: python -m mean_geo.{config_name} {new}=...")
            import_plugins(cfg.get("plugins"))  # before anything is built: they register what the config names
            check_settings(checked_values(cfg, config_name), config_name)
            return fn(cfg)

        composed = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)(task)

        @functools.wraps(fn)
        def main(cfg: DictConfig | None = None) -> T | None:
            if cfg is not None:  # an already composed config (tests, notebooks)
                return task(cfg)
            if user_asked_for_tracebacks():
                return composed()
            before = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", RAISING_FOR_US)}
            os.environ.update({"HYDRA_FULL_ERROR": "1", RAISING_FOR_US: "1"})
            try:
                return composed()
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "raised_by_task", False):
                    raise  # not a user mistake: the task's own traceback
                line = hydra_error_line(exc, config_name)
                if line is None:
                    raise
                print(f"error: {line}", file=sys.stderr)
                sys.exit(2)
            finally:
                for key, value in before.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

        return main

    return decorate


def checked_values(cfg: DictConfig, task: str) -> dict:
    """The values of ``cfg`` that :data:`RULES` checks for ``task``, resolved one key at a time (a
    key the task never reads is not resolved), as plain nested dicts."""
    plain: dict = {}
    for key, rule in RULES.items():
        if rule.tasks is not None and task not in rule.tasks:
            continue
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT)
        except OmegaConfBaseException as exc:  # e.g. an interpolation that names nothing
            raise ConfigError(f"{key}: {' '.join(str(exc).splitlines()[0].split())}") from None
        if value is _ABSENT:
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        node = plain
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return plain


def hydra_error_line(exc: BaseException, task: str = "") -> str | None:
    """The user's line for what Hydra refused before the task ran (None: not a user mistake)."""
    renamed = _renamed_key(exc, task)
    if renamed is not None:
        return renamed
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, choice = exc.missing_cfg_file.rpartition("/")
        options = ", ".join(exc.options or _options_of(group)) or "none"
        return f"{group}={choice}: no such option (available: {options})"
    if isinstance(exc, OSError) and exc.filename:
        return (
            f"{exc.filename}: cannot make the run folder there ({exc.strerror}); hydra.run.dir, hydra.sweep.dir "
            "and MEAN_GEO_LOGS must name a folder, or a path where one can be made"
        )
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        text = " ".join(str(exc).split("\n\n")[0].split()) or type(exc).__name__
        return f"the command line: {text}" if isinstance(exc, OverrideParseException) else text
    return None


def _renamed_key(exc: BaseException, task: str) -> str | None:
    """``ckpt_path=…`` given to a task that now calls it ``ckpt``: say so instead of "cannot override"."""
    text = str(exc)
    for old, new in RENAMED_KEYS.get(task, {}).items():
        if f"Could not override '{old}'" in text or f"Key '{old}' is not in struct" in text:
            return f"{old}= was renamed: python -m mean_geo.{task} {new}=..."
    return None


def _options_of(group: str) -> list[str]:
    folder = os.path.join(CONF_DIR, group)
    if not os.path.isdir(folder):
        return []
    return sorted(name[:-5] for name in os.listdir(folder) if name.endswith(".yaml"))
