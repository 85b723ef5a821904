"""What `emit_*` accepted while the daemon is away reaches the spool file without a flush (at the
sender's next attempt to reach the daemon), so a producer SIGKILLed during an outage loses none
of it, and a later session delivers it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap

import pytest

from telemetry import TelemetryGrpcProxy
from telemetry.daemon import serve
from telemetry.generated import trainer_pb2
from telemetry.spool import read_frames
from tests.fixtures_daemon import PROJECT_ROOT, free_port, run_env
from tests.waiting import wait_for

PRODUCER = textwrap.dedent("""
    import asyncio, sys, time
    from telemetry import TelemetryGrpcProxy

    async def main(target, spool):
        # fsync only every minute: what reaches the spool file gets there by the retry rule.
        proxy = TelemetryGrpcProxy(target, spool_dir=spool, spool_sync_interval_s=60, connect_timeout_s=0.5)
        async with proxy.session("killed") as session:
            for i in range(1000):
                await session.emit_step(run_id="killed", episode_index=0, step_index=i, action_json="0",
                                        observation_json="0", reward=0.0, terminated=False, truncated=False,
                                        policy_label="p", backend="b", agent_id="a", render_hint_json=None,
                                        payload_version=1, timestamp_ns=time.time_ns())
            print("accepted", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


def spooled_steps(folder) -> int:
    return sum(len(trainer_pb2.TelemetryBatch.FromString(frame).steps)
               for segment in folder.rglob("*.spool") if "rejected" not in segment.parts
               for frame in read_frames(segment))


@pytest.mark.timeout(90)
async def test_a_producer_killed_during_an_outage_loses_nothing_it_had_spooled(tmp_path) -> None:
    address = f"127.0.0.1:{free_port()}"
    spool = tmp_path / "spool"
    producer = subprocess.Popen([sys.executable, "-c", PRODUCER, address, str(spool)], cwd=PROJECT_ROOT,
                                env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert (await asyncio.wait_for(asyncio.to_thread(producer.stdout.readline), 30)).strip() == "accepted"
        await wait_for(lambda: spooled_steps(spool) == 1000, "the accepted steps to reach the spool file", timeout=20)
    finally:
        producer.send_signal(signal.SIGKILL)
        await asyncio.to_thread(producer.wait, 10)

    daemon = await serve(address, tmp_path / "t.db")
    try:
        async with TelemetryGrpcProxy(address, spool_dir=spool).session("later") as later:
            await later.flush()
        assert daemon.store.counts("killed").steps == 1000
    finally:
        await daemon.stop()
