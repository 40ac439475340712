"""One small registry for everything a config or a saved file may name by a string.

Model architectures, losses and dataset layouts (timm's ``register_model`` / ``list_models`` habit).

A name is registered by code the user imports (ours, or a plugin they pass on the command line),
never by a file, so a checkpoint that names an unknown thing cannot make us import anything; the
miss is one line with the closest registered names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from mean_geo.errors import ConfigError, SpecError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Names → classes of one kind.

    A read-only mapping (``name in r``, ``r[name]``, ``sorted(r)``) with :meth:`register` (a class
    decorator that refuses a name taken by another class), :meth:`get` (a miss names the closest
    names) and :meth:`names`.

    Args:
        kind: what is registered, for messages ("architecture", "dataset").
        key: the config key that selects one ("model.architecture", "dataset.name").
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind, self.key = kind, key
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@REGISTRY.register("my_net")``.

        Raises:
            ConfigError: ``name`` is already another class's (the same class again is a no-op).
        """

        def add(obj: T) -> T:
            old = self._entries.get(name)
            if old is not None and _qualname(old) != _qualname(obj):
                raise ConfigError(
                    f"{self.kind} {name!r} is registered twice ({_qualname(old)} and {_qualname(obj)}); "
                    "give the new one another name"
                )
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: object) -> T:  # type: ignore[override]
        """The class registered as ``name``.

        Raises:
            SpecError: unknown name; the message lists the closest registered names.
        """
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SpecError(f"{self.key}={name!r}: unknown {self.kind} (registered: {', '.join(self.names())}){hint}")

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
