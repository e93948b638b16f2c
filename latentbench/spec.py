"""Cells and grids: what one benchmark cell is, and how a TOML spec expands into cells.

A spec file (``baselines/*.toml``) has top-level keys for the grid and the shared training knobs,
and tables for the sub-parameters::

    name = "digits"                # runs/<name>/
    dataset = "digits"
    remedies = ["vae", "beta_vae"]
    latents = ["2", "32", "4x4x8"]
    seeds = [0, 1, 2]
    epochs = 60
    [data]    # dataset parameters (data_root, download, max_train, ...)
    [net]     # net parameters (hidden, channels, ...)
    [score]   # n_samples, iw_k, features
    [remedy.beta_vae]
    beta = 4.0

Unknown keys, wrong types and invalid TOML fail with one line naming the key (and table) or line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from latentbench.errors import UserError
from latentbench.latent import LatentShape

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Fields that decide how a cell is trained; the rest decide how it is scored.
TRAIN_FIELDS = (
    "dataset", "data", "arch", "net", "remedy", "remedy_params", "latent", "seed", "epochs",
    "batch_size", "lr", "kl_warmup", "early_stop", "val_fraction", "likelihood", "sigma",
)


@dataclass
class Cell:
    """One grid cell: a dataset, an architecture, a remedy, a latent size and a seed."""

    dataset: str = "digits"
    arch: str = "mlp"
    remedy: str = "vae"
    latent: str = "32"
    seed: int = 0
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    kl_warmup: int = 0
    early_stop: int = 0
    val_fraction: float = 0.1
    likelihood: str = "gaussian"
    sigma: float = 0.05
    n_samples: int = 10000
    iw_k: int = 100
    features: str = "domain"
    remedy_params: dict[str, Any] = field(default_factory=dict)
    net: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.latent = str(LatentShape.parse(self.latent))
        validate_cell(self)

    @property
    def latent_shape(self) -> LatentShape:
        return LatentShape.parse(self.latent)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def id(self) -> str:
        """A stable id: readable prefix + hash of the full spec (order-free, canonical JSON)."""
        return f"{self.remedy}-{self.latent}-s{self.seed}-{_hash(self.to_dict())}"

    @property
    def train_key(self) -> str:
        d = self.to_dict()
        return _hash({k: d[k] for k in TRAIN_FIELDS})


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def validate_cell(cell: Cell) -> None:
    """Range checks that would otherwise fail deep inside training."""
    checks = [
        (cell.seed >= 0, f"seed must be >= 0, got {cell.seed}"),
        (cell.epochs >= 1, f"epochs must be >= 1, got {cell.epochs}"),
        (cell.batch_size >= 1, f"batch_size must be >= 1, got {cell.batch_size}"),
        (cell.lr > 0, f"lr must be > 0, got {cell.lr}"),
        (cell.kl_warmup >= 0, f"kl_warmup must be >= 0, got {cell.kl_warmup}"),
        (cell.early_stop >= 0, f"early_stop must be >= 0, got {cell.early_stop}"),
        (0 < cell.val_fraction < 1, f"val_fraction must be in (0, 1), got {cell.val_fraction}"),
        (cell.sigma > 0, f"sigma must be > 0, got {cell.sigma}"),
        (cell.n_samples >= 2, f"n_samples must be >= 2, got {cell.n_samples}"),
        (cell.iw_k >= 1, f"iw_k must be >= 1, got {cell.iw_k}"),
        (cell.features in ("domain", "inception"), f"features must be 'domain' or 'inception', got {cell.features!r}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)


@dataclass
class Grid:
    """Remedies x latent sizes x seeds over one shared cell template."""

    name: str = "default"
    remedies: list[str] = field(default_factory=list)
    latents: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    base: dict[str, Any] = field(default_factory=dict)
    remedy_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        out = []
        for remedy in self.remedies:
            for latent in self.latents:
                for seed in self.seeds:
                    params = dict(self.remedy_params.get(remedy, {}))
                    out.append(
                        Cell(**self.base, remedy=remedy, latent=latent, seed=seed, remedy_params=params)
                    )
        return out


# ---- TOML -------------------------------------------------------------------------------------
_TOP_GRID = {"name": str, "remedies": list, "latents": list, "seeds": list}
_TOP_CELL = {
    "dataset": str, "arch": str, "epochs": int, "batch_size": int, "lr": float, "kl_warmup": int,
    "early_stop": int, "val_fraction": float, "likelihood": str, "sigma": float,
}
_SCORE = {"n_samples": int, "iw_k": int, "features": str}
_TABLES = {"data": "data", "net": "net", "score": None, "remedy": None}


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}[t]


def _check(key: str, value: Any, typ: type, where: str, src: str) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, typ) or isinstance(value, bool):
        raise UserError(
            f"{src}: key {key!r} in {where} must be {_type_name(typ)}, got {type(value).__name__} {value!r}"
        )
    return value


def _unknown(key: str, known: list[str], where: str, src: str) -> UserError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UserError(f"{src}: unknown key {key!r} in {where}{hint} known: {', '.join(sorted(known))}")


def grid_from_dict(d: dict[str, Any], src: str = "spec") -> Grid:
    """Build a :class:`Grid` from a parsed TOML document, rejecting unknown keys and bad types."""
    grid = Grid()
    base: dict[str, Any] = {}
    top_known = list(_TOP_GRID) + list(_TOP_CELL) + list(_TABLES)
    for key, value in d.items():
        if key in _TOP_GRID:
            value = _check(key, value, _TOP_GRID[key], "the top level", src)
            if key == "latents":
                value = [str(LatentShape.parse(v)) for v in value]
            elif key == "seeds":
                value = [_check("seeds", v, int, "the top level", src) for v in value]
            elif key == "remedies":
                value = [_check("remedies", v, str, "the top level", src) for v in value]
            setattr(grid, key, value)
        elif key in _TOP_CELL:
            base[key] = _check(key, value, _TOP_CELL[key], "the top level", src)
        elif key in ("data", "net"):
            base[key] = dict(_check(key, value, dict, "the top level", src))
        elif key == "score":
            table = _check(key, value, dict, "the top level", src)
            for k, v in table.items():
                if k not in _SCORE:
                    raise _unknown(k, list(_SCORE), "[score]", src)
                base[k] = _check(k, v, _SCORE[k], "[score]", src)
        elif key == "remedy":
            table = _check(key, value, dict, "the top level", src)
            for name, params in table.items():
                grid.remedy_params[name] = dict(_check(name, params, dict, "[remedy]", src))
        else:
            raise _unknown(key, top_known, "the top level", src)
    grid.base = base
    return grid


def load_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None


def load_grid(path: str | Path) -> Grid:
    """Load a grid spec file (see the module docstring for its keys)."""
    grid = grid_from_dict(load_toml(path), src=str(path))
    if grid.name == "default":
        grid.name = Path(path).stem
    return grid


def grid_to_toml(grid: Grid) -> str:
    """Write a grid as a TOML spec that :func:`load_grid` reads back."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} to TOML")

    lines = [f"name = {val(grid.name)}", f"remedies = {val(grid.remedies)}",
             f"latents = {val(grid.latents)}", f"seeds = {val(grid.seeds)}"]
    score = {}
    tables: dict[str, dict[str, Any]] = {}
    for k, v in grid.base.items():
        if k in _SCORE:
            score[k] = v
        elif k in ("data", "net"):
            tables[k] = v
        else:
            lines.append(f"{k} = {val(v)}")
    for tname, table in (*tables.items(), ("score", score)):
        if table:
            lines.append(f"\n[{tname}]")
            lines += [f"{k} = {val(v)}" for k, v in table.items()]
    for rname, params in grid.remedy_params.items():
        if params:
            lines.append(f"\n[remedy.{rname}]")
            lines += [f"{k} = {val(v)}" for k, v in params.items()]
    return "\n".join(lines) + "\n"
