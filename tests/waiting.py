"""Waiting on a condition in agent tests: until it holds, or until a value stops changing
(polled with a deadline, never a bare sleep)."""
from __future__ import annotations

import asyncio
import time


async def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    """Wait until `condition()` is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def wait_until_still(value, what: str, still_s: float = 0.3, timeout: float = 30.0) -> int:
    """Wait until `value()` has not changed for `still_s` seconds (a stepping agent changes it
    thousands of times a second); return it."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < still_s:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
        if (current := value()) != last:
            last, since = current, time.monotonic()
    return last
