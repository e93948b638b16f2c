"""One generic registry for remedies, datasets, nets and metrics.

Built-ins register lazily as ``"module:attr"`` strings, so heavy code is imported only when a name is
used. Third-party plugins arrive through entry-point groups (``latentbench.remedies``, ...). A plugin
that raises while loading is reported once, by name, and left out; the rest still load.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Generic, TypeVar

from latentbench.errors import UserError

T = TypeVar("T")

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def validate_name(name: str) -> str:
    """Names are lowercase ``[a-z0-9_]``, starting with a letter (no spaces, no path separators)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid name {name!r}: use lowercase letters, digits and '_', starting with a letter"
        )
    return name


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "description", None) or getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


class Registry(Generic[T]):
    """A named collection of objects of one kind (``kind`` is used in error messages).

    >>> r = Registry("widget")
    >>> @r.register("foo")
    ... class Foo: "A foo."
    >>> r.get("foo").__name__
    'Foo'
    """

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, T | str] = {}
        self._descriptions: dict[str, str] = {}
        self._plugins_loaded = group is None
        self.broken: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------------
    def register(
        self, name: str, obj: T | str | None = None, *, description: str | None = None
    ) -> Callable[[T], T] | T | str:
        """Register ``obj`` (or decorate it) under ``name``; ``obj`` may be a lazy ``"module:attr"``."""
        validate_name(name)

        def add(target: T | str) -> T | str:
            old = self._items.get(name)
            if old is not None and old is not target:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = target
            if description is not None:
                self._descriptions[name] = description
            return target

        if obj is None:
            return add  # used as a decorator
        return add(obj)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            before = dict(self._items)
            try:
                validate_name(ep.name)
                obj = ep.load()
                if not isinstance(obj, ModuleType):  # a module registers itself on import
                    self.register(ep.name, obj)
                if ep.name not in self._items:
                    raise ValueError(f"loading {ep.value!r} did not register {ep.name!r}")
            except Exception as exc:  # noqa: BLE001 - any plugin failure is reported, not fatal
                self._items = before  # roll back whatever the plugin registered
                self.broken[ep.name] = f"{type(exc).__name__}: {exc}"
                print(
                    f"latentbench: warning: {self.kind} plugin {ep.name!r} ({ep.value}) failed to load "
                    f"and is left out: {type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )

    # -- lookup -------------------------------------------------------------------------------
    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by an fnmatch pattern (``"*vamp*"``)."""
        self._load_plugins()
        names = sorted(self._items)
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._items

    def get(self, name: str) -> T:
        """The object registered under ``name``; an unknown name raises :class:`UserError`."""
        self._load_plugins()
        if name not in self._items:
            raise UserError(self.unknown_message(name))
        obj = self._items[name]
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._items[name] = obj
        return obj  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} known: {', '.join(known)}"

    def describe(self, name: str) -> str:
        """A one-line description: the registered one, else the first docstring line."""
        if name in self._descriptions:
            return self._descriptions[name]
        try:
            return _first_line(self.get(name))
        except Exception as exc:  # noqa: BLE001 - listing must not die on one bad entry
            return f"(failed to load: {type(exc).__name__}: {exc})"


REMEDIES: Registry[Any] = Registry("remedy", "latentbench.remedies")
DATASETS: Registry[Any] = Registry("dataset", "latentbench.datasets")
NETS: Registry[Any] = Registry("net", "latentbench.nets")
METRICS: Registry[Any] = Registry("metric")

REGISTRIES = {"remedies": REMEDIES, "datasets": DATASETS, "nets": NETS, "metrics": METRICS}
