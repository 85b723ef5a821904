"""The proxy's disk spool on its own: framing, torn tails, orphan adoption, quarantine."""
from __future__ import annotations

import os
from pathlib import Path

from telemetry.generated import trainer_pb2
from telemetry.spool import MAGIC, TelemetrySpool, read_frames


def _batch(run_id: str, first_step: int, count: int) -> bytes:
    batch = trainer_pb2.TelemetryBatch(run_id=run_id)
    for i in range(first_step, first_step + count):
        batch.steps.add(run_id=run_id, agent_id="a", episode_index=0, step_index=i)
    return batch.SerializeToString()


def _steps(payloads: list[bytes]) -> list[int]:
    return [s.step_index for p in payloads for s in trainer_pb2.TelemetryBatch.FromString(p).steps]


def test_frames_read_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = TelemetrySpool(tmp_path, "127.0.0.1:1", "w", segment_max_bytes=200)
    for i in range(10):
        spool.append(_batch("r", i * 3, 3))
    queue = spool.replay_queue()
    assert len(queue) > 1, "small segments rotate"
    assert _steps([f for seg in queue for f in read_frames(seg)]) == list(range(30))
    spool.close()


def test_torn_tail_is_ignored_and_earlier_frames_survive(tmp_path: Path) -> None:
    spool = TelemetrySpool(tmp_path, "127.0.0.1:1", "w")
    spool.append(_batch("r", 0, 5))
    spool.append(_batch("r", 5, 5))
    [segment] = spool.replay_queue()
    spool.close()
    whole = segment.read_bytes()
    segment.write_bytes(whole[:-7])                     # a crash in the middle of a write
    assert _steps(list(read_frames(segment))) == list(range(5))
    segment.write_bytes(whole + b"\x05\x00")            # a header cut short
    assert _steps(list(read_frames(segment))) == list(range(10))
    corrupt = bytearray(whole)
    corrupt[-1] ^= 0xFF                                 # checksum mismatch in the last frame
    segment.write_bytes(bytes(corrupt))
    assert _steps(list(read_frames(segment))) == list(range(5))
    assert whole.startswith(MAGIC)


def test_exited_session_spool_is_adopted_and_removed_once_delivered(tmp_path: Path) -> None:
    first = TelemetrySpool(tmp_path, "127.0.0.1:9", "worker-a")
    first.append(_batch("r", 0, 4))
    left_behind = first.folder
    first.close()
    assert left_behind is not None and left_behind.is_dir(), "undelivered spool stays on disk"

    later = TelemetrySpool(tmp_path, "127.0.0.1:9", "worker-b")
    assert later.adopt_orphans() == 1
    queue = later.replay_queue()
    assert _steps([f for seg in queue for f in read_frames(seg)]) == [0, 1, 2, 3]
    for segment in queue:
        later.delivered(segment)
    assert not left_behind.exists()
    assert not later.has_pending()
    later.close()
    assert list(later.target_dir.iterdir()) == []


def test_live_session_spool_is_not_adopted_and_targets_are_separate(tmp_path: Path) -> None:
    alive = TelemetrySpool(tmp_path, "127.0.0.1:9", "worker-a")
    alive.append(_batch("r", 0, 1))
    other_target = TelemetrySpool(tmp_path, "127.0.0.1:10", "worker-c")
    other_target.append(_batch("r", 0, 1))
    other_target.close()
    peer = TelemetrySpool(tmp_path, "127.0.0.1:9", "worker-b")
    assert peer.adopt_orphans() == 0
    assert peer.replay_queue() == []
    alive.close()
    assert peer.adopt_orphans() == 1
    peer.close()


def test_empty_session_leaves_nothing_and_quarantine_is_kept_apart(tmp_path: Path) -> None:
    spool = TelemetrySpool(tmp_path, "127.0.0.1:9", "w")
    spool.append(_batch("r", 0, 1))
    for segment in spool.replay_queue():
        spool.delivered(segment)
    kept = spool.quarantine(_batch("r", 7, 1), "refused: test")
    spool.close()
    assert _steps(list(read_frames(kept))) == [7]
    assert sorted(p.name for p in spool.target_dir.iterdir()) == ["rejected"]
    again = TelemetrySpool(tmp_path, "127.0.0.1:9", "w2")
    assert again.adopt_orphans() == 0, "quarantined batches are never replayed automatically"
    again.close()
    assert os.listdir(spool.target_dir / "rejected")
