"""The fair-comparison guard: which records may be averaged and ranked together.

Records are ranked together only when their cells agree on every setting but the remedy and its
parameters (dataset and split, arch, training knobs, likelihood, sample counts, feature extractor)
and were scored by the same scorer version. This holds between folders (a run beside a published
board) and inside one folder (a second run with other settings into the same ``--out``): records are
first split by their settings, so two settings are never averaged into one row.

Latent sizes and seeds are compared as sets: a run on a subset of a board's latent sizes or seeds is
ranked on the cells both have, and the tables say so ("compared on z=2,8 seed 0"). Fields a scorer
derives per cell (the feature key, which follows the seed's data split; the sample counts actually
drawn) are compared cell by cell on those common cells, and only when the settings agree, so they
never appear as causes of their own.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from latentbench.errors import UserError
from latentbench.latent import LatentShape
from latentbench.results import Record, RecordLike, as_record, as_records
from latentbench.spec import DATA_LOCATION_KEYS, Cell

CELL_FIELDS_EXEMPT = ("remedy", "remedy_params", "latent", "seed")
SETTING_NOTES = ("scorer_version",)
CELL_NOTES = ("feature_key", "n_prior", "n_post", "n_data", "iw_k", "n_geometry", "n_geometry_posteriors")
# Flags of `latentbench run` that choose what runs and where, not how: replaced in a suggested command.
_RUN_SELECTORS = ("--remedies", "--latents", "--seeds", "--out", "--shard", "--name")


def _show(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


# A record written before a cell field existed ran with that field's default.
_DEFAULTS = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default for f in fields(Cell)}


def settings(record: RecordLike) -> dict[str, str]:
    """The settings a record shares with every record it may be ranked with."""
    record = as_record(record)
    return cell_settings(record.cell, record.notes)


def cell_settings(cell: Mapping[str, Any], notes: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The settings of a cell (``Cell.to_dict``) scored with ``notes`` (none yet for a cell to run)."""
    cell = {**_DEFAULTS, **cell}
    if isinstance(cell.get("data"), dict):  # where the data lives is no setting (it changes no number)
        cell["data"] = {k: v for k, v in cell["data"].items() if k not in DATA_LOCATION_KEYS}
    out = {k: _show(v) for k, v in cell.items() if k not in CELL_FIELDS_EXEMPT}
    notes = notes or {}
    out.update({k: _show(notes.get(k)) for k in SETTING_NOTES})
    return out


def _key(record: Record) -> str:
    return json.dumps(settings(record), sort_keys=True)


def latent_order(latents: Any) -> list[str]:
    """Latent sizes in numeric order (2, 8, 32, 128, not 128, 2, 32)."""
    return sorted(set(latents), key=lambda s: LatentShape.parse(s).sort_key())


def scope_text(latents: Any, seeds: Any) -> str:
    """'z=2,8 seed 0' / 'z=2 seeds 0,1'."""
    seeds = sorted(set(seeds))
    return (f"z={','.join(latent_order(latents))} seed{'s' if len(seeds) > 1 else ''} "
            f"{','.join(str(s) for s in seeds)}")


def split_settings(records: Iterable[RecordLike]) -> list[list[Record]]:
    """The ok records of one folder grouped by settings; the largest group first (ties: the newest)."""
    groups: dict[str, list[Record]] = {}
    for r in as_records(records):
        if r.ok:
            groups.setdefault(_key(r), []).append(r)

    def order(g: list[Record]) -> tuple[int, str]:
        return len(g), max(str(r.provenance.get("started_at", "")) for r in g)

    return sorted(groups.values(), key=order, reverse=True)


def _cells(group: list[Record]) -> tuple[set[str], set[int]]:
    return {r.cell["latent"] for r in group}, {r.cell["seed"] for r in group}


def setting_differences(ref: list[RecordLike], other: list[RecordLike]) -> list[tuple[str, str, str]]:
    """(field, other's value, reference's value) for each setting on which two uniform groups differ."""
    a, b = settings(ref[0]), settings(other[0])
    return [(k, b.get(k, "(none)"), a.get(k, "(none)")) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def differences(ref: list[RecordLike], other: list[RecordLike]) -> list[str]:
    """One line per cause that keeps ``other`` from being ranked beside ``ref`` (both uniform groups)."""
    ref, other = as_records(ref), as_records(other)
    out = [f"{k}: {b} vs {a}" for k, b, a in setting_differences(ref, other)]
    (la, sa), (lb, sb) = _cells(ref), _cells(other)
    if not la & lb:
        out.append(f"latent sizes: {', '.join(latent_order(lb))} vs {', '.join(latent_order(la))} (none in common)")
    if not sa & sb:
        out.append(f"seeds: {', '.join(map(str, sorted(sb)))} vs {', '.join(map(str, sorted(sa)))} (none in common)")
    if out:
        return out
    per_cell: dict[tuple[str, int], dict[str, set[str]]] = {}
    for r in ref:
        notes = per_cell.setdefault((r.cell["latent"], r.cell["seed"]), {})
        for k in CELL_NOTES:
            notes.setdefault(k, set()).add(_show(r.notes.get(k)))
    clashes: dict[str, list[str]] = {}
    for r in other:
        ref_notes = per_cell.get((r.cell["latent"], r.cell["seed"]))
        for k in CELL_NOTES if ref_notes else ():
            v = _show(r.notes.get(k))
            if v not in ref_notes[k]:
                clashes.setdefault(k, []).append(f"{v} vs {', '.join(sorted(ref_notes[k]))} at "
                                                 f"z={r.cell['latent']} seed {r.cell['seed']}")
    return [f"{k}: {v[0]}" + (f" (and {len(v) - 1} more cells)" if len(v) > 1 else "") for k, v in clashes.items()]


def _variant(main: list[Record], group: list[Record]) -> str:
    return ", ".join(f"{k} {b}" for k, b, _ in setting_differences(main, group))


def suggest_command(ref_name: str, ref: list[Record], other_name: str, other: list[Record]) -> str:
    """The `latentbench run` command that would make ``other``'s remedies comparable with ``ref``: the
    reference's own command (or its saved grid) with ``--remedies`` and the latent sizes and seeds both
    can share, into a fresh folder."""
    commands = [r.provenance.get("command", "") for r in ref]
    runs = [c for c in commands if c.startswith("latentbench run")]
    args: list[str] | None = None
    if runs:
        args = _strip_selectors(shlex.split(max(set(runs), key=runs.count)))
        args = [_resolve_spec(a) for a in args]
    else:
        grids = sorted((Path(ref_name) / "grids").glob("*.toml"))
        if grids:
            args = ["latentbench", "run", str(grids[0])]
    if args is None:
        return ""
    remedies = sorted({r.remedy for r in other})
    (la, sa), (lb, sb) = _cells(ref), _cells(other)
    args += ["--remedies", ",".join(remedies)]
    if la & lb and la & lb != la:
        args += ["--latents", ",".join(latent_order(la & lb))]
    if sa & sb and sa & sb != sa:
        args += ["--seeds", ",".join(str(s) for s in sorted(sa & sb))]
    args += ["--out", f"{other_name.rstrip('/')}-{Path(ref_name).name or 'board'}"]
    return " ".join(shlex.quote(a) for a in args)


def _strip_selectors(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in _RUN_SELECTORS:
            skip = True
        elif a.split("=", 1)[0] in _RUN_SELECTORS or a == "--force":
            continue
        else:
            out.append(a)
    return out


def _resolve_spec(arg: str) -> str:
    """A spec named by a path relative to where the board was made: the shipped baseline of that name
    when the path does not exist here."""
    if not arg.endswith(".toml") or Path(arg).exists():
        return arg
    shipped = Path(__file__).resolve().parents[1] / "baselines" / Path(arg).name
    return str(shipped) if shipped.is_file() else arg


def merge_groups(groups: Mapping[str, Iterable[RecordLike]], allow_mismatch: bool = False) -> list[Record]:
    """Merge record groups (one per folder) under the fair-comparison guard; the first folder's main
    settings are the reference.

    Each folder is split by settings first. A folder holding several settings is refused in one line,
    and a folder whose settings differ from the reference is refused with one line per cause and the
    command that would make it comparable; with ``allow_mismatch`` both are kept, marked as not
    comparable (the ``mismatch`` mark), and never ranked. Comparable groups are restricted to the
    latent sizes and seeds they all have (the ``scope`` mark says which, when that drops cells). Each
    record kept is marked (``Record.marks``) with its ``source`` folder, ``variant``, ``mismatch`` and
    ``scope``.
    """
    names = list(groups)
    split = {name: split_settings(groups[name]) for name in names}
    ref_name = next((n for n in names if split[n]), names[0])
    if not split[ref_name]:
        return []
    ref = split[ref_name][0]
    parts: list[tuple[str, list[Record], str, list[str]]] = []  # (folder, group, variant, causes)
    for name in names:
        for i, group in enumerate(split[name]):
            variant = _variant(split[name][0], group) if i else ""
            if variant and not allow_mismatch:
                raise UserError(f"{name or 'this folder'} holds {len(group)} record(s) made with other settings than "
                                f"its other {len(split[name][0])} ({variant}), which are never averaged together; move "
                                "them to their own --out folder, or pass --allow-mismatch to show them apart, marked")
            causes = differences(ref, group) if group is not ref else []
            if causes and not variant and not allow_mismatch:
                cmd = suggest_command(ref_name, ref, name, group)
                raise UserError(f"cannot rank {name} beside {ref_name}: their cells differ in\n  " + "\n  ".join(causes)
                                + "\npass --allow-mismatch to show them marked and unranked"
                                + (f", or make them comparable with:\n  {cmd}" if cmd else ", or rerun with the same settings"))
            parts.append((name, group, variant, causes))
    comparable = [g for _, g, _, c in parts if not c]
    latents = set.intersection(*(_cells(g)[0] for g in comparable))
    seeds = set.intersection(*(_cells(g)[1] for g in comparable))
    if not latents or not seeds:
        raise UserError("the comparable folders have no (latent size, seed) cell in common: "
                        + "; ".join(f"{n}: {scope_text(*_cells(g))}" for n, g, _, c in parts if not c))
    dropped = [f"{n or 'the folder'} has {scope_text(*_cells(g))}" for n, g, _, c in parts
               if not c and _cells(g) != (latents, seeds)]
    scope = (f"compared on {scope_text(latents, seeds)} only, the cells common to all folders ({'; '.join(dropped)})"
             if dropped else "")
    out, seen = [], set()
    for name, group, variant, causes in parts:
        for r in group:
            if not causes and (r.cell["latent"] not in latents or r.cell["seed"] not in seeds):
                continue
            if r.id in seen:
                continue  # the same cell published twice
            seen.add(r.id)
            r.marks.update(source=name, variant=variant, mismatch="; ".join(causes), scope=scope)
            out.append(r)
    return out
