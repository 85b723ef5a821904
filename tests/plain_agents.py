"""Plain SPADE agents for tests that exercise the XMPP server itself."""

from __future__ import annotations

import asyncio

from spade.agent import Agent

LOGIN_TIMEOUT_S = 30.0


def plain_agent(jid: str, port: int) -> Agent:
    """A stock SPADE agent (password "pw") for the server on localhost:`port`.

    The process keeps its event-loop policy: SPADE's first agent installs uvloop's
    (docs/spade-traps.md, trap 11), which breaks asyncio subprocesses in later tests.
    """
    policy = asyncio.get_event_loop_policy()
    agent = Agent(jid, "pw", port=port)
    asyncio.set_event_loop_policy(policy)
    return agent


async def log_in(agent: Agent) -> None:
    """Register and log `agent` in, failing the test with its JID if that takes too long."""
    try:
        await asyncio.wait_for(agent.start(auto_register=True), LOGIN_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise AssertionError(f"{agent.jid} could not register and log in within {LOGIN_TIMEOUT_S:g}s") from None
