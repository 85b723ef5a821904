"""Control state on its own: pause, credits and rate caps as `wait_until_allowed` sees them."""
from __future__ import annotations

import asyncio

import pytest

from telemetry.flow import RunFlow
from telemetry.generated.trainer_pb2 import ControlEvent

pytestmark = pytest.mark.timeout(20)


async def _blocked(waiter: asyncio.Task[None]) -> bool:
    """Whether the waiter is still waiting once every ready callback has run."""
    for _ in range(5):
        await asyncio.sleep(0)
    return not waiter.done()


async def test_pause_holds_agents_until_resume() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", pause=True))
    waiter = asyncio.create_task(flow.wait_until_allowed("a"))
    assert await _blocked(waiter)
    flow.apply(ControlEvent(run_id="r", resume=True))
    await asyncio.wait_for(waiter, 5)


async def test_agent_pause_concerns_that_agent_only() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", pause=True, agent_id="a"))
    await asyncio.wait_for(flow.wait_until_allowed("b"), 5)
    waiter = asyncio.create_task(flow.wait_until_allowed("a"))
    assert await _blocked(waiter)
    flow.apply(ControlEvent(run_id="other", resume=True, agent_id="a"))
    assert await _blocked(waiter), "events of another run are ignored"
    flow.apply(ControlEvent(run_id="r", resume=True, agent_id="a"))
    await asyncio.wait_for(waiter, 5)


async def test_credits_start_credit_mode_and_are_spent() -> None:
    flow = RunFlow("r")
    await asyncio.wait_for(flow.wait_until_allowed("a", steps=1000), 5)   # no credit mode yet
    flow.apply(ControlEvent(run_id="r", grant_steps=3))
    for _ in range(3):
        await asyncio.wait_for(flow.wait_until_allowed("a"), 5)
    waiter = asyncio.create_task(flow.wait_until_allowed("a", steps=2))
    assert await _blocked(waiter)
    flow.apply(ControlEvent(run_id="r", grant_steps=1))
    assert await _blocked(waiter), "2 steps need 2 credits"
    flow.apply(ControlEvent(run_id="r", grant_steps=1))
    await asyncio.wait_for(waiter, 5)
    assert flow.snapshot().credits == {"": 0}


async def test_agent_credits_are_separate_from_the_run_pool() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", grant_steps=1, agent_id="a"))
    flow.apply(ControlEvent(run_id="r", grant_steps=1))
    await asyncio.wait_for(flow.wait_until_allowed("a"), 5)
    await asyncio.wait_for(flow.wait_until_allowed("b"), 5)
    a_waits = asyncio.create_task(flow.wait_until_allowed("a"))
    b_waits = asyncio.create_task(flow.wait_until_allowed("b"))
    assert await _blocked(a_waits) and await _blocked(b_waits)
    flow.release()
    await asyncio.wait_for(asyncio.gather(a_waits, b_waits), 5)


async def test_rate_cap_spaces_steps() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", max_rate_hz=50))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(6):
        await asyncio.wait_for(flow.wait_until_allowed("a"), 5)
    # 6 steps at 50 Hz: the first is free, the next five are spaced 20 ms apart (a lower bound,
    # not a timing assertion on a loaded machine).
    assert loop.time() - start >= 5 / 50 - 0.005
    flow.apply(ControlEvent(run_id="r", max_rate_hz=0))
    for _ in range(1000):
        await asyncio.wait_for(flow.wait_until_allowed("a"), 5)


async def test_release_lets_everyone_through() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", pause=True))
    waiter = asyncio.create_task(flow.wait_until_allowed("a"))
    assert await _blocked(waiter)
    flow.release()
    await asyncio.wait_for(waiter, 5)


async def test_resubscription_replaces_standing_state_without_a_gap() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", pause=True))
    flow.apply(ControlEvent(run_id="r", grant_steps=2))
    generation = flow.begin_resync()
    assert flow.is_paused(), "the old state holds until the new subscription speaks"
    flow.apply(ControlEvent(run_id="r", max_rate_hz=5))        # the daemon's standing state
    assert not flow.is_paused() and flow.snapshot().rates_hz == {"": 5}
    flow.end_resync(generation)
    assert flow.snapshot().rates_hz == {"": 5}, "a late grace timer changes nothing"
    assert flow.snapshot().credits == {"": 2}, "credits are deltas and are kept"

    generation = flow.begin_resync()                           # nothing standing this time
    flow.end_resync(generation)
    assert flow.snapshot().rates_hz == {} and not flow.is_paused()
