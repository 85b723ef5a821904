"""The SQLite store on its own: dedup on natural keys, gap-free per-run seqs, restart, reads."""
import asyncio
import sqlite3
from pathlib import Path

import pytest

from telemetry.generated import trainer_pb2 as pb
from telemetry.store import InvalidRecords, RunRow, StoreError, StoreWriter, TelemetryStore
from tests.fixtures_daemon import episodes, steps


def run_row(run_id: str, seq: int = 1) -> RunRow:
    return RunRow(run_id, 1, "", "", 1, 1, 0, "", seq)


async def open_writer(path: Path, *runs: str) -> tuple[TelemetryStore, StoreWriter]:
    store = TelemetryStore(path)
    writer = StoreWriter(path)
    writer.start()
    for i, run_id in enumerate(runs):
        await writer.submit_run(run_row(run_id, i + 1))
    return store, writer


async def test_duplicates_are_dropped_and_seqs_stay_gap_free(tmp_path: Path) -> None:
    store, writer = await open_writer(tmp_path / "t.db", "r1")
    try:
        first = await writer.ingest("r1", steps("r1", "a", 50), episodes("r1", "a", 2))
        assert (first.accepted, first.dropped) == (52, 0)
        # A retry overlapping the first batch, with a repeat inside the batch itself.
        retry = steps("r1", "a", 40, first=30) + steps("r1", "a", 1, first=60)
        second = await writer.ingest("r1", retry)
        assert (second.accepted, second.dropped) == (20, 21)
        assert second.first_step_seq == 51 and len(second.new_steps) == 20

        rows = store.read_steps("r1", limit=1000)
        assert [r.seq_id for r in rows] == list(range(1, 71))
        assert len({(r.agent_id, r.episode_index, r.step_index) for r in rows}) == 70
        assert store.counts("r1").steps == 70 and store.counts("r1").episodes == 2
        assert store.agent_ids("r1") == ["a"]
        assert store.read_steps("r1", since_seq=68)[0].seq_id == 69
    finally:
        await writer.close()
        store.close()


async def test_seqs_are_per_run_and_per_kind_and_survive_restart(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store, writer = await open_writer(path, "r1", "r2")
    results = await asyncio.gather(
        writer.ingest("r1", steps("r1", "a", 30)), writer.ingest("r2", steps("r2", "b", 10)),
        writer.ingest("r1", steps("r1", "b", 30)), writer.ingest("r1", [], episodes("r1", "a", 3)))
    assert [r.accepted for r in results] == [30, 10, 30, 3]
    await writer.close()
    store.close()

    store, writer = await open_writer(path)
    try:
        more = await writer.ingest("r1", steps("r1", "c", 5), episodes("r1", "c", 1))
        assert (more.first_step_seq, more.first_episode_seq) == (61, 4)
        assert [r.seq_id for r in store.read_steps("r1", limit=100)] == list(range(1, 66))
        assert [r.seq_id for r in store.read_steps("r2")] == list(range(1, 11))
        assert [r.agent_id for r in store.read_steps("r1", agent_id="c")] == ["c"] * 5
        assert store.agent_ids("r1") == ["a", "b", "c"]
    finally:
        await writer.close()
        store.close()


async def test_a_bad_job_fails_alone(tmp_path: Path) -> None:
    store, writer = await open_writer(tmp_path / "t.db", "r1")
    try:
        bad = writer.submit_ingest("r1", steps("r1", "a", 3) + steps("other", "a", 1, first=3))
        good = writer.submit_ingest("r1", steps("r1", "b", 3))
        huge = writer.submit_ingest("r1", [pb.RunStep(agent_id="c", episode_index=2**63)])
        with pytest.raises(InvalidRecords, match="run 'other'"):
            await bad
        refused = (await huge).refused
        assert [(r.agent_id, r.field) for r in refused] == [("c", "episode_index")]
        assert (await good).accepted == 3
        assert [(r.agent_id, r.seq_id) for r in store.read_steps("r1")] == [("b", 1), ("b", 2), ("b", 3)]
        # Records without run_id belong to the batch's run.
        filled = await writer.ingest("r1", [pb.RunStep(agent_id="d")])
        assert filled.accepted == 1 and store.read_steps("r1", agent_id="d")[0].run_id == "r1"
    finally:
        await writer.close()
        store.close()


def test_unusable_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        TelemetryStore(tmp_path / "missing" / "t.db")
    with pytest.raises(StoreError, match="cannot open"):
        TelemetryStore(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE x (y)")
        conn.execute("PRAGMA user_version = 7")
    with pytest.raises(StoreError, match="not a telemetry store"):
        TelemetryStore(other)
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database " * 100)
    with pytest.raises(StoreError):
        TelemetryStore(text)


async def test_store_is_in_wal_mode(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    try:
        assert store._query("PRAGMA journal_mode") == [("wal",)]
    finally:
        store.close()
