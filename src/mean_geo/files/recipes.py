"""Recipes: how a checkpoint, an export or an index says what to rebuild — as data, never as code.

A file we did not write may be crafted.  So a saved model names an *architecture* from a closed
registry (``"mean"``) and plain keyword arguments (numbers, strings, booleans, None, short lists,
small dicts of those), each checked against the constructor's signature and type hints before
anything is built.  Nothing here calls ``hydra.utils.instantiate``, imports a module named by a
file, or unpickles.  Files written before recipes existed stored Hydra ``_target_`` paths: the
few that mean_geo itself wrote are translated through :data:`LEGACY_TARGETS`; anything else is
refused with one line naming the key.

Extending: ``@register_architecture("my_net")`` on a class whose constructor takes plain keyword
arguments makes ``model: {architecture: my_net, ...}`` loadable; the registry is code, so only
code you import can add to it.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mean_geo.errors import MeanGeoError, RecipeError
from mean_geo.models.registry import ARCHITECTURES, register_architecture  # noqa: F401  (re-exported)
from mean_geo.utils.registry import Registry

#: recipe format written into checkpoints and exports by this version
RECIPE_FORMAT = "mean_geo-recipe/2"
MAX_LIST = 64  # "short lists": a recipe never needs more (ks, directions, altitudes)
MAX_STRING = 4096
PLAIN_SCALARS = (bool, int, float, str, type(None))


def _registered_architectures() -> Registry[Callable[..., Any]]:
    from mean_geo.models.mean import MEAN  # noqa: F401  (registers "mean")

    return ARCHITECTURES


#: the Hydra targets that mean_geo wrote into checkpoints and exports before recipes existed
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
        raise RecipeError(f"{where}: a string of {len(value)} characters (at most {MAX_STRING})")
    if isinstance(value, PLAIN_SCALARS):
        return value
    if depth >= 3:
        raise RecipeError(f"{where}: nested too deeply for a recipe")
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST:
            raise RecipeError(f"{where}: a list of {len(value)} items (at most {MAX_LIST})")
        return [check_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if len(value) > MAX_LIST:
            raise RecipeError(f"{where}: a mapping of {len(value)} keys (at most {MAX_LIST})")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise RecipeError(f"{where}: key {k!r} is not a string")
            if k == "_target_":
                raise RecipeError(f"{where}._target_: code references are not loaded from files")
            out[k] = check_plain(v, f"{where}.{k}", depth + 1)
        return out
    raise RecipeError(f"{where}: {type(value).__name__} is not plain data")


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
            raise RecipeError(f"{where}.{key}: not an argument of {where} (expected one of {sorted(params)})")
        hint = params[key][1]
        if not _accepts(hint, value):
            raise RecipeError(f"{where}.{key}={value!r}: expected {_hint_name(hint)}")
    missing = [n for n, (p, _) in params.items() if p.default is p.empty and n not in kwargs]
    if missing:
        raise RecipeError(f"{where}: missing required argument(s) {missing}")
    return kwargs


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# --- plugins: names of the user's modules, recorded, never imported from a file ---------------------
MAX_PLUGINS = 16


def plugin_names(value: Any, where: str = "plugins", error: type[Exception] = RecipeError) -> list[str]:
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


# --- the three recipes ----------------------------------------------------------------------------
def _legacy_name(section: Mapping[str, Any], where: str, expected: tuple[str, ...]) -> str | None:
    target = section.get("_target_")
    if target is None:
        return None
    name = LEGACY_TARGETS.get(target) if isinstance(target, str) else None
    if name not in expected:
        raise RecipeError(f"{where}._target_={target!r}: not a mean_geo {where} (refused: files may not name code)")
    return name


def model_recipe(section: Mapping[str, Any], where: str = "model", plugins: Sequence[str] = ()) -> dict[str, Any]:
    """``{"architecture": name, **kwargs}`` checked; accepts the legacy ``_target_`` form.

    ``plugins``: what the file records it was built with; an unregistered architecture's error
    names them (they are never imported here)."""
    if not isinstance(section, Mapping):
        raise RecipeError(f"{where}: expected a mapping, got {type(section).__name__}")
    section = dict(section)
    legacy = _legacy_name(section, where, ("mean",))
    section.pop("_target_", None)
    name = section.pop("architecture", legacy)
    try:
        cls = _registered_architectures().get(name)
    except RecipeError as exc:
        message = str(exc).replace("model.architecture=", f"{where}.architecture=", 1)
        raise RecipeError(message + _plugin_hint(plugins)) from None
    kwargs = check_kwargs(cls, section, where)
    backbone = kwargs.get("backbone")
    if backbone is not None:
        import timm

        if not timm.is_model(backbone):
            raise RecipeError(f"{where}.backbone={backbone!r}: not a timm model name")
    return {"architecture": name, **kwargs}


def build_model(recipe: Mapping[str, Any], where: str = "model", **overrides: Any):
    """The model a (checked) recipe describes; ``overrides`` are ours (e.g. ``pretrained=False``)."""
    checked = model_recipe({**recipe, **overrides}, where)
    kwargs = {k: v for k, v in checked.items() if k != "architecture"}
    return _registered_architectures()[checked["architecture"]](**kwargs)


def loss_recipe(section: Mapping[str, Any], where: str = "loss") -> dict[str, Any]:
    """The MEAN loss: its three weights and the plain arguments of its InfoNCE and CDA terms."""
    from mean_geo.losses import CDALoss, InfoNCELoss, MEANLoss

    if not isinstance(section, Mapping):
        raise RecipeError(f"{where}: expected a mapping, got {type(section).__name__}")
    section = dict(section)
    _legacy_name(section, where, ("loss",))
    section.pop("_target_", None)
    parts = {}
    for key, cls in (("infonce", InfoNCELoss), ("cda", CDALoss)):
        part = section.pop(key, None) or {}
        if not isinstance(part, Mapping):
            raise RecipeError(f"{where}.{key}: expected a mapping, got {type(part).__name__}")
        part = dict(part)
        _legacy_name(part, f"{where}.{key}", (key,))
        part.pop("_target_", None)
        parts[key] = check_kwargs(cls, part, f"{where}.{key}")
    weights = check_kwargs(MEANLoss, section, where)
    return {**weights, **parts}


def build_loss(recipe: Mapping[str, Any], where: str = "loss"):
    from mean_geo.losses import CDALoss, InfoNCELoss, MEANLoss

    checked = loss_recipe(recipe, where)
    infonce, cda = checked.pop("infonce"), checked.pop("cda")
    return MEANLoss(**checked, infonce=InfoNCELoss(**infonce), cda=CDALoss(**cda))


def _datamodules() -> Registry[type]:
    from mean_geo.data.datamodule import DATAMODULES  # registers sues200 and university1652

    return DATAMODULES


def dataset_recipe(section: Mapping[str, Any], where: str = "dataset", check_arguments: bool = True) -> dict[str, Any]:
    """``{"name": <registered layout>, **kwargs}`` checked (legacy ``_target_`` accepted).

    ``check_arguments=False`` checks the arguments as plain data only, not against the datamodule
    (for inference, which never builds one and must not import Lightning)."""
    if not isinstance(section, Mapping):
        raise RecipeError(f"{where}: expected a mapping, got {type(section).__name__}")
    section = dict(section)
    legacy = _legacy_name(section, where, ("sues200", "university1652"))
    section.pop("_target_", None)
    name = section.pop("name", legacy)
    if not check_arguments:  # inference never builds it: a name, and plain data
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise RecipeError(f"{where}.name={name!r}: not a dataset name")
        return {"name": name, **check_plain(section, where)}
    kwargs = check_kwargs(_datamodules().get(name), section, where)
    if kwargs.get("synthesize") is not None:  # a synthetic world's spec: its fields, nothing else
        from mean_geo.synthetic.writer import WorldSpec

        check_kwargs(WorldSpec, {"layout": name, **kwargs["synthesize"]}, f"{where}.synthesize")
    return {"name": name, **kwargs}


def build_datamodule_from_recipe(recipe: Mapping[str, Any], where: str = "dataset"):
    """The datamodule of a checked dataset recipe; a synthetic one gets its world writer."""
    checked = dataset_recipe(recipe, where)
    name = checked.pop("name")
    dm = _datamodules()[name](**checked)
    if dm.synthesize is not None:
        from mean_geo.synthetic.writer import WorldSpec, write_world

        try:
            spec = WorldSpec(layout=dm.layout, **{**dm.world_spec_kwargs(), **dm.synthesize})
        except MeanGeoError as exc:  # the spec names its own field; the user wrote dataset.synthesize.<field>
            raise type(exc)(f"{where}.synthesize.{exc}") from None
        dm.write_world = functools.partial(write_world, spec)
    return dm


def image_size_of(recipe: Mapping[str, Any], default: int = 384) -> int:
    """The training image size a recipe records (only this is read for inference)."""
    value = (recipe.get("dataset") or {}).get("image_size", default) if isinstance(recipe, Mapping) else default
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 8 <= value <= 4096:
        raise RecipeError(f"dataset.image_size={value!r}: expected a whole number of pixels (8..4096)")
    return value


def checkpoint_recipe(recipe: Any, where: str, build_dataset: bool = True) -> dict[str, Any]:
    """The whole recipe stored in a training checkpoint, checked: model, loss and (if any) dataset.

    ``build_dataset=False`` (inference: nothing will build a datamodule) checks the dataset section
    as plain data only, which keeps Lightning out of the import path."""
    if not isinstance(recipe, Mapping) or "model" not in recipe:
        raise RecipeError(f"{where}: not a mean_geo training checkpoint (no model recipe inside)")
    unknown = set(recipe) - {"format", "model", "loss", "dataset", "plugins"}
    if unknown:
        raise RecipeError(f"{where}: unexpected recipe key(s) {sorted(unknown)}")
    plugins = plugin_names(recipe.get("plugins"), f"{where}.plugins")
    out: dict[str, Any] = {"format": RECIPE_FORMAT, "model": model_recipe(recipe["model"], plugins=plugins)}
    if plugins:
        out["plugins"] = plugins
    if recipe.get("loss") is not None:
        out["loss"] = loss_recipe(recipe["loss"])
    if recipe.get("dataset"):
        out["dataset"] = dataset_recipe(recipe["dataset"], check_arguments=build_dataset)
    return out
