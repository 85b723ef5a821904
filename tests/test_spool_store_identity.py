"""A spool belongs to one daemon's store: records spooled for it are never replayed into
another daemon that later listens at the same address (real daemons, real spool folders)."""

from __future__ import annotations

import time

import pytest

from telemetry import TelemetryGrpcProxy
from telemetry.daemon import serve
from tests.fixtures_daemon import free_port


@pytest.mark.timeout(60)
async def test_spooled_records_go_only_to_the_store_they_were_meant_for(tmp_path) -> None:
    """Records spooled for one daemon's store are not replayed into another daemon that later
    listens at the same address; once their own store is back there, they are delivered."""
    address = f"127.0.0.1:{free_port()}"
    spool = tmp_path / "spool"

    def step(i: int) -> dict:
        return dict(run_id="meant", episode_index=0, step_index=i, action_json="0", observation_json="0", reward=0.0,
                    terminated=False, truncated=False, policy_label="p", backend="b", agent_id="a",
                    render_hint_json=None, payload_version=1, timestamp_ns=time.time_ns())

    first = await serve(address, tmp_path / "first.db")
    proxy = TelemetryGrpcProxy(address, spool_dir=spool, close_timeout_s=0.5, connect_timeout_s=0.5)
    async with proxy.session("meant") as session:
        await session.emit_step(**step(0))
        await session.flush()
        await first.stop()
        for i in range(1, 6):
            await session.emit_step(**step(i))

    other = await serve(address, tmp_path / "other.db")
    try:
        async with TelemetryGrpcProxy(address, spool_dir=spool).session("someone-else") as later:
            await later.flush()
        assert other.store.counts("meant").steps == 0, "records meant for the first store went into another"
    finally:
        await other.stop()

    again = await serve(address, tmp_path / "first.db")
    try:
        async with TelemetryGrpcProxy(address, spool_dir=spool).session("back") as later:
            await later.flush()
        assert again.store.counts("meant").steps == 6
    finally:
        await again.stop()
