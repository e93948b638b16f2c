"""A remedy's own parameters: a dataclass of typed fields with their defaults, checked once.

A remedy declares them beside its code, the way a dataclass config is declared in most ML tooling
(lm-eval's task configs, timm's pretrained configs)::

    class BetaVAERemedy(Remedy):
        @dataclass(frozen=True)
        class Params:
            beta: float = 4.0

and reads them as ``self.params.beta``. Values from a spec (``[remedy.beta_vae] beta = 4``), from a
flag or from an Optuna trial are checked against the declared types once, when the remedy is created,
and coerced the way the remedies used to cast them (an int where a float is declared becomes that float,
an integral float where an int is declared becomes that int); an unknown name or a wrong type is one
:class:`~latentbench.errors.UserError` naming the parameter and the known ones.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from latentbench.errors import UserError
from latentbench.priors.base import ExpostCodes


class _Mismatch(TypeError):
    """A value that is not of its declared type (the text says what was expected)."""


def field_types(params_cls: type) -> dict[str, Any]:
    """The declared type of each field of a ``Params`` dataclass, string annotations resolved."""
    hints = typing.get_type_hints(params_cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(params_cls) if f.init}


def _expected(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in get_args(tp))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "none"}
    if tp in names:
        return names[tp]
    return f"a {getattr(origin or tp, '__name__', tp)}"


def coerce(value: Any, tp: Any) -> Any:
    """``value`` as the declared type ``tp``; raises ``_Mismatch`` when it is not one."""
    origin = get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin is Literal:
        for option in get_args(tp):
            if value == option and type(value) is type(option):
                return option
        raise _Mismatch(_expected(tp))
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch(_expected(tp))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is type(None):
        if value is None:
            return None
    elif origin in (tuple, list) and isinstance(value, (tuple, list)):
        args = get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0]) for v in value)
        if origin is list and len(args) == 1:
            return [coerce(v, args[0]) for v in value]
        return origin(value)
    elif isinstance(origin or tp, type):
        if isinstance(value, origin or tp):
            return value
    else:
        return value  # a type this check does not know: the remedy reads it as given
    raise _Mismatch(_expected(tp))


def signature(params_cls: type) -> str:
    """``name: type = default, ...`` of a ``Params`` dataclass, for messages and listings."""
    types_ = field_types(params_cls)
    out = []
    for f in dataclasses.fields(params_cls):
        if not f.init:
            continue
        tp = types_[f.name]
        tname = ("|".join(repr(a) for a in get_args(tp)) if get_origin(tp) is Literal
                 else "any" if tp is Any else getattr(tp, "__name__", str(tp)))
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        out.append(f"{f.name}: {tname} = {default!r}")
    return ", ".join(sorted(out)) or "none"


def make_params(owner: str, params_cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of ``params_cls`` from ``values`` over its defaults, each value checked and coerced
    once; an unknown name or a wrong type is a one-line :class:`UserError` (``owner``: the remedy)."""
    declared = field_types(params_cls)
    for name in sorted(values):
        if name not in declared:
            close = difflib.get_close_matches(str(name), list(declared), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"remedy {owner!r} has no parameter {name!r}{hint}; its parameters: "
                            f"{signature(params_cls)}")
    kwargs = {}
    for name, value in values.items():
        try:
            kwargs[name] = coerce(value, declared[name])
        except _Mismatch as exc:
            raise UserError(f"remedy {owner!r} parameter {name!r} must be {exc}, got {value!r} "
                            f"({type(value).__name__}); its parameters: {signature(params_cls)}") from None
    try:
        return params_cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a required field left out, or the dataclass's own check
        raise UserError(f"remedy {owner!r}: {exc}; its parameters: {signature(params_cls)}") from None


def _getitem(self: Any, name: str) -> Any:
    if not isinstance(name, str) or name not in {f.name for f in dataclasses.fields(self)}:
        raise KeyError(name)
    return getattr(self, name)


def params_from_dict(owner: str, defaults: Mapping[str, Any]) -> type:
    """The ``Params`` dataclass of a remedy written against the dict API (``params = {"df": 3.0}``).

    Its fields take any value, as that API did (such a remedy casts what it reads), except ``codes``,
    which is an :data:`~latentbench.priors.base.ExpostCodes`. Instances also answer ``params["df"]``."""
    spec = [(name, ExpostCodes if name == "codes" else Any,
             dataclasses.field(default_factory=functools.partial(copy.deepcopy, value))
             if isinstance(value, (list, dict, set))
             else dataclasses.field(default=value))
            for name, value in defaults.items()]
    return dataclasses.make_dataclass(f"{owner}Params", spec, frozen=True, namespace={"__getitem__": _getitem})


class ParamView(Mapping[str, Any]):
    """A read-only mapping view of a ``Params`` instance: ``remedy.p["beta"]`` (the dict API's reads)."""

    __slots__ = ("_params",)

    def __init__(self, params: Any) -> None:
        self._params = params

    def __getitem__(self, name: str) -> Any:
        if not isinstance(name, str) or name not in self._names():
            raise KeyError(name)
        return getattr(self._params, name)

    def _names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self._params)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(dict(self))
