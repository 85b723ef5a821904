"""The benchmark run's XMPP server, in a process of its own: ``python -m bench.xmpp_host``.

Starts the embedded pyjabber server (``agents.xmpp_server``) on free loopback ports, prints
its client port on stdout, and serves until stdin closes (the benchmark ending, however it
ends) or SIGTERM. It plays the part of ``spade run``: the agents of every benchmark, in the
benchmark process and in probe processes, log in to it as clients.

A process of its own, so that its CPU time is never counted as the agents'.

pyjabber 0.4.5 loses a client's stream restart when it arrives early: after STARTTLS it awaits
``loop.start_tls`` and only then resets its XML parser, but the TLS transport hands the
client's new ``<stream:stream>`` (sent as soon as the client's handshake ends) to the parser
before that await returns; the header is taken for a child of the old stream, the reset then
drops it, and the server never answers (the agent's start() times out after 10 s). On this
loaded machine that happened to most logins. ``_recognise_stream_restarts`` makes the parser
treat an opening ``<stream:stream>`` as the restart it is, whenever it comes.
"""
from __future__ import annotations

import asyncio
import signal
import sys

from agents.xmpp_server import start_xmpp_server

_STREAM = ("http://etherx.jabber.org/streams", "stream")


def _recognise_stream_restarts() -> None:
    """A new stream header restarts the stream (RFC 6120 4.3.3) wherever the parser stands;
    the negotiator's own reset then has nothing left to do."""
    from pyjabber.network.parsers.XMLParser import XMLParser

    opening = XMLParser.startElementNS

    def start_element(parser: XMLParser, name: tuple, qname: str, attrs: object) -> None:
        if name == _STREAM:
            parser._stack.clear()
        opening(parser, name, qname, attrs)

    XMLParser.startElementNS = start_element
    XMLParser.reset_stack = lambda parser: None


async def serve() -> None:
    _recognise_stream_restarts()
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
