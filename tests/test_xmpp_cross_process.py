"""Agents in different processes reach each other through the embedded XMPP server.

Agents in one process talk through SPADE's in-process dispatch and never touch the server
(docs/spade-traps.md, trap 12), so only a second process shows that the server itself delivers, as
it must for a container's embedded server and workers started as processes of their own.
The session's shared server is used on purpose: the agent tests that run after this one show
that a client from another process leaves it in working order.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from spade.behaviour import OneShotBehaviour
from spade.message import Message

from tests.plain_agents import log_in, plain_agent

WAIT_S = 60.0

# Logs in, says "ready", answers the first message it gets, and exits 0 only if it answered.
ECHO_AGENT = textwrap.dedent(
    """
    import asyncio, sys
    from spade.agent import Agent
    from spade.behaviour import OneShotBehaviour

    class EchoOnce(OneShotBehaviour):
        async def run(self):
            print("ready", flush=True)
            question = await self.receive(timeout=WAIT_S)
            if question is not None:
                answer = question.make_reply()
                answer.body = "echo: " + question.body
                await self.send(answer)
                self.agent.answered = True

    async def main():
        agent = Agent(sys.argv[2], "pw", port=int(sys.argv[1]))
        agent.answered = False
        await asyncio.wait_for(agent.start(auto_register=True), 30)
        echo = EchoOnce()
        agent.add_behaviour(echo)
        await asyncio.wait_for(echo.join(), WAIT_S + 10)
        await agent.stop()
        sys.exit(0 if agent.answered else "no message from the other process arrived")

    asyncio.run(main())
    """
).replace("WAIT_S", repr(WAIT_S))


class _Ask(OneShotBehaviour):
    """Send one question to `to` and keep the answer (None if none came) in `self.answer`."""

    def __init__(self, to: str) -> None:
        super().__init__()
        self.to = to
        self.answer: Message | None = None

    async def run(self) -> None:
        await self.send(Message(to=self.to, body="hello from the test process"))
        self.answer = await self.receive(timeout=WAIT_S)


@pytest.mark.timeout(180)
async def test_agents_in_two_processes_message_each_other(xmpp_server, unique_jid):
    asker = plain_agent(unique_jid("asker"), xmpp_server.client_port)
    await log_in(asker)
    echo_jid = unique_jid("echo")
    echo = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ECHO_AGENT, str(xmpp_server.client_port), echo_jid,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        ready = await asyncio.wait_for(echo.stdout.readline(), WAIT_S)
        if ready != b"ready\n":
            _, err = await asyncio.wait_for(echo.communicate(), WAIT_S)
            pytest.fail(f"the agent in the other process did not start: {err.decode()[-2000:]}")
        ask = _Ask(echo_jid)
        asker.add_behaviour(ask)
        await asyncio.wait_for(ask.join(), WAIT_S + 10)
        _, err = await asyncio.wait_for(echo.communicate(), WAIT_S + 20)
        assert echo.returncode == 0, f"the other process says: {err.decode()[-2000:]}"
        assert ask.answer is not None, "the other process answered, but its answer never arrived"
        assert ask.answer.body == "echo: hello from the test process"
    finally:
        if echo.returncode is None:
            echo.kill()
            await echo.wait()
        await asker.stop()
