"""Build specs: how a checkpoint, an export or an index says what to rebuild — as data, never as code.

A *spec* is the checked, plain-data description of a model, a loss or a dataset (``{"architecture":
"mean", ...}``, ``{"name": "mean", ...}``, ``{"name": "sues200", ...}``), as a config composes it
and a checkpoint stores it (the LightningModule's ``spec`` hyper-parameter; ``build_config`` in
earlier versions).  It is not a *recipe*: in mean_geo that word only means the paper's training
numbers (``conf/recipe/``).  This module checks specs; each layer builds its own thing from a checked one
(:func:`mean_geo.models.registry.build_architecture`, :func:`mean_geo.losses.build.build_loss`,
:func:`mean_geo.training.composition.build_datamodule`).

A file we did not write may be crafted.  So a saved model names an *architecture* from a closed
registry (``"mean"``) and plain keyword arguments (numbers, strings, booleans, None, short lists,
small dicts of those), each checked against the constructor's signature and type hints before
anything is built.  Nothing here calls ``hydra.utils.instantiate``, imports a module named by a
file, or unpickles.  Files written before specs existed stored Hydra ``_target_`` paths: the few
that mean_geo itself wrote are translated through :data:`LEGACY_TARGETS`; anything else is refused
with one line naming the key.

Extending: ``@register_architecture("my_net")`` (or ``@register_loss("my_loss")``) on a class whose
constructor takes plain keyword arguments makes ``model: {architecture: my_net, ...}`` loadable;
the registries are code, so only code you import can add to them.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mean_geo.errors import SpecError
from mean_geo.models.registry import ARCHITECTURES
from mean_geo.utils.registry import Registry

#: the spec format written into checkpoints and exports by this version (the tag keeps its old
#: word: every checkpoint written since round 2 carries it)
#: the format tag of a spec; "mean_geo-recipe/2" in earlier checkpoints (the same content, still read)
SPEC_FORMAT = "mean_geo-spec/2"
MAX_LIST = 64  # "short lists": a spec never needs more (ks, directions, altitudes)
MAX_STRING = 4096
PLAIN_SCALARS = (bool, int, float, str, type(None))


def _registered_architectures() -> Registry[Callable[..., Any]]:
    from mean_geo.models.mean import MEAN  # noqa: F401  (registers "mean")
    from mean_geo.models.peers import CAMP  # noqa: F401  (registers "sample4geo", "dac", "camp")

    return ARCHITECTURES


#: the Hydra targets that mean_geo wrote into checkpoints and exports before specs existed
LEGACY_TARGETS = {
    "mean_geo.models.mean.MEAN": "mean",
    "mean_geo.losses.MEANLoss": "loss",
    "mean_geo.losses.InfoNCELoss": "infonce",
    "mean_geo.losses.CDALoss": "cda",
    "mean_geo.data.datamodule.SUES200DataModule": "sues200",
    "mean_geo.data.datamodule.University1652DataModule": "university1652",
}


# --- checking plain values ------------------------------------------------------------------------
def check_plain(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` if it is plain data (scalars, short lists, small str-keyed dicts), else refuse."""
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise SpecError(f"{where}: a string of {len(value)} characters (at most {MAX_STRING})")
    if isinstance(value, PLAIN_SCALARS):
        return value
    if depth >= 3:
        raise SpecError(f"{where}: nested too deeply for a spec")
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST:
            raise SpecError(f"{where}: a list of {len(value)} items (at most {MAX_LIST})")
        return [check_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if len(value) > MAX_LIST:
            raise SpecError(f"{where}: a mapping of {len(value)} keys (at most {MAX_LIST})")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SpecError(f"{where}: key {k!r} is not a string")
            if k == "_target_":
                raise SpecError(f"{where}._target_: code references are not loaded from files")
            out[k] = check_plain(v, f"{where}.{k}", depth + 1)
        return out
    raise SpecError(f"{where}: {type(value).__name__} is not plain data")


def _accepts(hint: Any, value: Any) -> bool:
    """Does the plain ``value`` fit the type hint ``hint`` of a constructor argument?"""
    if hint is Any or hint is inspect.Parameter.empty:
        return isinstance(value, PLAIN_SCALARS)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, Path):
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, list):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return all(any(_accepts(a, v) for a in args) if args else isinstance(v, PLAIN_SCALARS) for v in value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, dict)
    return False  # a class-typed argument (a module, a callable): never from a file


def _parameters(cls: Callable[..., Any]) -> dict[str, tuple[inspect.Parameter, Any]]:
    """Keyword parameters of ``cls`` with their type hints, following ``**kwargs`` to the base class."""
    params: dict[str, tuple[inspect.Parameter, Any]] = {}
    for klass in getattr(cls, "__mro__", (cls,)):
        init = getattr(klass, "__init__", klass) if isinstance(klass, type) else klass
        if init is object.__init__:
            break
        hints = typing.get_type_hints(init)
        sig = inspect.signature(init)
        forwards = False
        for name, p in sig.parameters.items():
            if name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                forwards = True
                continue
            params.setdefault(name, (p, hints.get(name, inspect.Parameter.empty)))
        if not forwards:
            break
    return params


def check_kwargs(cls: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``kwargs`` checked against ``cls``'s signature: known names, plain values of the hinted types,
    nothing required left out.  Refuses with one line naming ``where.<key>``."""
    kwargs = check_plain(dict(kwargs), where)
    params = _parameters(cls)
    for key, value in kwargs.items():
        if key not in params:
            raise SpecError(f"{where}.{key}: not an argument of {where} (expected one of {sorted(params)})")
        hint = params[key][1]
        if not _accepts(hint, value):
            raise SpecError(f"{where}.{key}={value!r}: expected {_hint_name(hint)}")
    missing = [n for n, (p, _) in params.items() if p.default is p.empty and n not in kwargs]
    if missing:
        raise SpecError(f"{where}: missing required argument(s) {missing}")
    return dict(kwargs)


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# --- plugins: names of the user's modules, recorded, never imported from a file ---------------------
MAX_PLUGINS = 16


def plugin_names(value: Any, where: str = "plugins", error: type[Exception] = SpecError) -> list[str]:
    """``value`` as a list of dotted module names (what ``plugins=[...]`` takes and files record)."""
    if value is None:
        return []
    ok = isinstance(value, (list, tuple)) and len(value) <= MAX_PLUGINS
    ok = ok and all(isinstance(v, str) and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", v) for v in value)
    if not ok:
        raise error(f"{where}={value!r}: expected a list of module names (at most {MAX_PLUGINS}), e.g. [my_pkg.nets]")
    return list(value)


def _plugin_hint(plugins: Sequence[str]) -> str:
    if plugins:
        return f"; it was built with plugins=[{','.join(plugins)}]: pass the same plugins=[...] to register it"
    return "; if a module of yours registers it, pass plugins=[your.module]"


def _registered(registry: Registry[Any], name: Any, key: str, plugins: Sequence[str]) -> Any:
    """``registry``'s class for ``name``; a miss names the file's ``key`` and the plugins to pass."""
    try:
        return registry.get(name)
    except SpecError as exc:
        message = str(exc).replace(f"{registry.key}=", f"{key}=", 1)
        raise SpecError(message + _plugin_hint(plugins)) from None


# --- the three specs ------------------------------------------------------------------------------
def _legacy_name(section: Mapping[str, Any], where: str, expected: tuple[str, ...]) -> str | None:
    target = section.get("_target_")
    if target is None:
        return None
    name = LEGACY_TARGETS.get(target) if isinstance(target, str) else None
    if name not in expected:
        raise SpecError(f"{where}._target_={target!r}: not a mean_geo {where} (refused: files may not name code)")
    return name


def model_spec(section: Mapping[str, Any], where: str = "model", plugins: Sequence[str] = ()) -> dict[str, Any]:
    """``{"architecture": name, **kwargs}`` checked; accepts the legacy ``_target_`` form.

    ``plugins``: what the file records it was built with; an unregistered architecture's error
    names them (they are never imported here)."""
    if not isinstance(section, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(section).__name__}")
    section = dict(section)
    legacy = _legacy_name(section, where, ("mean",))
    section.pop("_target_", None)
    name = section.pop("architecture", legacy)
    cls = _registered(_registered_architectures(), name, f"{where}.architecture", plugins)
    kwargs = check_kwargs(cls, section, where)
    backbone = kwargs.get("backbone")
    if backbone is not None:
        import timm

        if not timm.is_model(backbone):
            raise SpecError(f"{where}.backbone={backbone!r}: not a timm model name")
    return {"architecture": name, **kwargs}


def loss_spec(section: Mapping[str, Any], where: str = "loss", plugins: Sequence[str] = ()) -> dict[str, Any]:
    """``{"name": <registered loss>, **weights, "infonce": {...}, "cda": {...}}`` checked.

    ``name`` defaults to ``"mean"`` (what every checkpoint from before the loss registry holds); the
    nested sections are the plain arguments of the loss's parts (:data:`mean_geo.losses.LOSS_PARTS`).
    """
    from mean_geo.losses import LOSS_PARTS, LOSSES

    if not isinstance(section, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(section).__name__}")
    section = dict(section)
    _legacy_name(section, where, ("loss",))
    section.pop("_target_", None)
    name = section.pop("name", "mean")
    cls = _registered(LOSSES, name, f"{where}.name", plugins)
    accepted = _parameters(cls)
    parts = {}
    for key, part_cls in LOSS_PARTS.items():
        if key not in accepted:
            continue
        part = section.pop(key, None) or {}
        if not isinstance(part, Mapping):
            raise SpecError(f"{where}.{key}: expected a mapping, got {type(part).__name__}")
        part = dict(part)
        _legacy_name(part, f"{where}.{key}", (key,))
        part.pop("_target_", None)
        parts[key] = check_kwargs(part_cls, part, f"{where}.{key}")
    weights = check_kwargs(cls, section, where)
    return {"name": name, **weights, **parts}


def _datamodules() -> Registry[type]:
    from mean_geo.datamodules import DATAMODULES  # registers the built-in layouts

    return DATAMODULES


def dataset_spec(section: Mapping[str, Any], where: str = "dataset", check_arguments: bool = True) -> dict[str, Any]:
    """``{"name": <registered layout>, **kwargs}`` checked (legacy ``_target_`` accepted).

    ``check_arguments=False`` checks the arguments as plain data only, not against the datamodule
    (for inference, which never builds one and must not import Lightning)."""
    if not isinstance(section, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(section).__name__}")
    section = dict(section)
    legacy = _legacy_name(section, where, ("sues200", "university1652"))
    section.pop("_target_", None)
    name = section.pop("name", legacy)
    if not check_arguments:  # inference never builds it: a name, and plain data
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise SpecError(f"{where}.name={name!r}: not a dataset name")
        return {"name": name, **check_plain(section, where)}
    kwargs = check_kwargs(_datamodules().get(name), section, where)
    if kwargs.get("synthesize") is not None:  # a synthetic world's spec: its fields, nothing else
        from mean_geo.synthetic.writer import WorldSpec

        check_kwargs(WorldSpec, {"layout": name, **kwargs["synthesize"]}, f"{where}.synthesize")
    return {"name": name, **kwargs}


def image_size_of(spec: Mapping[str, Any], default: int = 384) -> int:
    """The training image size a spec records (only this is read for inference)."""
    value = (spec.get("dataset") or {}).get("image_size", default) if isinstance(spec, Mapping) else default
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 8 <= value <= 4096:
        raise SpecError(f"dataset.image_size={value!r}: expected a whole number of pixels (8..4096)")
    return value


def _loss_as_data(section: Any, where: str = "loss") -> dict[str, Any]:
    """A loss section checked as plain data only (its legacy ``_target_`` tags dropped): inference
    never builds the loss, so its name need not be registered."""
    if not isinstance(section, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(section).__name__}")
    section = dict(section)
    _legacy_name(section, where, ("loss",))
    section.pop("_target_", None)
    for key, part in section.items():
        if isinstance(part, Mapping) and "_target_" in part:
            part = dict(part)
            _legacy_name(part, f"{where}.{key}", (key,))
            part.pop("_target_")
            section[key] = part
    return check_plain(section, where)


def checkpoint_spec(spec: Any, where: str, for_training: bool = True) -> dict[str, Any]:
    """The whole spec stored in a training checkpoint, checked: model, loss and (if any) dataset.

    ``for_training=False`` (inference: no loss and no datamodule will be built) checks the loss and
    dataset sections as plain data only, which keeps Lightning out of the import path and lets a
    model trained with a plugin's loss load without that plugin."""
    if not isinstance(spec, Mapping) or "model" not in spec:
        raise SpecError(f"{where}: not a mean_geo training checkpoint (no model spec inside)")
    unknown = set(spec) - {"format", "model", "loss", "dataset", "plugins"}
    if unknown:
        raise SpecError(f"{where}: unexpected spec key(s) {sorted(unknown)}")
    plugins = plugin_names(spec.get("plugins"), f"{where}.plugins")
    out: dict[str, Any] = {"format": SPEC_FORMAT, "model": model_spec(spec["model"], plugins=plugins)}
    if plugins:
        out["plugins"] = plugins
    if spec.get("loss") is not None:
        out["loss"] = loss_spec(spec["loss"], plugins=plugins) if for_training else _loss_as_data(spec["loss"])
    if spec.get("dataset"):
        out["dataset"] = dataset_spec(spec["dataset"], check_arguments=for_training)
    return out
