"""One generic registry for remedies, datasets, nets and metrics.

Built-ins register lazily as ``"module:attr"`` strings, so heavy code is imported only when a name is
used. Third-party plugins arrive through entry-point groups (``latentbench.remedies``, ...). A plugin
that raises while loading is reported once, by name, and left out; the rest still load.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import importlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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

    def __init__(self, kind: str, group: str | None = None, *, base: type | str | None = None,
                 builtins: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._base = base  # a class, or a lazy "module:Class"; registered objects must be of it
        self._builtins = builtins  # a module whose import registers the built-ins (beside their code)
        self._items: dict[str, T | str] = {}
        self._descriptions: dict[str, str] = {}
        self._plugins_loaded = group is None
        self.broken: dict[str, str] = {}

    @property
    def base(self) -> type | None:
        if isinstance(self._base, str):
            module, _, attr = self._base.partition(":")
            self._base = getattr(importlib.import_module(module), attr)
        return self._base

    def check(self, name: str, obj: Any) -> Any:
        """Raise a one-line :class:`UserError` unless ``obj`` is (a subclass or an instance of) ``base``."""
        base = self.base
        if base is None or isinstance(obj, str):
            return obj
        ok = issubclass(obj, base) if isinstance(obj, type) else isinstance(obj, base)
        if not ok:
            what = obj.__name__ if isinstance(obj, type) else type(obj).__name__
            raise UserError(f"{self.kind} {name!r} must be a {base.__module__}.{base.__qualname__}, "
                            f"got {what}; see README's plugin section")
        return obj

    @contextlib.contextmanager
    def isolated(self) -> Iterator[Registry[T]]:
        """Within the block, registrations (and plugin loads) are undone on exit: for tests."""
        self._load_builtins()
        saved = (dict(self._items), dict(self._descriptions), self._plugins_loaded, dict(self.broken))
        try:
            yield self
        finally:
            self._items, self._descriptions, self._plugins_loaded, self.broken = (
                saved[0], saved[1], saved[2], saved[3])

    def _load_builtins(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)

    # -- registration -------------------------------------------------------------------------
    def register(
        self, name: str, obj: T | str | None = None, *, description: str | None = None
    ) -> Callable[[T], T] | T | str:
        """Register ``obj`` (or decorate it) under ``name``; ``obj`` may be a lazy ``"module:attr"``."""
        validate_name(name)

        def add(target: T | str) -> T | str:
            self.check(name, target)
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
        self._load_builtins()
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
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - any plugin failure is reported, not fatal
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
            obj = self.check(name, getattr(importlib.import_module(module), attr))
            self._items[name] = obj
        return obj  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        if name in self.broken:
            return (f"{self.kind} {name!r} is a plugin that failed to load ({self.broken[name]}); "
                    "fix or reinstall its package")
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


@dataclass(frozen=True)
class Metric:
    """A metric: code registered with its direction (the lm-eval habit).

    ``fn(ctx)`` computes the value from a scoring context (``latentbench.score.scorer.ScoreContext``)
    and returns a float, or None where the metric does not apply to this cell (recorded as absent,
    never as a made-up number). ``higher_is_better`` is True or False for a ranked metric and None,
    given explicitly, for a descriptive one that tables show but never rank.
    """

    name: str
    fn: Callable[[Any], float | None]
    higher_is_better: bool | None
    description: str

    def __call__(self, ctx: Any) -> float | None:
        return self.fn(ctx)

    @property
    def lower_is_better(self) -> bool:
        return self.higher_is_better is False

    @property
    def ranked(self) -> bool:
        return self.higher_is_better is not None

    @property
    def direction(self) -> str:
        return {True: "higher is better", False: "lower is better", None: "descriptive, not ranked"}[
            self.higher_is_better]


_UNSET: Any = object()


def register_metric(name: str, *, higher_is_better: bool | None = _UNSET, description: str,
                    registry: Registry[Metric] | None = None) -> Callable[[Callable[[Any], float | None]], Metric]:
    """Decorator: register ``fn(ctx) -> float | None`` as metric ``name``.

    ``higher_is_better`` must be given (True, False, or None for a descriptive metric): a metric with
    no known direction is an error, not a silent default.
    """
    if higher_is_better is _UNSET or higher_is_better not in (True, False, None):
        raise ValueError(f"metric {name!r}: pass higher_is_better=True, False or None (descriptive)")

    def deco(fn: Callable[[Any], float | None]) -> Metric:
        metric = Metric(validate_name(name), fn, higher_is_better, description)
        (registry or METRICS).register(name, metric, description=description)
        return metric

    return deco


REMEDIES: Registry[Any] = Registry("remedy", "latentbench.remedies", base="latentbench.remedies:Remedy")
DATASETS: Registry[Any] = Registry("dataset", "latentbench.datasets")
NETS: Registry[Any] = Registry("net", "latentbench.nets")
METRICS: Registry[Metric] = Registry("metric", "latentbench.metrics", base=Metric,
                                     builtins="latentbench.score.metrics")

REGISTRIES = {"remedies": REMEDIES, "datasets": DATASETS, "nets": NETS, "metrics": METRICS}
