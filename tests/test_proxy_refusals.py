"""The proxy tells refusal from absence: a NaN reward is delivered as it is, a record the daemon
refuses goes to the rejected folder (named), and neither blocks what follows, in this session
or the next on the same spool folder. Numbers the store cannot hold are refused at emit."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from telemetry.daemon import serve
from telemetry.errors import RecordOutOfRangeError
from telemetry.generated import trainer_pb2 as pb
from telemetry.proxy import TelemetryGrpcProxy
from telemetry.spool import TelemetrySpool, read_frames
from telemetry.store import TelemetryStore
from tests.fixtures_daemon import free_port
from tests.fixtures_proxy import step_kwargs

pytestmark = pytest.mark.timeout(60)
TOO_BIG = 2 ** 63


def _pending_segments(spool_dir: Path) -> list[Path]:
    return [p for p in spool_dir.rglob("*.spool") if "rejected" not in p.parts]


async def test_a_poisoned_spool_is_delivered_or_quarantined_and_never_blocks(tmp_path: Path) -> None:
    spool_dir, db_path = tmp_path / "spool", tmp_path / "telemetry.db"
    target = f"127.0.0.1:{free_port()}"
    # Session 1, daemon down: a NaN and an infinite reward among ordinary steps, all spooled.
    offline = TelemetryGrpcProxy(target, spool_dir=spool_dir, close_timeout_s=0.5)
    async with offline.session("poison") as tx:
        for i in range(10):
            reward = {3: math.nan, 4: math.inf}.get(i, 1.0)
            await tx.emit_step(**step_kwargs(i, run_id="poison", reward=reward))
        await tx.emit_episode(run_id="poison", episode_index=0, total_reward=math.nan, steps=10,
                              terminated=True, truncated=False, agent_id="a")
    # A segment left by an older proxy that did not check ranges: one good step, one the
    # store cannot hold.
    old = TelemetrySpool(spool_dir, target, "old-proxy")
    old.append(pb.TelemetryBatch(run_id="poison", steps=[
        pb.RunStep(run_id="poison", agent_id="old", episode_index=0, step_index=0, reward=2.0),
        pb.RunStep(run_id="poison", agent_id="old", episode_index=5, step_index=TOO_BIG)]).SerializeToString())
    old.close()
    assert len(_pending_segments(spool_dir)) == 2

    daemon = await serve(target, db_path=db_path)
    try:
        online = TelemetryGrpcProxy(target, spool_dir=spool_dir)
        async with online.session("poison") as tx:
            for i in range(10, 20):
                await tx.emit_step(**step_kwargs(i, run_id="poison"))
            await tx.flush()
            stats = tx.stats
            refusals = tx.refusals
        assert stats.refused == 1 and stats.delivered >= 10 + 11 + 1
        assert len(refusals) == 1 and "step_index" in str(refusals[0]) and "'old'" in str(refusals[0])
        kept = Path(refusals[0].quarantine_path)
        assert kept.parent.name == "rejected"
        refused = [pb.TelemetryBatch.FromString(frame) for frame in read_frames(kept)]
        assert [(s.agent_id, s.step_index) for b in refused for s in b.steps] == [("old", TOO_BIG)]
        assert "step_index" in kept.with_suffix(".reason.txt").read_text()
        assert _pending_segments(spool_dir) == []

        again = TelemetryGrpcProxy(target, spool_dir=spool_dir)
        async with again.session("poison") as tx:
            await tx.flush()
            assert tx.stats.replayed == 0 and tx.stats.refused == 0, "nothing is replayed again"
    finally:
        await daemon.stop()

    store = TelemetryStore(db_path, create=False)
    try:
        rewards = {(s.agent_id, s.step_index): s.reward for s in store.read_steps("poison")}
        assert sorted(rewards) == [("a", i) for i in range(20)] + [("old", 0)]
        assert math.isnan(rewards[("a", 3)]) and rewards[("a", 4)] == math.inf
        assert math.isnan(store.read_episodes("poison")[0].total_reward)
    finally:
        store.close()


async def test_out_of_range_numbers_are_refused_at_emit_naming_agent_and_step(tmp_path: Path) -> None:
    proxy = TelemetryGrpcProxy(f"127.0.0.1:{free_port()}", spool_dir=tmp_path, close_timeout_s=0.5)
    async with proxy.session("range") as tx:
        with pytest.raises(RecordOutOfRangeError) as caught:
            await tx.emit_step(**step_kwargs(0, run_id="range", agent_id="walker", step_index=TOO_BIG))
        for part in ("'range'", "'walker'", f"step {TOO_BIG}", "step_index"):
            assert part in str(caught.value), str(caught.value)
        with pytest.raises(RecordOutOfRangeError, match="episode_index"):
            await tx.emit_episode(run_id="range", episode_index=TOO_BIG, total_reward=0.0, steps=1,
                                  terminated=True, truncated=False, agent_id="walker")
        with pytest.raises(RecordOutOfRangeError, match="message_index"):
            await tx.emit_message("range", "walker", TOO_BIG, "sent", "b", "q_table", 1)

        class Step:
            def __init__(self, step_index: int) -> None:
                for name, value in step_kwargs(0, run_id="range", step_index=step_index).items():
                    setattr(self, name, value)
                self.episode_seed = None

        with pytest.raises(RecordOutOfRangeError, match=f"step {TOO_BIG}"):
            await tx.emit_steps("range", "walker", [Step(0), Step(TOO_BIG)])
        await tx.emit_step(**step_kwargs(1, run_id="range"))
        assert tx.stats.accepted == 1, "only the good record was accepted"


async def test_text_that_is_not_unicode_is_refused_at_emit_naming_the_field(tmp_path: Path) -> None:
    proxy = TelemetryGrpcProxy(f"127.0.0.1:{free_port()}", spool_dir=tmp_path, close_timeout_s=0.5)
    broken = b"\xff".decode("utf-8", "surrogateescape")
    async with proxy.session("text") as tx:
        with pytest.raises(ValueError) as caught:
            await tx.emit_step(**step_kwargs(4, run_id="text", agent_id="walker", action_json=broken))
        for part in ("'walker'", "episode 0, step 4", "action_json"):
            assert part in str(caught.value), str(caught.value)
        with pytest.raises(ValueError, match="message 3: peer"):
            await tx.emit_message("text", "walker", 3, "sent", broken, "q_table", 1)
        await tx.emit_step(**step_kwargs(5, run_id="text"))
        assert tx.stats.accepted == 1, "only the good record was accepted"
