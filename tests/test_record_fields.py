"""A step's and an episode's fields are listed in several layers (the wire messages, the column
messages, the agent's records, the store's rows and columns). Where one list is not derived
from another, this test fails the moment two of them disagree, naming the difference; the
fields one layer has and another must not are listed here, with the reason."""
from __future__ import annotations

import dataclasses

from agents.records import EpisodeRecord, StepRecord, StepTable
from telemetry import store
from telemetry.columns import PER_STEP, SPARSE
from telemetry.generated import trainer_pb2 as pb

#: Fields the store and the wire have but an agent never sets: the daemon numbers records
#: (seq_id), the proxy names the worker (worker_id), and two are kept for renderers not yet
#: written (frame_ref, render_payload_json).
NOT_SET_BY_AGENTS = {"seq_id", "worker_id", "frame_ref", "render_payload_json"}
#: Shared by every row of one agent's column block, so not a column of its own.
PER_BLOCK = {"agent_id", "worker_id", "backend", "payload_version"}


def wire_fields(message: type) -> set[str]:
    """A wire message's field names, its Timestamp read as the store's nanoseconds."""
    return {"timestamp_ns" if f.name == "timestamp" else f.name for f in message.DESCRIPTOR.fields}


def names(row_type: type) -> list[str]:
    return [f.name for f in dataclasses.fields(row_type)]


def columns_of(sql_columns: str) -> list[str]:
    return [c.strip() for c in sql_columns.split(",")]


def test_the_stored_step_is_the_wire_step() -> None:
    assert set(names(store.StepRow)) == wire_fields(pb.RunStep)
    # The store's columns are the row's, in the row's order (run_id and seq_id live in the key).
    assert columns_of(store._STEP_COLUMNS) == [n for n in names(store.StepRow) if n not in ("seq_id", "run_id")]


def test_the_stored_episode_is_the_wire_episode() -> None:
    assert set(names(store.EpisodeRow)) == wire_fields(pb.RunEpisode)
    assert columns_of(store._EPISODE_COLUMNS) == [n for n in names(store.EpisodeRow) if n not in ("seq_id", "run_id")]


def test_an_agents_step_record_is_the_stored_step_less_what_others_set() -> None:
    assert set(names(StepRecord)) == set(names(store.StepRow)) - NOT_SET_BY_AGENTS


def test_an_agents_episode_record_is_the_stored_episode_less_what_others_set() -> None:
    record = {"metadata_json" if n == "metadata" else n for n in names(EpisodeRecord)}  # a dict, sent as JSON
    assert record == set(names(store.EpisodeRow)) - NOT_SET_BY_AGENTS


def test_step_columns_carry_every_field_an_agent_sets() -> None:
    columns = wire_fields(pb.StepColumns)
    sparse_values = {name for name in SPARSE if not name.endswith("_rows")}
    assert columns == set(PER_STEP) | set(SPARSE) | PER_BLOCK
    # run_id travels once per batch (TelemetryBatch.run_id), not per block.
    assert set(PER_STEP) | sparse_values | PER_BLOCK | {"run_id"} == set(names(StepRecord)) | {"worker_id"}
    # The agent's column table holds exactly the wire block's columns.
    assert set(StepTable.__slots__) == columns - {"agent_id", "worker_id"}


def test_episode_columns_carry_every_stored_episode_field() -> None:
    assert wire_fields(pb.EpisodeColumns) | {"run_id", "seq_id"} == set(names(store.EpisodeRow))
