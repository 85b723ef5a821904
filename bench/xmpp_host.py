"""The benchmark run's XMPP server, in a process of its own: ``python -m bench.xmpp_host``.

Starts the embedded pyjabber server (``agents.xmpp_server``) on free loopback ports, prints
its client port on stdout, and serves until stdin closes (the benchmark ending, however it
ends) or SIGTERM. It plays the part of ``spade run``: the agents of every benchmark, in the
benchmark process and in probe processes, log in to it as clients.

A process of its own, so that its CPU time is never counted as the agents'.

The pyjabber bugs that made logins from other processes time out (a stream restart lost after
STARTTLS) or their messages vanish are worked around inside ``start_xmpp_server``
(``agents.xmpp_server.patch_pyjabber``).
"""
from __future__ import annotations

import asyncio
import signal
import sys

from agents.xmpp_server import start_xmpp_server


async def serve() -> None:
    server = await start_xmpp_server(0, 0)
    print(server.client_port, flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.read() or done.set())
    await done.wait()
    loop.remove_reader(sys.stdin.fileno())
    await server.stop()


if __name__ == "__main__":
    asyncio.run(serve())
