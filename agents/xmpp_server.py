"""An XMPP server (pyjabber, the server behind `spade run`) started inside this process.

Why not `spade.run(..., embedded_xmpp_server=True)`: that always binds localhost:5222, exits 1
with no output when the port is busy, and brings up pyjabber's admin web page on the fixed port
9090. Tests, the container and several concurrent runs on one machine need their own ports, a
clear error when a port is taken, a bounded readiness wait and a stop that cannot hang.

What this module does differently from starting pyjabber's `Server` by hand:
- the admin page / HTTP upload service is disabled: it is only started when the
  "urn:xmpp:http:upload:0" plugin and the "upload.$" item are configured, and its port (9090)
  cannot be moved, so two servers on one machine would fight over it;
- it listens on the loopback host only (pyjabber also listens on the machine's LAN address);
- ports are checked before pyjabber binds them, because pyjabber answers a busy port with
  `SystemExit` raised inside an asyncio task, which would tear down the whole event loop;
- pyjabber's SIGINT/SIGTERM handlers (which raise `SystemExit`) are removed again once it runs,
  so the embedding program keeps control of its signals;
- accounts live in a throwaway database file, not in pyjabber's in-memory database: that one is
  a single SQLite connection, and pyjabber cancels a session's stanza handler when its client
  disconnects, also in the middle of a query; SQLAlchemy then discards the connection, and with
  it every account (the next registration fails, "no such table: credentials", and that agent's
  login hangs). With a file, a discarded connection is just reopened;
- registrations are hashed in threads, not in the worker processes pyjabber forks for it
  (`hash_passwords_in_threads` says why), and stop() shuts that pool down;
- two pyjabber 0.4.5 bugs are worked around (`patch_pyjabber`): every client session's stanza
  handler died right after login (so agents in other processes could not message each other
  through the server), and a stream restart arriving early after STARTTLS was lost (that login
  then timed out).

pyjabber keeps its configuration and database in module globals: run at most one embedded
server per process at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

DEFAULT_HOST = "localhost"
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGABRT)
# pyjabber's default feature set minus HTTP file upload, whose presence is what starts the admin page.
_UPLOAD_PLUGIN = "urn:xmpp:http:upload:0"
_UPLOAD_ITEM = "upload.$"
_STREAM_TAG = ("http://etherx.jabber.org/streams", "stream")


class XmppServerError(RuntimeError):
    """The embedded XMPP server could not be started (busy port, not ready in time...)."""


def xmpp_reachable(host: str = DEFAULT_HOST, port: int = 5222, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port within `timeout` seconds.

    A cheap probe used before starting agents: an XMPP client connecting to nothing waits forever.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def xmpp_reachable_async(host: str = DEFAULT_HOST, port: int = 5222, timeout: float = 1.0) -> bool:
    """`xmpp_reachable` without blocking the event loop."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _check_port_free(host: str, port: int, role: str) -> None:
    """Raise XmppServerError naming the port if it cannot be bound on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option asyncio's create_server uses, so TIME_WAIT leftovers do not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise XmppServerError(
                f"cannot start the embedded XMPP server: {role} port {port} on {host} is busy ({err.strerror}). "
                f"Another XMPP server (e.g. `spade run`) may already be running there: connect to it instead, "
                f"or choose other ports."
            ) from None


@dataclass
class EmbeddedXmppServer:
    """A running in-process pyjabber server. Create it with `start_xmpp_server`."""

    host: str
    client_port: int
    server_port: int
    _task: asyncio.Task = field(repr=False)
    _server: object = field(repr=False)
    _database_dir: str = field(repr=False)

    @property
    def running(self) -> bool:
        """True until stop() has run or the server task has ended on its own."""
        return not self._task.done()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, close and delete the database and shut down the hashing pool.

        Bounded: if pyjabber does not wind down within `timeout` seconds, stop() logs it and
        returns anyway rather than hanging the caller (seen here: 2 in 36 shutdowns hung).
        """
        if not self._task.done():
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                logger.warning("embedded XMPP server on port %d did not stop within %.1fs", self.client_port, timeout)
        elif not self._task.cancelled() and self._task.exception() is not None:
            logger.warning("embedded XMPP server on port %d had failed: %r", self.client_port, self._task.exception())
        _shutdown_process_pool()
        shutil.rmtree(self._database_dir, ignore_errors=True)
        logger.info("embedded XMPP server on %s:%d stopped", self.host, self.client_port)

    async def __aenter__(self) -> "EmbeddedXmppServer":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def hash_passwords_in_threads() -> None:
    """Make the running pyjabber server hash registrations in threads, not forked processes.

    pyjabber forks its hashing workers lazily, at the first registrations, when gRPC threads
    (a telemetry proxy, an in-process daemon) may be busy; with gRPC's fork support on (its
    default unless GRPC_ENABLE_FORK_SUPPORT=false is set before gRPC loads) such a child can
    crash, and every registration after it hangs. hashlib.pbkdf2_hmac releases the GIL:
    threads hash in parallel just as well. `start_xmpp_server` calls it; it is idempotent.
    """
    import attrs
    from pyjabber import AppConfig

    config = AppConfig.app_config
    if config is not None and not isinstance(config.process_pool_exe, ThreadPoolExecutor):
        forking_pool = config.process_pool_exe
        hashing_threads = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="xmpp-hash")
        AppConfig.app_config = attrs.evolve(config, process_pool_exe=hashing_threads)
        forking_pool.shutdown(wait=False, cancel_futures=True)


def _shutdown_process_pool() -> None:
    from pyjabber import AppConfig

    config = AppConfig.app_config
    if config is not None:
        config.process_pool_exe.shutdown(wait=True, cancel_futures=True)


async def start_xmpp_server(
    client_port: int = 5222,
    server_port: int = 5269,
    *,
    host: str = DEFAULT_HOST,
    ready_timeout: float = 15.0,
    quiet: bool = True,
) -> EmbeddedXmppServer:
    """Start pyjabber in the running event loop, with a fresh database, and wait until it accepts clients.

    Pass `client_port=0` / `server_port=0` to pick free ports. Agents then connect with
    `port=server.client_port` and JIDs `name@{host}`; accounts are registered in-band on start.
    Raises XmppServerError when a port is busy or the server is not ready within `ready_timeout`.
    `quiet` silences pyjabber's own log (it logs every stanza at DEBUG through loguru).
    """
    from loguru import logger as loguru_logger
    from pyjabber.server import Server
    from pyjabber.server_parameters import Parameters

    if quiet:
        loguru_logger.disable("pyjabber")

    client_port = client_port or free_port()
    server_port = server_port or free_port()
    if client_port == server_port:
        raise XmppServerError(f"client and server ports must differ, both are {client_port}")
    bind_host = socket.gethostbyname(host)
    _check_port_free(bind_host, client_port, "client")
    _check_port_free(bind_host, server_port, "server-to-server")

    database_dir = tempfile.mkdtemp(prefix="xmpp-server-")
    defaults = Parameters()
    params = Parameters(
        host=host,
        client_port=client_port,
        server_port=server_port,
        database_in_memory=False,  # see the module docstring
        database_path=os.path.join(database_dir, "accounts.db"),
        message_persistence=False,
        plugins=[p for p in defaults.plugins if p != _UPLOAD_PLUGIN],
        items={k: v for k, v in defaults.items.items() if k != _UPLOAD_ITEM},
    )
    patch_pyjabber()
    previous_handlers = {sig: signal.getsignal(sig) for sig in _HANDLED_SIGNALS}
    server = Server(params)
    server._public_ip = None  # listen on loopback only; see the module docstring
    task = asyncio.create_task(server.start(), name=f"pyjabber:{client_port}")
    embedded = EmbeddedXmppServer(host, client_port, server_port, task, server, database_dir)
    try:
        ready = asyncio.create_task(server.ready.wait())
        done, _ = await asyncio.wait({ready, task}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not server.ready.is_set():
            reason = "it stopped while starting" if task.done() else f"not ready within {ready_timeout:.0f}s"
            raise XmppServerError(f"embedded XMPP server on {host}:{client_port} failed to start: {reason}")
    except BaseException:
        await embedded.stop()
        raise
    finally:
        _restore_signal_handlers(previous_handlers)
    hash_passwords_in_threads()  # before any client can register
    logger.info("embedded XMPP server listening on %s:%d (server-to-server %d)", host, client_port, server_port)
    return embedded


def patch_pyjabber() -> None:
    """Work around two pyjabber 0.4.5 bugs for every server this process runs; idempotent.

    `start_xmpp_server` calls it. Both patches are process-wide (pyjabber keeps its state in
    module globals) and act on the server side only: a `spade run` server, in a process of its
    own, is untouched, and agents connect to it as before.
    """
    _answer_upload_requests_without_upload_service()
    _recognise_stream_restarts()


class _NoHttpUpload:
    """Stands in for pyjabber's HTTP upload plugin (XEP-0363) when the upload service is off.

    pyjabber's `PluginManager`, built for every client session once it has logged in, calls
    `HTTPFieldUpload()` whatever the configuration; that Singleton was only ever constructed with
    its upload web server, which this module leaves out, so the call raises TypeError in
    `QueueBridge.feed` and kills the session's stanza handler: the server then ignored that
    client's roster requests, presence and messages. With this instance in the Singleton's place
    the session lives, and an upload request gets the same error as any unsupported namespace.
    """

    async def feed(self, jid: object, element: object) -> bytes:
        from pyjabber.stanzas.error import StanzaError

        return StanzaError.feature_not_implemented("request", _UPLOAD_PLUGIN)


def _answer_upload_requests_without_upload_service() -> None:
    from pyjabber.plugins.xep_0363.xep_0363 import HTTPFieldUpload
    from pyjabber.utils.Singleton import Singleton

    # setdefault: a server configured with the upload service (not ours) keeps its real one.
    Singleton._instances.setdefault(HTTPFieldUpload, _NoHttpUpload())


def _recognise_stream_restarts() -> None:
    """Make client connections parse with `_restart_aware_parser_class()` (see there why)."""
    from pyjabber.network.protocols import XMLProtocol as protocol_module

    if not getattr(protocol_module.XMLParser, "recognises_stream_restarts", False):
        protocol_module.XMLParser = _restart_aware_parser_class(protocol_module.XMLParser)


def _restart_aware_parser_class(base: type) -> type:
    """pyjabber's stream parser, where an opening <stream:stream> restarts the stream whenever it comes.

    After STARTTLS pyjabber awaits `loop.start_tls` and only then resets its parser. asyncio's
    own TLS transport (not uvloop's, which `spade run` gets) hands the client's new
    <stream:stream>, when it comes with the client's last handshake message, to the parser before
    that await returns: the header is taken for a child of the old stream, the reset then drops
    it, the server never answers, and the client's login times out (on a loaded machine it hit
    most logins from another process). RFC 6120 4.3.3: a new stream header
    restarts the stream, so the header itself clears the parser's stack, and the negotiator's
    late reset, which would now drop the new stream, does nothing.
    """

    class RestartAwareXMLParser(base):  # type: ignore[misc, valid-type]
        recognises_stream_restarts = True

        def startElementNS(self, name: tuple, qname: str, attrs: object) -> None:
            if name == _STREAM_TAG:
                self._stack.clear()
            super().startElementNS(name, qname, attrs)

        def reset_stack(self) -> None:
            """The next stream header resets the stack (see the class docstring)."""

    return RestartAwareXMLParser


def _restore_signal_handlers(handlers: dict) -> None:
    for sig, handler in handlers.items():
        with contextlib.suppress(ValueError, TypeError):  # not the main thread / handler not settable
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
