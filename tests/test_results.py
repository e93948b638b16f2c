"""Records as data: every published record reads into a Record and writes back byte for byte."""

import json
from pathlib import Path

import pytest

from latentbench.results import (
    RECORD_SCHEMA,
    STATUSES,
    CorruptRecordError,
    Outcome,
    Record,
    read_record,
    read_records,
    write_record,
)
from latentbench.spec import Cell

ROOT = Path(__file__).parents[1]
PUBLISHED = sorted(ROOT.glob("leaderboards/*/records/*.json"))


def _dump(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n"


def test_there_are_published_records_to_round_trip():
    assert len(PUBLISHED) >= 200


def test_every_published_record_round_trips_through_record():
    for path in PUBLISHED:
        data = json.loads(path.read_text(encoding="utf-8"))
        rec = Record.from_json(data)
        assert rec.to_json() == data, path
        assert _dump(rec.to_json()) == path.read_text(encoding="utf-8"), path  # the same bytes
        assert read_record(path).to_json() == data, path


def test_a_written_record_is_byte_for_byte_the_file_read(tmp_path):
    path = PUBLISHED[0]
    write_record(tmp_path / path.name, read_record(path))
    assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_outcome_values_are_the_strings_records_hold():
    assert [o.value for o in Outcome] == ["ok", "failed", "lost"]
    assert STATUSES == ("ok", "failed")  # lost is returned by a grid, never written
    assert Outcome.OK == "ok" and str(Outcome.FAILED) == "failed"
    assert json.dumps({"status": Outcome.OK}) == '{"status": "ok"}'


def test_published_records_read_as_typed_fields():
    rec = read_record(PUBLISHED[0])
    assert rec.status is Outcome.OK and rec.ok
    assert rec.schema == RECORD_SCHEMA and rec.id == rec.spec().id
    assert rec.path == PUBLISHED[0] and rec.written_by == "run"
    assert isinstance(rec.metrics["fid_prior"], float)
    assert rec.remedy == rec.cell["remedy"] and rec.latent == rec.cell["latent"]
    assert "first_stage" in rec.absent and "first_stage" not in rec.to_json()


def test_unknown_keys_and_new_keys_survive_a_round_trip():
    cell = Cell(dataset="digits", arch="mlp", remedy="vae", latent="2", seed=0)
    rec = Record.for_cell(cell, status="failed", error="boom", first_stage="abc123", extras={"traceback": "t"})
    data = {**rec.to_json(), "future_field": {"x": 1}}
    back = Record.from_json(data)
    assert back.extra == {"future_field": {"x": 1}} and back.first_stage == "abc123"
    assert back.to_json() == data
    assert back.status is Outcome.FAILED and not back.ok


def test_a_new_record_holds_the_keys_the_runner_always_wrote():
    cell = Cell(dataset="digits", arch="mlp", remedy="vae", latent="2", seed=0)
    keys = set(Record.for_cell(cell, status=Outcome.OK, metrics={"kl": 1.0}).to_json())
    assert keys == {"schema", "id", "status", "error", "cell", "metrics", "notes", "timing", "provenance", "origin"}


def test_the_dict_api_of_the_runner_gives_the_same_json():
    from latentbench.runner.records import make_record

    cell = Cell(dataset="digits", arch="mlp", remedy="vae", latent="2", seed=0)
    assert make_record(cell, status="ok", metrics={"kl": 1.0}) == \
        Record.for_cell(cell, status="ok", metrics={"kl": 1.0}).to_json()


def test_read_records_gives_records_with_their_paths():
    folder = PUBLISHED[0].parents[1]
    recs = read_records([folder])
    assert recs and all(isinstance(r, Record) and r.path is not None and r.path.parent.name == "records" for r in recs)


def test_a_record_without_a_status_is_corrupt(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"schema": 1, "status": "maybe", "cell": {}}))
    with pytest.raises(CorruptRecordError):
        read_record(path)
    with pytest.raises(ValueError):
        Record.from_json({"schema": 1, "status": "maybe", "cell": {}})
