"""External rows: samples of generators latentbench did not train (``latentbench score-samples``),
shown beside a board when they were graded like its ``fid_prior`` (same dataset, features and
sample count), marked as external and never ranked with the board's rows."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from latentbench.errors import UserError
from latentbench.results import RecordLike, as_records
from latentbench.results import read_samples_record as read_external


def split_external(paths: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Run or board folders, and the samples records named among ``paths`` (files, or folders that
    hold only samples records)."""
    folders, external = [], []
    for p in paths:
        path = Path(p)
        if path.is_file():
            rec = read_external(path)
            if rec is None:
                raise UserError(f"{p} is a file but not a record of `latentbench score-samples`; give run or "
                                "board folders, or samples records")
            external.append(rec)
            continue
        found = [r for r in map(read_external, sorted(path.glob("*.json"))) if r is not None] if path.is_dir() else []
        if found and not (path / "records").is_dir():
            external += found
        else:
            folders.append(p)
    return folders, external


def _key(dataset: Any, features: Any, n: Any) -> tuple[str, str, int]:
    return str(dataset), str(features), int(n or 0)


def board_keys(records: Iterable[RecordLike]) -> set[tuple[str, str, int]]:
    """(dataset, features, n_prior) of every record of a board."""
    return {_key(r.cell.get("dataset"), r.cell.get("features", "domain"), r.notes.get("n_prior"))
            for r in as_records(records)}


def external_markdown(records: Iterable[RecordLike], external: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The markdown section of the external rows that agree with the board, and one note per record that
    does not (naming what differs)."""
    keys = board_keys(records)
    rows, notes = [], []
    for e in external:
        n = e.get("notes") or {}
        k = _key(e.get("dataset"), n.get("features"), n.get("n_prior"))
        if k not in keys:
            want = ", ".join(f"{d} / {f} / n={c}" for d, f, c in sorted(keys))
            notes.append(f"{e.get('source')} ({k[0]} / {k[1]} / n={k[2]}) is not shown: the board is scored on "
                         f"{want} (dataset / features / samples); grade it with `latentbench score-samples "
                         f"--dataset {sorted(keys)[0][0]} --features {sorted(keys)[0][1]} --n {sorted(keys)[0][2]}`")
            continue
        m = e["metrics"]
        rows.append(f"| external: {e.get('source')} | {m.get('fid_prior', float('nan')):.3g} | "
                    f"{m.get('fid_floor', float('nan')):.3g} | {m.get('kid_prior', float('nan')):.3g} | "
                    f"{m.get('precision_prior', float('nan')):.3g} / {m.get('recall_prior', float('nan')):.3g} | "
                    f"{k[0]} / {k[1]} / {k[2]} |")
    if not rows:
        return "", notes
    text = ("\n\n**External samples** (generators latentbench did not train, graded by `latentbench score-samples` "
            "against the same held-out images and features as the board's fid_prior; marked, not ranked; their "
            "floor is the FID of the dataset's own training images)\n\n"
            "| source | fid_prior | floor | kid_prior | precision / recall | dataset / features / n |\n"
            "|:--|--:|--:|--:|--:|:--|\n" + "\n".join(rows) + "\n")
    return text, notes
