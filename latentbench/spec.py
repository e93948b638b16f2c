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
    [score]   # n_samples, iw_k, iw_images, features
    [remedy.beta_vae]
    beta = 4.0
    [[subgrid]]   # more cells with the same settings: these remedies at these latents (and every seed)
    remedies = ["vae", "expost_gmm"]
    latents = ["8x8x64"]

Unknown keys, wrong types and invalid TOML fail with one line naming the key (and table) or line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from latentbench.errors import UserError
from latentbench.latent import LatentShape

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


PRECISIONS = ("fp32", "tf32", "bf16")


def _f(default: Any, help: str, *, where: str = "top", train: bool = True, tune: list | None = None,
       new: bool = False, factory: Any = None) -> Any:
    """A :class:`Cell` field and what the rest of latentbench derives from it.

    ``where``: ``top`` (a top-level spec key and a CLI flag), ``score`` (a key of the spec's
    ``[score]`` table and a CLI flag), ``table`` (a spec table of its own: ``[data]``, ``[net]``),
    ``grid`` (set per cell by the grid: remedy, latent, seed, remedy parameters).
    ``train``: the field changes the trained model (checkpoint identity, ``TRAIN_FIELDS``).
    ``tune``: the choices Optuna's shared knobs draw from. ``new``: added after the first records
    were published, so it stays out of the cell id while it has its default (old ids stay valid).
    """
    meta = {"help": help, "where": where, "train": train, "tune": tune, "new": new}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Cell:
    """One grid cell: a dataset, an architecture, a remedy, a latent size and a seed.

    This dataclass is the one source of a cell's fields and defaults: spec keys, CLI flags,
    Optuna's shared knobs, the fair-comparison fields and ``TRAIN_FIELDS`` are derived from it.
    """

    dataset: str = _f("digits", "registered dataset, or npz:PATH / folder:PATH")
    arch: str = _f("mlp", "encoder/decoder family: mlp or conv (or a plugin net)")
    remedy: str = _f("vae", "remedy name", where="grid")
    latent: str = _f("32", "flat '32' or spatial HxWxC like '8x8x1024'", where="grid")
    seed: int = _f(0, "seed of split, init, sampling and scoring", where="grid")
    epochs: int = _f(100, "training epochs")
    lr: float = _f(1e-3, "Adam learning rate", tune=[3e-4, 1e-3, 3e-3])
    batch_size: int = _f(128, "training batch size", tune=[64, 128, 256])
    kl_warmup: int = _f(0, "epochs of linear KL warm-up", tune=[0, 10])
    early_stop: int = _f(0, "patience in epochs on the held-out ELBO (0 = off)")
    val_fraction: float = _f(0.1, "share of the training images held out for validation")
    likelihood: str = _f("gaussian", "bernoulli, gaussian (fixed sigma), gaussian_learned")
    sigma: float = _f(0.05, "Gaussian likelihood sigma (initial value if learned)")
    precision: str = _f("fp32", "training precision: fp32 (measured fastest for the built-in nets), tf32 or bf16",
                        new=True)
    n_samples: int = _f(10000, "samples per set for scoring", where="score", train=False)
    iw_k: int = _f(100, "importance samples per image for nll_iw", where="score", train=False)
    iw_images: int = _f(0, "held-out images the likelihood bound nll_iw averages over, the first N of the test "
                           "split (0 = all)", where="score", train=False, new=True)
    features: str = _f("domain", "feature space for FID/KID/PRC: domain or inception", where="score", train=False)
    remedy_params: dict[str, Any] = _f(None, "the remedy's own parameters", where="grid", factory=dict)
    net: dict[str, Any] = _f(None, "net parameters ([net] table)", where="table", factory=dict)
    data: dict[str, Any] = _f(None, "dataset parameters ([data] table)", where="table", factory=dict)

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

    def _identity(self, *, location: bool = False) -> dict[str, Any]:
        """What the id hashes: the cell without new fields at their defaults and (unless ``location``)
        without where the data lives (:data:`DATA_LOCATION_KEYS`), which never changes a number."""
        d = self.to_dict()
        for f in fields(self):
            if f.metadata.get("new") and d[f.name] == _default(f):
                del d[f.name]
        if not location:
            d["data"] = {k: v for k, v in d["data"].items() if k not in DATA_LOCATION_KEYS}
        return d

    @property
    def id(self) -> str:
        """A stable id: readable prefix + hash of the full spec but the data's location (order-free,
        canonical JSON)."""
        return f"{self.remedy}-{self.latent}-s{self.seed}-{_hash(self._identity())}"

    @property
    def legacy_id(self) -> str:
        """The id this cell had while the data's location was part of it (the id when it has none)."""
        return f"{self.remedy}-{self.latent}-s{self.seed}-{_hash(self._identity(location=True))}"

    @property
    def train_key(self) -> str:
        d = self._identity()
        return _hash({k: d[k] for k in TRAIN_FIELDS if k in d})


# [data] keys that say where the dataset is, not what it is: never part of a cell's id or settings
DATA_LOCATION_KEYS = ("data_root", "download")


def _default(f: Any) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def cell_fields(where: str | None = None, *, train: bool | None = None) -> list[Any]:
    """The :class:`Cell` fields, filtered by where they are set and whether they change training."""
    return [f for f in fields(Cell) if (where is None or f.metadata["where"] == where)
            and (train is None or f.metadata["train"] == train)]


def field_type(f: Any) -> type:
    """The Python type of a cell field (annotations are strings under ``from __future__``)."""
    return {"str": str, "int": int, "float": float}.get(str(f.type), dict)


# Fields that decide how a cell is trained; the rest decide how it is scored.
TRAIN_FIELDS = tuple(f.name for f in fields(Cell) if f.metadata["train"])
# Optuna's shared knobs: every field with tuning choices.
TUNE_KNOBS = {f.name: list(f.metadata["tune"]) for f in fields(Cell) if f.metadata["tune"]}


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
        (cell.n_samples >= 4, f"n_samples {cell.n_samples} is too small to score: precision/recall need at least 4 "
                              "samples per set (their 3 nearest neighbours); use --n-samples 4 or more (--n for score and score-samples)"),
        (cell.iw_k >= 1, f"iw_k must be >= 1, got {cell.iw_k}"),
        (cell.iw_images >= 0, f"iw_images must be >= 0 (0 = every held-out image), got {cell.iw_images}"),
        (cell.features in ("domain", "inception"), f"features must be 'domain' or 'inception', got {cell.features!r}"),
        (cell.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {cell.precision!r}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    for where, table in (("", {"lr": cell.lr, "sigma": cell.sigma, "val_fraction": cell.val_fraction}),
                         (f"[remedy.{cell.remedy}] ", cell.remedy_params), ("[net] ", cell.net)):
        for key, value in table.items():  # inf and nan pass the range checks, then train every cell to a failure
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{where}{key} must be a finite number, got {value}")


@dataclass
class Grid:
    """Remedies x latent sizes x seeds over one shared cell template, plus ``subgrids``: more
    (remedies x latents) blocks over the same seeds and settings (a board that runs every remedy at
    some latents and a few at others)."""

    name: str = "default"
    remedies: list[str] = field(default_factory=list)
    latents: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    base: dict[str, Any] = field(default_factory=dict)
    remedy_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    subgrids: list[dict[str, list[str]]] = field(default_factory=list)

    def cells(self) -> list[Cell]:
        out, seen = [], set()
        blocks = [(self.remedies, self.latents)] + [(b["remedies"], b["latents"]) for b in self.subgrids]
        for remedies, latents in blocks:
            for remedy in remedies:
                for latent in latents:
                    for seed in self.seeds:
                        params = dict(self.remedy_params.get(remedy, {}))
                        cell = Cell(**self.base, remedy=remedy, latent=latent, seed=seed, remedy_params=params)
                        if cell.id not in seen:
                            seen.add(cell.id)
                            out.append(cell)
        return out

    def all_remedies(self) -> list[str]:
        """Every remedy of the grid and its subgrids, each once, in order."""
        return list(dict.fromkeys([*self.remedies, *(r for b in self.subgrids for r in b["remedies"])]))


# ---- TOML -------------------------------------------------------------------------------------
_TOP_GRID = {"name": str, "remedies": list, "latents": list, "seeds": list}
_TOP_CELL = {f.name: field_type(f) for f in cell_fields("top")}
_SCORE = {f.name: field_type(f) for f in cell_fields("score")}
_TABLE_FIELDS = tuple(f.name for f in cell_fields("table"))
_TABLES = (*_TABLE_FIELDS, "score", "remedy", "subgrid")


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
        elif key in _TABLE_FIELDS:
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
        elif key == "subgrid":
            for block in _check(key, value, list, "the top level", src):
                block = _check(key, block, dict, "[[subgrid]]", src)
                for k in block:
                    if k not in ("remedies", "latents"):
                        raise _unknown(k, ["remedies", "latents"], "[[subgrid]]", src)
                if set(block) != {"remedies", "latents"}:
                    raise UserError(f"{src}: a [[subgrid]] needs both remedies and latents")
                grid.subgrids.append({
                    "remedies": [_check("remedies", v, str, "[[subgrid]]", src)
                                 for v in _check("remedies", block["remedies"], list, "[[subgrid]]", src)],
                    "latents": [str(LatentShape.parse(_check("latents", v, str, "[[subgrid]]", src)))
                                for v in _check("latents", block["latents"], list, "[[subgrid]]", src)]})
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
        if isinstance(v, str):  # TOML reads \uXXXX but not JSON's surrogate pairs: non-ASCII is written as is
            return json.dumps(v, ensure_ascii=False)
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
        elif k in _TABLE_FIELDS:
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
    for block in grid.subgrids:
        lines += ["\n[[subgrid]]", f"remedies = {val(block['remedies'])}", f"latents = {val(block['latents'])}"]
    return "\n".join(lines) + "\n"
