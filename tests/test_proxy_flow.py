"""Control state on its own: pause, credits and rate caps as `wait_until_allowed` and
`try_acquire` see them."""
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


class FakeClock:
    """A monotonic clock the test moves by hand, so rate slots need no waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_try_acquire_allows_everything_while_nothing_holds_anyone() -> None:
    flow = RunFlow("r")
    assert all(flow.try_acquire("a") for _ in range(1000))
    assert flow.try_acquire(None, steps=50)
    assert flow.snapshot().credits == {}, "no credit mode, nothing to spend"
    with pytest.raises(ValueError):
        flow.try_acquire("a", steps=0)


def test_holds_nobody_only_while_no_pause_credit_or_cap_is_in_force() -> None:
    """What lets an agent skip the per-step check for a synchronous run of steps."""
    flow = RunFlow("r")
    assert flow.holds_nobody()
    for event, undo in ((ControlEvent(run_id="r", pause=True), ControlEvent(run_id="r", resume=True)),
                        (ControlEvent(run_id="r", pause=True, agent_id="a"),
                         ControlEvent(run_id="r", resume=True, agent_id="a")),
                        (ControlEvent(run_id="r", max_rate_hz=5), ControlEvent(run_id="r", max_rate_hz=0))):
        flow.apply(event)
        assert not flow.holds_nobody(), event
        flow.apply(undo)
        assert flow.holds_nobody(), undo
    flow.apply(ControlEvent(run_id="r", grant_steps=3))
    assert not flow.holds_nobody(), "credit mode stays on"
    flow.release()
    assert flow.holds_nobody(), "released: nothing holds anyone any more"


def test_try_acquire_refuses_while_paused_run_wide_or_per_agent() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", pause=True))
    assert not flow.try_acquire("a") and not flow.try_acquire("b") and not flow.try_acquire()
    flow.apply(ControlEvent(run_id="r", resume=True))
    assert flow.try_acquire("a")
    flow.apply(ControlEvent(run_id="r", pause=True, agent_id="a"))
    assert not flow.try_acquire("a") and flow.try_acquire("b")
    flow.apply(ControlEvent(run_id="r", resume=True, agent_id="a"))
    assert flow.try_acquire("a")


def test_try_acquire_spends_credits_only_when_it_says_yes() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", grant_steps=3))
    assert flow.try_acquire("a") and flow.try_acquire("b")
    assert not flow.try_acquire("a", steps=2), "2 steps need 2 credits"
    assert flow.snapshot().credits == {"": 1}, "a refusal spends nothing"
    assert flow.try_acquire("a")
    assert not flow.try_acquire("a") and not flow.try_acquire("b")
    assert flow.snapshot().credits == {"": 0}, "credit mode stays on at zero"
    flow.apply(ControlEvent(run_id="r", grant_steps=1, agent_id="a"))
    assert flow.try_acquire("a") and not flow.try_acquire("a"), "an agent's own grant is its own"
    assert not flow.try_acquire("b")
    assert flow.snapshot().credits == {"": 0, "a": 0}


def test_try_acquire_takes_a_rate_slot_only_when_one_is_free() -> None:
    clock = FakeClock()
    flow = RunFlow("r", clock=clock)
    flow.apply(ControlEvent(run_id="r", max_rate_hz=4))   # a slot every 0.25 s (exact in binary)
    assert flow.try_acquire("a"), "the first step is free"
    assert flow.try_acquire("b"), "each agent has its own slots"
    assert not flow.try_acquire("a")
    clock.now += 0.125
    assert not flow.try_acquire("a"), "half a slot later"
    clock.now += 0.125
    assert flow.try_acquire("a"), "refusals did not push the slot back"
    assert not flow.try_acquire("a")
    flow.apply(ControlEvent(run_id="r", max_rate_hz=1024, agent_id="a"))   # the agent's own cap wins
    assert flow.try_acquire("a") and not flow.try_acquire("a")
    clock.now += 1 / 1024
    assert flow.try_acquire("a")
    flow.apply(ControlEvent(run_id="r", max_rate_hz=0, agent_id="a"))
    flow.apply(ControlEvent(run_id="r", max_rate_hz=0))
    assert all(flow.try_acquire("a") for _ in range(100)), "cap removed"


def test_try_acquire_under_a_cap_and_credits_spends_nothing_when_the_slot_is_taken() -> None:
    clock = FakeClock()
    flow = RunFlow("r", clock=clock)
    flow.apply(ControlEvent(run_id="r", max_rate_hz=10))
    flow.apply(ControlEvent(run_id="r", grant_steps=5))
    assert flow.try_acquire("a") and not flow.try_acquire("a")
    assert flow.snapshot().credits == {"": 4}


def test_try_acquire_is_always_true_after_release() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", pause=True))
    flow.apply(ControlEvent(run_id="r", grant_steps=1))
    assert not flow.try_acquire("a")
    flow.release()
    assert all(flow.try_acquire("a") for _ in range(10))
    flow.apply(ControlEvent(run_id="r", pause=True, agent_id="a"))
    assert flow.try_acquire("a"), "released for good: later events hold nobody"


def test_try_acquire_follows_a_resync() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", pause=True))
    generation = flow.begin_resync()
    assert not flow.try_acquire("a"), "the old state holds until the new subscription speaks"
    flow.end_resync(generation)
    assert flow.try_acquire("a"), "nothing standing: nobody is held"

    flow.apply(ControlEvent(run_id="r", grant_steps=1))
    generation = flow.begin_resync()
    flow.end_resync(generation)
    assert flow.try_acquire("a") and not flow.try_acquire("a"), "credits are deltas and are kept"


async def test_a_refused_try_leaves_the_step_to_the_waiter() -> None:
    flow = RunFlow("r")
    flow.apply(ControlEvent(run_id="r", pause=True))
    flow.apply(ControlEvent(run_id="r", grant_steps=1))
    assert not flow.try_acquire("a")
    waiter = asyncio.create_task(flow.wait_until_allowed("a"))
    assert await _blocked(waiter)
    flow.apply(ControlEvent(run_id="r", resume=True))
    await asyncio.wait_for(waiter, 5)
    assert flow.snapshot().credits == {"": 0}
    assert not flow.try_acquire("a")
