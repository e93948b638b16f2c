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
        # a module whose import registers the built-ins beside their code, or a "module:function" that does
        self._builtins = builtins
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
            target, self._builtins = self._builtins, None
            module, _, attr = target.partition(":")
            loaded = importlib.import_module(module)
            if attr:
                getattr(loaded, attr)()

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


GOALS = ("min", "max", "target", "describe")
BOUNDS = (None, "lower", "upper")


@dataclass(frozen=True)
class Metric:
    """A metric: code registered with its goal (the lm-eval habit).

    ``fn(ctx)`` computes the value from a scoring context (``latentbench.score.scorer.ScoreContext``)
    and returns a float, or None where the metric does not apply to this cell (recorded as absent,
    never as a made-up number).

    ``goal`` is how tables read it: ``"min"`` or ``"max"`` (ranked), ``"target"`` (ranked by the
    distance to ``target``, e.g. ``hole_fraction``, 0.01 when the prior matches), or ``"describe"``
    (shown, never ranked or bolded). ``bound`` says when the number is a bound rather than an estimate
    (``"lower"`` or ``"upper"``): a bound is shown as one and never ranked, whatever its goal.
    """

    name: str
    fn: Callable[[Any], float | None]
    goal: str
    description: str
    target: float | None = None
    bound: str | None = None

    def __call__(self, ctx: Any) -> float | None:
        return self.fn(ctx)

    @property
    def higher_is_better(self) -> bool | None:
        """True / False for a metric ranked by its value, None otherwise (kept for older plugins)."""
        return {"max": True, "min": False}.get(self.goal) if self.ranked else None

    @property
    def lower_is_better(self) -> bool:
        return self.goal == "min" and self.ranked

    @property
    def ranked(self) -> bool:
        return self.goal in ("min", "max", "target") and self.bound is None

    def badness(self, value: float) -> float:
        """A number that is smaller for a better value (only for ranked metrics)."""
        if self.goal == "max":
            return -value
        if self.goal == "target":
            return abs(value - float(self.target))  # type: ignore[arg-type]
        return value

    @property
    def direction(self) -> str:
        text = (f"best at {self.target:g}" if self.goal == "target" else
                {"min": "lower is better", "max": "higher is better", "describe": "descriptive, not ranked"}[self.goal])
        if self.bound is not None:
            text = f"{self.bound} bound, not ranked" + ("" if self.goal == "describe" else f"; {text}")
        return text


_UNSET: Any = object()


def register_metric(name: str, *, higher_is_better: bool | None = _UNSET, description: str,
                    goal: str | None = None, target: float | None = None, bound: str | None = None,
                    registry: Registry[Metric] | None = None) -> Callable[[Callable[[Any], float | None]], Metric]:
    """Decorator: register ``fn(ctx) -> float | None`` as metric ``name``.

    Give its ``goal`` (``"min"``, ``"max"``, ``"target"`` with ``target=``, or ``"describe"``), or, as
    older plugins do, ``higher_is_better`` (True = max, False = min, None = describe). A metric with no
    goal is an error, not a silent default. ``bound="lower"`` / ``"upper"`` marks an estimator that is
    a bound (never ranked).
    """
    if goal is None:
        if higher_is_better is _UNSET or higher_is_better not in (True, False, None):
            raise ValueError(f"metric {name!r}: pass goal='min'|'max'|'target'|'describe' "
                             "(or higher_is_better=True, False or None)")
        goal = {True: "max", False: "min", None: "describe"}[higher_is_better]
    if goal not in GOALS:
        raise ValueError(f"metric {name!r}: goal must be one of {', '.join(GOALS)}, got {goal!r}")
    if (goal == "target") != (target is not None):
        raise ValueError(f"metric {name!r}: goal='target' needs target=VALUE (and only it takes one)")
    if bound not in BOUNDS:
        raise ValueError(f"metric {name!r}: bound must be 'lower', 'upper' or None, got {bound!r}")

    def deco(fn: Callable[[Any], float | None]) -> Metric:
        metric = Metric(validate_name(name), fn, goal, description, target, bound)
        (registry or METRICS).register(name, metric, description=description)
        return metric

    return deco


REMEDIES: Registry[Any] = Registry("remedy", "latentbench.remedies", base="latentbench.remedies:Remedy",
                                   builtins="latentbench.remedies:import_builtins")
DATASETS: Registry[Any] = Registry("dataset", "latentbench.datasets")
NETS: Registry[Any] = Registry("net", "latentbench.nets")
METRICS: Registry[Metric] = Registry("metric", "latentbench.metrics", base=Metric,
                                     builtins="latentbench.score.metrics")

REGISTRIES = {"remedies": REMEDIES, "datasets": DATASETS, "nets": NETS, "metrics": METRICS}
