"""The async gRPC proxy every agent streams its telemetry through (client side of MOSAIC/1.0).

Usage (the proxy's public face)::

    async with TelemetryGrpcProxy(target="127.0.0.1:50055").session(run_id="run-1") as tx:
        await tx.wait_until_allowed("agent-1")          # honours pause / credits / rate
        await tx.emit_step(run_id=..., episode_index=..., step_index=..., action_json=...,
                           observation_json=..., reward=..., terminated=..., truncated=...,
                           policy_label=..., backend=..., agent_id=..., render_hint_json=None,
                           payload_version=1, timestamp_ns=time.time_ns())
        await tx.emit_episode(run_id=..., episode_index=..., total_reward=..., steps=...,
                              terminated=..., truncated=..., metadata={...}, agent_id=...,
                              timestamp_ns=time.time_ns())

How records travel, and why:

- `emit_*` serializes the record once and appends it to a bounded in-memory buffer; it never
  waits for the network (one message per record tops out near 6,000/s, so throughput comes
  from batching). When the buffer is full, `emit_*` spills the buffer to the disk spool
  (`telemetry.spool`) instead of waiting or dropping: emit never blocks, nothing is lost.
- A background sender task flushes the buffer through `PublishTelemetryBatch` when a batch is
  full, every `flush_interval_s`, on `flush()` and on exit. Batches are split so that no wire
  message exceeds min(max_message_bytes, the daemon's advertised limit).
- Daemon down (at start or mid-run): batches go to the spool; the sender retries with bounded,
  jittered exponential backoff; once the daemon answers, the spool is replayed in order and
  then deleted, before newer records. A batch whose send failed with an unknown outcome is
  sent again; the daemon's dedup on natural keys makes that exactly-once in the store.
- Per run: `RegisterWorker` (proto "MOSAIC/1.0") gives the session token sent as
  `authorization: Bearer <token>` on every publish stream and on the ControlStream; NOT_FOUND
  means the daemon wants `SubmitRun` first, so the proxy submits the run and registers again.
  A ControlStream subscription per run feeds pause / credits / rate into `telemetry.flow`
  and reconnects after a daemon restart.
- Against a daemon without the batch extension (the reference daemon) the proxy falls back to
  the per-record `PublishRunSteps` / `PublishRunEpisodes` streams.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import ssl
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import grpc
import grpc.aio

from telemetry import columns, validate
from telemetry.auth import PROTO_VERSION, bearer_metadata
from telemetry.errors import (
    MessageTooLargeError,
    NotADaemonError,
    ProtocolVersionError,
    RecordOutOfRangeError,
    RecordsRejectedError,
    RunRefusedError,
    SessionClosedError,
    TelemetryError,
    TlsHandshakeError,
    TlsRequiredError,
    TokenRefusedError,
)
from telemetry.flow import RunFlow
from telemetry.generated import trainer_pb2, trainer_pb2_grpc
from telemetry.spool import TelemetrySpool, default_spool_dir, read_frames
from telemetry.store import record_values

SCHEMA_ID = "mosaic.telemetry"
SCHEMA_VERSION = 1
_SERVICE = "/gymgui.trainer.TrainerService/"

# TelemetryBatch field tags (field number << 3 | wire type 2): records are framed once, at
# emit time, so a batch is a byte concatenation rather than a protobuf copy per record.
_RUN_ID_TAG = b"\x0a"
_STEP_TAG = b"\x12"
_EPISODE_TAG = b"\x1a"
_MESSAGE_TAG = b"\x22"
_STEP_COLUMNS_TAG = b"\x2a"
_EPISODE_COLUMNS_TAG = b"\x32"
#: What each kind of column block is framed with, and called in errors and JSON lines.
_BLOCK_KINDS = {trainer_pb2.StepColumns: (_STEP_COLUMNS_TAG, "step", _STEP_TAG),
                trainer_pb2.EpisodeColumns: (_EPISODE_COLUMNS_TAG, "episode", _EPISODE_TAG)}
_FRAMING_SLACK = 6          # tag byte + the longest varint length a record can have
_CALL_MAX_BATCHES = 8       # batches per PublishTelemetryBatch call
#: Bytes per PublishTelemetryBatch call (about 200,000 steps as columns). A call is what the
#: sender waits on; under a busy agent it takes many turns of the event loop whatever it holds,
#: so a cap counted in records (column blocks hold thousands) made the sender the bottleneck.
_CALL_MAX_BYTES = 8 << 20
_RESYNC_GRACE_S = 0.5       # how long a new control subscription may take to send its state
_YIELD_EVERY = 64           # emit_step/emit_episode yield to the event loop once per this many calls

# UNAVAILABLE details meaning "something answered, but not in HTTP/2": not a daemon.
_NOT_GRPC_MARKERS = ("Failed parsing HTTP/2", "http1.x", "Expected SETTINGS frame")
_TLS_FAILURE_MARKER = "Tls handshake failed"
# UNAVAILABLE detail of a server that accepted the connection and closed it at once: what a
# TLS daemon does to a plaintext client (and a daemon stopping might do).
_CLOSED_MARKER = "Socket closed"
# Outcome unknown or daemon away (CANCELLED, ABORTED: a daemon stopping or restarting;
# RESOURCE_EXHAUSTED: one too busy): keep the records and send them again later. Every other
# code, INTERNAL and UNKNOWN included, is a refusal: the records go to the rejected folder
# instead of being retried for ever.
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED}
_AUTH_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}

log = logging.getLogger(__name__)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _timestamp(timestamp_ns: int | None) -> dict[str, int]:
    ns = time.time_ns() if timestamp_ns is None else int(timestamp_ns)
    return {"seconds": ns // 1_000_000_000, "nanos": ns % 1_000_000_000}


def _compact_json_encoder() -> Callable[[Any], str]:
    """`json.dumps(value, separators=(",", ":"))` without the encoder json builds per call
    (about half of its cost for a small dict, paid once per episode on the agent's thread)."""
    make = json.encoder.c_make_encoder
    if make is None:   # no C accelerator in this Python
        return json.JSONEncoder(separators=(",", ":")).encode

    def unsupported(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    # (markers, default, encode_str, indent, key_sep, item_sep, sort_keys, skipkeys, allow_nan);
    # no markers: a value that contains itself ends in RecursionError, reported below.
    iterencode = make(None, unsupported, json.encoder.encode_basestring_ascii, None, ":", ",",
                      False, False, True)
    return lambda value: "".join(iterencode(value, 0))


_compact_json = _compact_json_encoder()


def _metadata_json(metadata: Any) -> str:
    return _as_json_text(metadata, "metadata")


def _as_json_text(value: Any, name: str) -> str:
    """`*_json` fields take JSON text; other values are encoded for the caller."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return _compact_json(value)
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(f"{name} must be JSON text or a JSON-serialisable value: {err}") from None


def _record_json(kind: str, msg: Any) -> str:
    """One JSONL line with the proto's field names (the fallback when no daemon is used)."""
    out: dict[str, Any] = {"type": kind}
    for f in msg.DESCRIPTOR.fields:
        if f.name == "seq_id":
            continue   # assigned by the daemon on the way out; meaningless here
        value = getattr(msg, f.name)
        out[f.name] = value.ToJsonString() if f.message_type is not None else value
    return _compact_json(out)


def _largest_string_field(msg: Any) -> tuple[str, int]:
    sizes = [(f.name, len(getattr(msg, f.name).encode()))
             for f in msg.DESCRIPTOR.fields if f.type == f.TYPE_STRING]
    return max(sizes, key=lambda item: item[1])


def _batch_record_count(batch: trainer_pb2.TelemetryBatch) -> int:
    return (len(batch.steps) + len(batch.episodes) + len(batch.messages)
            + sum(columns.count(block) for block in _blocks(batch)))


def _blocks(batch: trainer_pb2.TelemetryBatch) -> list[columns.Block]:
    """A batch's column blocks, steps first."""
    return [*batch.step_columns, *batch.episode_columns]


def _framed(tag: bytes, data: bytes) -> bytes:
    """A serialized record as one field of a TelemetryBatch (tag, length, bytes)."""
    return tag + _varint(len(data)) + data


#: A buffered entry: (run_id, framed field of a TelemetryBatch, how many records it holds).
_Entry = tuple[str, bytes, int]


def _record(message_type: type, where: Callable[[], str], **fields: Any) -> Any:
    """``message_type(**fields)``; a string field that cannot be sent as UTF-8 (a lone
    surrogate, e.g. from bytes decoded with "surrogateescape") is a ValueError naming the
    record (``where()``, only built then) and the field, raised where the record was made."""
    try:
        return message_type(**fields)
    except UnicodeEncodeError as err:
        name = next(n for n, v in fields.items() if isinstance(v, str) and _not_utf8(v))
        raise ValueError(f"{where()}: {name} is not valid Unicode text ({err.reason} at character "
                         f"{err.start}); the record was not accepted") from None


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_out_of_range(kind: str, run_id: str, rows: list[tuple]) -> None:
    """Raise RecordOutOfRangeError naming the first record of ``rows`` the store cannot hold."""
    _, refusals = validate.screen(kind + "s", run_id, rows)
    raise RecordOutOfRangeError(refusals[0].reason)


def _refused_batch(run_id: str, payloads: list[bytes],
                   refused: Sequence[trainer_pb2.RefusedRecord]) -> trainer_pb2.TelemetryBatch:
    """The records of ``payloads`` that the daemon's response lists as refused."""
    wanted = {(r.kind, r.agent_id, r.episode_index, r.index) for r in refused}
    out = trainer_pb2.TelemetryBatch(run_id=run_id)
    for payload in payloads:
        batch = trainer_pb2.TelemetryBatch.FromString(payload)
        blocks = _blocks(batch)
        steps = [*batch.steps, *(s for b in blocks if type(b) is trainer_pb2.StepColumns
                                 for s in columns.expand(run_id, b))]
        episodes = [*batch.episodes, *(e for b in blocks if type(b) is trainer_pb2.EpisodeColumns
                                       for e in columns.expand(run_id, b))]
        out.steps.extend(s for s in steps if ("step", s.agent_id, s.episode_index, s.step_index) in wanted)
        out.episodes.extend(e for e in episodes if ("episode", e.agent_id, e.episode_index, 0) in wanted)
        out.messages.extend(m for m in batch.messages
                            if ("message", m.agent_id, m.episode_index, m.message_index) in wanted)
    return out


async def _speaks_tls(target: str, timeout: float) -> bool:
    """Whether ``target`` ("host:port") completes a TLS handshake (certificate not checked):
    tells a TLS daemon, which closes plaintext connections, from one that is stopping."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return False
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port), ssl=probe), timeout)
    except (OSError, asyncio.TimeoutError):   # ssl.SSLError is an OSError
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class _DaemonUnavailable(Exception):
    """The daemon is away or the outcome of a call is unknown: spool and retry."""


class _Refused(Exception):
    """The daemon refused for a reason that retrying the same request cannot fix."""


class Backoff:
    """Bounded exponential backoff with jitter (each delay drawn from [d/2, d])."""

    def __init__(self, initial_s: float = 0.05, maximum_s: float = 2.0) -> None:
        self._initial = initial_s
        self._maximum = maximum_s
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self._maximum, self._initial * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


@dataclass(frozen=True)
class ProxyStats:
    """Counts of a session's records (a snapshot).

    accepted: records `emit_*` took. delivered: records the daemon acknowledged, live or
    replayed (replayed spool of an earlier session counts too, so it may exceed accepted).
    spooled: records written to the disk spool. replayed: delivered records that came from
    the spool. buffered: accepted records in memory, not yet delivered or spooled.
    refused: records the daemon refused, kept in the spool's rejected folder (see
    `TelemetrySession.refusals`).
    connected: whether the last exchange with the daemon succeeded. control_streams: open
    ControlStream subscriptions.
    """
    accepted: int
    delivered: int
    spooled: int
    replayed: int
    buffered: int
    connected: bool
    control_streams: int
    refused: int = 0


@dataclass
class _RunLink:
    """What the session knows about one run on the daemon."""
    run_id: str
    flow: RunFlow
    agents: set[str] = field(default_factory=set)
    token: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    control_task: asyncio.Task[None] | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.token or "")

    def describe(self) -> str:
        agents = ",".join(sorted(self.agents)) or "-"
        return f"run {self.run_id} (agents {agents})"


class TelemetryGrpcProxy:
    """Configuration of the connection to one telemetry daemon; opens `session()`s.

    Args:
        target: daemon address, "host:port".
        max_message_bytes: largest wire message this proxy sends; batches are split below
            min(this, the daemon's advertised limit), and a single larger record raises
            `MessageTooLargeError` at emit time.
        worker_id: identifies this producer to the daemon (default "<hostname>-<pid>").
        worker_kind: RegisterWorker's worker_kind.
        run_config: dict submitted with SubmitRun when the daemon wants the run submitted
            first (it answers RegisterWorker with NOT_FOUND); "{}" when None.
        tls: use TLS; root_certificates (PEM bytes, or a path) to trust a private CA;
            tls_server_name overrides the name checked in the daemon's certificate.
        resume: continue the session's run even if it has already finished (RegisterWorker's
            ``resume``); `TelemetrySession.next_episode_index` then says where each agent's
            episode numbering continues. Without it a finished run refuses the session
            (`RunRefusedError`), so one run_id never holds two runs.
        run_secret: the secret of the runs this proxy produces into: the first producer of a
            run sets it, and every later one (and every controller) must give it.
        spool_dir: root of the durable spool (default: `telemetry.spool.default_spool_dir()`).
        jsonl_stdout: also write every accepted record as one JSON line on stdout.
        batch_max_records: records per batch message (a column block of many steps counts as
            one); that many buffered records wake the sender.
        flush_interval_s: the sender flushes at least this often; while the daemon is down
            (between reconnect attempts), each flush writes the buffer to the spool file, so
            a record `emit_*` accepted is on disk (it survives a SIGKILL of this process)
            within about this interval.
        buffer_max_records / buffer_max_bytes: in-memory buffer bound, in messages (a record,
            or a column block of many) and in bytes; beyond either, emit spills the buffer to
            the spool.
        connect_timeout_s: deadline of handshake calls (a silent target counts as down).
        rpc_timeout_s: deadline of a publish call.
        close_timeout_s: on exit, how long to keep delivering to a daemon that answers before
            leaving the rest in the spool.
        reconnect_max_backoff_s: ceiling of the jittered reconnect backoff.
        spool_sync_interval_s: fsync cadence of the spool (what survives an operating-system
            crash; `flush()` fsyncs at once).
        heartbeat_interval_s: how often each registered run gets a Heartbeat, so the daemon
            knows an idle (e.g. paused) worker is alive.
    """

    def __init__(self, target: str = "127.0.0.1:50055", *,
                 max_message_bytes: int = 4 * 1024 * 1024,
                 worker_id: str | None = None,
                 worker_kind: str = "spade-bdi",
                 run_config: dict[str, Any] | None = None,
                 tls: bool = False,
                 root_certificates: bytes | str | os.PathLike[str] | None = None,
                 tls_server_name: str | None = None,
                 resume: bool = False,
                 run_secret: str = "",
                 spool_dir: str | os.PathLike[str] | None = None,
                 jsonl_stdout: bool = False,
                 batch_max_records: int = 2000,
                 flush_interval_s: float = 0.02,
                 buffer_max_records: int = 50_000,
                 buffer_max_bytes: int = 64 * 1024 * 1024,
                 connect_timeout_s: float = 2.0,
                 rpc_timeout_s: float = 30.0,
                 close_timeout_s: float = 10.0,
                 reconnect_max_backoff_s: float = 2.0,
                 spool_sync_interval_s: float = 1.0,
                 heartbeat_interval_s: float = 5.0) -> None:
        if max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be at least 1024, got {max_message_bytes}")
        if batch_max_records < 1:
            raise ValueError(f"batch_max_records must be >= 1, got {batch_max_records}")
        if buffer_max_records < batch_max_records:
            raise ValueError(f"buffer_max_records ({buffer_max_records}) must be >= "
                             f"batch_max_records ({batch_max_records})")
        for name, value in (("flush_interval_s", flush_interval_s),
                            ("connect_timeout_s", connect_timeout_s),
                            ("rpc_timeout_s", rpc_timeout_s),
                            ("reconnect_max_backoff_s", reconnect_max_backoff_s),
                            ("spool_sync_interval_s", spool_sync_interval_s),
                            ("heartbeat_interval_s", heartbeat_interval_s)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.target = target
        self.max_message_bytes = max_message_bytes
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.worker_kind = worker_kind
        self.run_config = run_config
        self.tls = tls or root_certificates is not None
        self.root_certificates = root_certificates
        self.tls_server_name = tls_server_name
        self.resume = resume
        self.run_secret = run_secret
        self.spool_dir = Path(spool_dir) if spool_dir is not None else default_spool_dir()
        self.jsonl_stdout = jsonl_stdout
        self.batch_max_records = batch_max_records
        self.flush_interval_s = flush_interval_s
        self.buffer_max_records = buffer_max_records
        self.buffer_max_bytes = buffer_max_bytes
        self.connect_timeout_s = connect_timeout_s
        self.rpc_timeout_s = rpc_timeout_s
        self.close_timeout_s = close_timeout_s
        self.reconnect_max_backoff_s = reconnect_max_backoff_s
        self.spool_sync_interval_s = spool_sync_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s

    def session(self, run_id: str | None = None) -> "TelemetrySession":
        """An async context manager streaming to the daemon; handshakes for `run_id` on entry.

        Without `run_id`, runs are registered lazily the first time a record names them.
        """
        return TelemetrySession(self, run_id)

    def _channel(self) -> grpc.aio.Channel:
        backoff_ms = int(self.reconnect_max_backoff_s * 1000)
        options: list[tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", min(100, backoff_ms)),
            ("grpc.min_reconnect_backoff_ms", min(100, backoff_ms)),
            ("grpc.max_reconnect_backoff_ms", backoff_ms),
            # A fresh session starts with a fresh connection: gRPC otherwise shares subchannels
            # per target process-wide, and one still backing off from an earlier session's
            # failures would make this one think a daemon that is up is down.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if not self.tls:
            return grpc.aio.insecure_channel(self.target, options=options)
        roots = self.root_certificates
        if roots is not None and not isinstance(roots, bytes):
            roots = Path(roots).read_bytes()
        if self.tls_server_name:
            options.append(("grpc.ssl_target_name_override", self.tls_server_name))
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        return grpc.aio.secure_channel(self.target, credentials, options=options)


class TelemetrySession:
    """One streaming session: buffer, sender task, spool, registrations and control state.

    Obtain it from `TelemetryGrpcProxy.session()` and use it as an async context manager.
    """

    def __init__(self, proxy: TelemetryGrpcProxy, run_id: str | None) -> None:
        self._proxy = proxy
        self._target = proxy.target
        self._run_id = run_id
        self._limit = proxy.max_message_bytes
        self._batch_rpc = True
        self._links: dict[str, _RunLink] = {}
        self._buffer: deque[_Entry] = deque()
        self._buffer_bytes = 0
        self._buffered = 0                        # records in the buffer (a column block is many)
        self._accepted = 0
        self._since_yield = 0
        self._columns_ok = False                  # the daemon said it reads StepColumns
        self._inflight_first: int | None = None   # accept number of the oldest record in flight
        self._delivered = 0
        self._spooled = 0
        self._replayed = 0
        self._refused = 0
        self._refusals: list[RecordsRejectedError] = []
        self._connected = False
        self._control_open = 0
        self._fatal: TelemetryError | None = None
        self._flush_requested = False
        self._overflow_logged = False
        self._down_logged = False
        self._open = False
        self._closing = False
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._backoff = Backoff(maximum_s=proxy.reconnect_max_backoff_s)
        self._retry_at = 0.0
        self._next_heartbeat = 0.0
        self._channel: grpc.aio.Channel | None = None
        self._stub: trainer_pb2_grpc.TrainerServiceStub | None = None
        self._publish_batch: Any = None
        self._publish_steps: Any = None
        self._publish_episodes: Any = None
        self._spool = TelemetrySpool(proxy.spool_dir, proxy.target, proxy.worker_id)
        self._sender_task: asyncio.Task[None] | None = None
        #: after a resuming registration: per agent_id, the episode index its run continues at
        self.next_episode_index: dict[str, int] = {}
        self._store_id = ""   # the store of the daemon met at the target ("" until met)

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> "TelemetrySession":
        if self._open or self._closing:
            raise RuntimeError("a TelemetrySession can be entered only once")
        self._channel = self._proxy._channel()
        self._stub = trainer_pb2_grpc.TrainerServiceStub(self._channel)
        self._publish_batch = self._channel.stream_unary(
            _SERVICE + "PublishTelemetryBatch",
            response_deserializer=trainer_pb2.PublishTelemetryResponse.FromString)
        self._publish_steps = self._channel.stream_unary(
            _SERVICE + "PublishRunSteps",
            response_deserializer=trainer_pb2.PublishTelemetryResponse.FromString)
        self._publish_episodes = self._channel.stream_unary(
            _SERVICE + "PublishRunEpisodes",
            response_deserializer=trainer_pb2.PublishTelemetryResponse.FromString)
        try:
            self._spool.adopt_orphans()
            await self._handshake()
        except BaseException:
            self._spool.close()
            await self._channel.close()
            raise
        self._open = True
        if self._run_id:
            self._link(self._run_id)
        self._sender_task = asyncio.create_task(self._sender(), name="telemetry-sender")
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self._close()
        if exc is None and self._fatal is not None:
            raise self._fatal

    async def _handshake(self) -> None:
        """Fail fast on a target that is not a daemon or refuses us; a down daemon is fine."""
        assert self._stub is not None
        try:
            if self._run_id:
                link = self._link_without_control(self._run_id)
                await self._ensure_registered(link)
            else:
                health = await self._stub.GetHealth(trainer_pb2.HealthCheckRequest(),
                                                    timeout=self._proxy.connect_timeout_s)
                self._met_store(health.store_id)
            self._connected = True
        except grpc.aio.AioRpcError as err:
            failure = await self._handshake_failure(err, self._run_id or "", "GetHealth")
            if not isinstance(failure, _DaemonUnavailable):
                raise failure from None
            self._note_down(failure, self._run_id)
        except _DaemonUnavailable as failure:
            self._note_down(failure, self._run_id)
        except _Refused as refusal:
            raise RunRefusedError(self._target, self._run_id or "", str(refusal)) from None

    async def _close(self) -> None:
        self._closing = True
        self._open = False
        self._wake.set()
        task = self._sender_task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self._proxy.close_timeout_s)
            except TimeoutError:
                log.warning("daemon %s: delivery did not finish within %.1fs of exit; the rest "
                            "stays in the spool", self._target, self._proxy.close_timeout_s)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except Exception:   # the sender records its own failure in self._fatal
                pass
        self._spill_buffer("session exit")
        self._spool.close()
        self._closed_event.set()
        controls = [link.control_task for link in self._links.values() if link.control_task]
        for link in self._links.values():
            link.flow.release()
        for control in controls:
            control.cancel()
        await asyncio.gather(*controls, return_exceptions=True)
        if self._proxy.jsonl_stdout:
            sys.stdout.flush()
        if self._channel is not None:
            await self._channel.close()

    # -- the producer's API ------------------------------------------------------------
    async def emit_step(self, *, run_id: str, episode_index: int, step_index: int,
                        action_json: Any, observation_json: Any, reward: float,
                        terminated: bool, truncated: bool, policy_label: str, backend: str,
                        agent_id: str, render_hint_json: Any = None, payload_version: int = 1,
                        timestamp_ns: int | None = None) -> None:
        """Accept one environment step (never waits for the network).

        `*_json` arguments take JSON text; any other value is JSON-encoded for you.
        Raises MessageTooLargeError (naming the field and the limit) for a record that no
        wire message could carry, SessionClosedError after exit, and the session's fatal
        error (e.g. TokenRefusedError) once one happened.
        """
        self._check_accepting(run_id)
        msg = _record(
            trainer_pb2.RunStep, lambda: f"run {run_id!r}, agent {agent_id!r}, episode {episode_index}, step {step_index}",
            run_id=run_id, episode_index=episode_index, step_index=step_index,
            action_json=_as_json_text(action_json, "action_json"),
            observation_json=_as_json_text(observation_json, "observation_json"),
            reward=reward, terminated=terminated, truncated=truncated,
            timestamp=_timestamp(timestamp_ns), policy_label=policy_label or "",
            backend=backend or "", agent_id=agent_id,
            render_hint_json=_as_json_text(render_hint_json, "render_hint_json"),
            payload_version=payload_version, worker_id=self._proxy.worker_id)
        await self._accept("step", _STEP_TAG, run_id, agent_id, msg)

    async def emit_steps(self, run_id: str, agent_id: str, steps: Sequence[columns.StepLike]) -> None:
        """Accept many steps of one agent at once (never waits for the network).

        Each step is an object with the attributes of `emit_step`'s arguments (plus
        `episode_seed`, None when unset), e.g. `agents.records.StepRecord`; `*_json` fields
        must already be JSON text. The steps travel as columns (`StepColumns`), which costs a
        fraction of one `emit_step` per step; to a daemon that cannot read columns they are
        sent as RunStep messages. Same errors as `emit_step`.
        """
        await self._accept_blocks(run_id, agent_id,
                                  lambda: columns.encode_steps(agent_id, self._proxy.worker_id, steps))

    async def emit_step_table(self, run_id: str, agent_id: str, table: columns.StepTableLike) -> None:
        """Accept many steps of one agent held as columns (never waits for the network).

        `table` has one sequence per `StepColumns` field (e.g. `agents.records.StepTable`, which
        learning agents fill as they step); the sequences are copied into the wire message as
        they are, the cheapest way in. Same errors as `emit_step`.
        """
        await self._accept_blocks(run_id, agent_id, lambda: [
            columns.encode_step_table(agent_id, self._proxy.worker_id, table)] if len(table.episode_index) else [])

    async def _accept_blocks(self, run_id: str, agent_id: str,
                             encode: Callable[[], Iterable[columns.Block]]) -> None:
        """emit_steps / emit_episodes: check, encode one agent's column blocks, buffer them,
        then one loop turn."""
        self._check_accepting(run_id)
        if not agent_id:
            raise ValueError("agent_id must be a non-empty string")
        link = self._producer_link(run_id, agent_id)
        for block in encode():
            self._accept_block(run_id, block)
        self._since_yield += _YIELD_EVERY   # one turn of the loop per call, as for 64 emit_step
        await self._after_accept(link)

    def _producer_link(self, run_id: str, agent_id: str) -> _RunLink:
        """The run's link (registered lazily), noting that `agent_id` produces into it."""
        link = self._links.get(run_id) or self._link(run_id)
        link.agents.add(agent_id)
        return link

    def _accept_block(self, run_id: str, block: columns.Block) -> None:
        """Buffer one column block, halved until each part fits a wire message."""
        tag, kind, _ = _BLOCK_KINDS[type(block)]
        if validate.exceeds_int64(block):
            _refuse_out_of_range(kind, run_id, columns.row_values(block))
        data = block.SerializeToString()
        if len(data) > self._record_limit(run_id):
            if columns.count(block) > 1:
                for part in columns.split(block):
                    self._accept_block(run_id, part)
                return
            record = next(columns.expand(run_id, block))
            name, size = _largest_string_field(record)
            raise MessageTooLargeError(kind, name, size, len(data), self._record_limit(run_id))
        self._append(run_id, _framed(tag, data), columns.count(block))
        if self._proxy.jsonl_stdout:
            sys.stdout.write("".join(_record_json(kind, record) + "\n"
                                     for record in columns.expand(run_id, block)))

    async def emit_episode(self, *, run_id: str, episode_index: int, total_reward: float,
                           steps: int, terminated: bool, truncated: bool,
                           metadata: dict[str, Any] | None = None, agent_id: str,
                           timestamp_ns: int | None = None) -> None:
        """Accept one finished episode; `metadata` is stored as metadata_json."""
        self._check_accepting(run_id)
        msg = _record(
            trainer_pb2.RunEpisode, lambda: f"run {run_id!r}, agent {agent_id!r}, episode {episode_index}",
            run_id=run_id, episode_index=episode_index, total_reward=total_reward, steps=steps,
            terminated=terminated, truncated=truncated,
            metadata_json=_as_json_text(metadata, "metadata"),
            timestamp=_timestamp(timestamp_ns), agent_id=agent_id,
            worker_id=self._proxy.worker_id)
        await self._accept("episode", _EPISODE_TAG, run_id, agent_id, msg)

    async def emit_episodes(self, run_id: str, agent_id: str, episodes: Sequence[columns.EpisodeLike]) -> None:
        """Accept many finished episodes of one agent at once (never waits for the network).

        Each episode is an object with the attributes of `emit_episode`'s arguments (e.g.
        `agents.records.EpisodeRecord`; `metadata` a JSON-serialisable dict or JSON text).
        They travel as columns (`EpisodeColumns`), as `emit_steps` sends steps. Same errors
        as `emit_episode`.
        """
        await self._accept_blocks(run_id, agent_id, lambda: [
            columns.encode_episodes(agent_id, self._proxy.worker_id, episodes, _metadata_json)] if episodes else [])

    async def emit_message(self, run_id: str, agent_id: str, message_index: int, direction: str,
                           peer: str, kind: str, bytes: int, episode_index: int = 0,
                           timestamp_ns: int | None = None) -> None:
        """Accept one coordination message an agent sent or received (direction
        "sent"/"received"); identified by (run_id, agent_id, message_index)."""
        if direction not in ("sent", "received"):
            raise ValueError(f"direction must be 'sent' or 'received', got {direction!r}")
        self._check_accepting(run_id)
        msg = _record(
            trainer_pb2.CoordinationMessage, lambda: f"run {run_id!r}, agent {agent_id!r}, message {message_index}",
            run_id=run_id, agent_id=agent_id, message_index=message_index, direction=direction,
            peer=peer, kind=kind, bytes=bytes, episode_index=episode_index,
            timestamp=_timestamp(timestamp_ns), worker_id=self._proxy.worker_id)
        await self._accept("message", _MESSAGE_TAG, run_id, agent_id, msg)

    async def wait_until_allowed(self, agent_id: str | None = None, steps: int = 1, *,
                                 run_id: str | None = None) -> None:
        """Return once the daemon's control allows `agent_id` to take `steps` steps.

        Honours pause/resume, step credits (spent here once credit mode is on) and the
        max_rate_hz cap of the run (default: the session's run, else the only run seen).
        """
        link = self._control_link(run_id)
        if link is not None:
            await link.flow.wait_until_allowed(agent_id, steps)

    def try_acquire(self, agent_id: str | None = None, steps: int = 1, *,
                    run_id: str | None = None) -> bool:
        """`wait_until_allowed` without waiting: True when `agent_id` may take `steps` steps
        right now (credits are then spent, a rate slot taken); False when it would have to
        wait, and then nothing is spent (await `wait_until_allowed` instead). Lets a producer
        skip a coroutine per step while nothing holds it back."""
        link = self._control_link(run_id)
        return link is None or link.flow.try_acquire(agent_id, steps)

    def holds_nobody(self, run_id: str | None = None) -> bool:
        """True when the daemon's control holds no producer of the run back right now (see
        `RunFlow.holds_nobody`); True when the run has no control state yet."""
        link = self._control_link(run_id)
        return link is None or link.flow.holds_nobody()

    @property
    def paused(self) -> bool:
        """Whether the session's run is paused run-wide by the daemon's control."""
        link = self._control_link(None)
        return link is not None and link.flow.is_paused()

    def flow(self, run_id: str | None = None) -> RunFlow | None:
        """The control state of a run (default: the session's run), if the run is known."""
        return link.flow if (link := self._control_link(run_id)) else None

    @property
    def stats(self) -> ProxyStats:
        buffered = self._buffered
        if self._inflight_first is not None:
            buffered = self._accepted - self._inflight_first + 1
        return ProxyStats(self._accepted, self._delivered, self._spooled, self._replayed,
                          buffered, self._connected, self._control_open, self._refused)

    @property
    def refusals(self) -> list[RecordsRejectedError]:
        """Every refusal by the daemon so far, each naming its records and the file in the
        rejected folder that keeps them. A refusal never stops the session."""
        return list(self._refusals)

    @property
    def spool_folder(self) -> Path | None:
        """This session's own spool folder, if it spooled anything."""
        return self._spool.folder

    async def flush(self) -> None:
        """Return once every record accepted so far is delivered or durably spooled."""
        self._raise_if_fatal()
        if not self._open:
            raise SessionClosedError()
        goal = self._accepted
        self._flush_requested = True
        self._wake.set()
        while self._first_unsettled() <= goal:
            if self._sender_task is not None and self._sender_task.done():
                break
            settled = self._settled
            await settled.wait()
        self._raise_if_fatal()
        await self._spool.sync_async()

    async def finish_run(self, run_id: str | None = None, failure_reason: str = "", *,
                         cancelled: bool = False) -> bool:
        """Tell the daemon the run is over (FinishRun extension): TERM when `failure_reason`
        is empty, else FAULT with that reason; with `cancelled` (the producer was interrupted)
        TERM at once, its reason "cancelled: <failure_reason>". Flushes first, so the daemon has every record
        accepted so far before the run ends; while records wait in the spool (the daemon is or
        was away) the run is not finished and the answer is False.

        Returns True when the daemon took the call: it ends the run once every producer
        registered for it has finished (a failure ends it at once). A daemon that cannot be reached,
        refuses the call, or does not implement FinishRun (the reference daemon) is logged
        and gives False: ending a run is bookkeeping, never a reason to fail the producer.
        """
        run_id = run_id or self._run_id
        if not run_id:
            raise ValueError("finish_run needs a run_id (the session has no default run)")
        if not self._open:
            raise SessionClosedError()
        link = self._link_without_control(run_id)
        assert self._stub is not None
        request = trainer_pb2.FinishRunRequest(run_id=run_id, failure_reason=failure_reason,
                                               cancelled=cancelled)
        try:
            await self.flush()   # raises the session's fatal error, if telemetry already stopped
            if self._spool.has_pending():
                # The daemon is away (or was): a run must not end before it holds every record,
                # so the finish waits in the spool behind them and is replayed after them.
                request.worker_id = self._proxy.worker_id
                self._spool.append(trainer_pb2.TelemetryBatch(run_id=run_id, finish=request).SerializeToString())
                await self._spool.sync_async()
                log.warning("%s: records wait in the spool under %s for the daemon at %s; the run's "
                            "end waits behind them and is sent once they are delivered", link.describe(),
                            self._spool.target_dir, self._target)
                return False
            await self._ensure_registered(link)
            try:
                response = await self._stub.FinishRun(request, metadata=link.metadata,
                                                      timeout=self._proxy.connect_timeout_s)
            except grpc.aio.AioRpcError as err:
                if err.code() not in _AUTH_CODES:
                    raise
                # The daemon forgot our token (e.g. a new database): register again, once.
                await self._ensure_registered(link, stale_token=link.token)
                response = await self._stub.FinishRun(request, metadata=link.metadata,
                                                      timeout=self._proxy.connect_timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.info("%s: daemon %s has no FinishRun (reference daemon?); the run stays as "
                         "the daemon sees it", link.describe(), self._target)
            else:
                log.warning("%s: could not finish the run on daemon %s: %s: %s", link.describe(),
                            self._target, err.code().name, err.details())
            return False
        except (TelemetryError, _DaemonUnavailable, _Refused) as err:
            log.warning("%s: could not finish the run on daemon %s: %s", link.describe(),
                        self._target, err)
            return False
        status = trainer_pb2.RunStatus.Name(response.status)
        if response.status in (trainer_pb2.RUN_STATUS_TERM, trainer_pb2.RUN_STATUS_FAULT):
            log.info("%s: finished on daemon %s as %s%s", link.describe(), self._target, status,
                     f" ({failure_reason})" if failure_reason else "")
        else:   # other producers of the run are still at work; the last one ends it
            log.info("%s: this worker is done; the run stays %s on daemon %s until its other "
                     "producers finish", link.describe(), status, self._target)
        return True

    # -- accepting ---------------------------------------------------------------------
    def _check_accepting(self, run_id: str) -> None:
        self._raise_if_fatal()
        if not self._open:
            raise SessionClosedError()
        if not run_id:
            raise ValueError("run_id must be a non-empty string")

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    async def _accept(self, kind: str, tag: bytes, run_id: str, agent_id: str, msg: Any) -> None:
        if validate.exceeds_int64(msg):
            _refuse_out_of_range(kind, run_id, record_values(kind + "s", [msg]))
        data = msg.SerializeToString()
        limit = self._record_limit(run_id)
        if len(data) > limit:
            name, size = _largest_string_field(msg)
            raise MessageTooLargeError(kind, name, size, len(data), limit)
        link = self._producer_link(run_id, agent_id)
        self._append(run_id, _framed(tag, data), 1)
        if self._proxy.jsonl_stdout:
            sys.stdout.write(_record_json(kind, msg) + "\n")
        self._since_yield += 1
        await self._after_accept(link)

    def _append(self, run_id: str, framed: bytes, count: int) -> None:
        self._buffer.append((run_id, framed, count))
        self._buffer_bytes += len(framed)
        self._buffered += count
        self._accepted += count

    async def _after_accept(self, link: _RunLink) -> None:
        """Spill a full buffer; now and then let the sender run."""
        # Column blocks count as one message each: a block of thousands of steps weighs what it
        # weighs in bytes (~40 a step). Counted in records, a busy container's few seconds
        # before its first call was answered spilled to disk for nothing.
        if (len(self._buffer) >= self._proxy.buffer_max_records
                or self._buffer_bytes >= self._proxy.buffer_max_bytes):
            log.log(logging.DEBUG if self._overflow_logged else logging.WARNING,
                    "%s: telemetry buffer full (%d records); spilling it to the spool at %s "
                    "(replayed when the sender catches up)", link.describe(),
                    self._buffered, self._spool.target_dir)
            self._overflow_logged = True
            self._spill_buffer("buffer full")
        elif self._since_yield >= _YIELD_EVERY:
            # Let the loop run now and then: a producer that never awaits anything else would
            # otherwise starve the sender and the gRPC I/O it waits on. A full batch also
            # wakes the sender.
            self._since_yield = 0
            if self._buffered >= self._proxy.batch_max_records:
                self._wake.set()
            await asyncio.sleep(0)

    def _record_limit(self, run_id: str) -> int:
        """The largest serialized record that still fits one batch message."""
        return self._limit - len(run_id.encode()) - 2 * _FRAMING_SLACK

    def _first_unsettled(self) -> int:
        if self._inflight_first is not None:
            return self._inflight_first
        return self._accepted - self._buffered + 1

    def _notify_settled(self) -> None:
        self._settled.set()
        self._settled = asyncio.Event()

    # -- runs, registration and control ------------------------------------------------
    def _link_without_control(self, run_id: str) -> _RunLink:
        link = self._links.get(run_id)
        if link is None:
            link = self._links[run_id] = _RunLink(run_id, RunFlow(run_id))
        return link

    def _link(self, run_id: str) -> _RunLink:
        link = self._link_without_control(run_id)
        if link.control_task is None and not self._closing:
            link.control_task = asyncio.create_task(self._control_loop(link),
                                                    name=f"telemetry-control-{run_id}")
        return link

    def _control_link(self, run_id: str | None) -> _RunLink | None:
        if run_id is not None:
            return self._links.get(run_id)
        if self._run_id is not None:
            return self._links.get(self._run_id)
        return next(iter(self._links.values()), None) if len(self._links) == 1 else None

    async def _ensure_registered(self, link: _RunLink, *, stale_token: str | None = None) -> None:
        """Register the worker for the run unless already done (or only `stale_token` held)."""
        async with link.lock:
            if link.token is not None and link.token != stale_token:
                return
            link.token = None
            assert self._stub is not None
            request = trainer_pb2.RegisterWorkerRequest(
                run_id=link.run_id, worker_id=self._proxy.worker_id,
                worker_kind=self._proxy.worker_kind, proto_version=PROTO_VERSION,
                schema_id=SCHEMA_ID, schema_version=SCHEMA_VERSION, supports_pause=True,
                supports_checkpoint=False,
                # Only the session's own run is resumed, never a run met in a spool replay.
                resume=self._proxy.resume and link.run_id == self._run_id,
                run_secret=self._proxy.run_secret)
            timeout = self._proxy.connect_timeout_s
            try:
                try:
                    response = await self._stub.RegisterWorker(request, timeout=timeout)
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    log.info("%s: daemon %s wants the run submitted first; submitting it",
                             link.describe(), self._target)
                    await self._submit_run(link.run_id)
                    response = await self._stub.RegisterWorker(request, timeout=timeout)
            except grpc.aio.AioRpcError as err:
                raise await self._handshake_failure(err, link.run_id, "RegisterWorker") from None
            if response.accepted_version and response.accepted_version != PROTO_VERSION:
                raise ProtocolVersionError(self._target, PROTO_VERSION, response.accepted_version)
            if response.max_message_bytes:
                self._limit = min(self._proxy.max_message_bytes, response.max_message_bytes)
            self._columns_ok = response.accepts_columns
            self._met_store(response.store_id)
            if request.resume:
                self.next_episode_index = dict(response.next_episode_index)
            link.token = response.session_token
            log.debug("%s: registered worker %s with daemon %s", link.describe(),
                      self._proxy.worker_id, self._target)

    async def _submit_run(self, run_id: str) -> None:
        assert self._stub is not None
        config = json.dumps(self._proxy.run_config if self._proxy.run_config is not None else {})
        try:
            await self._stub.SubmitRun(trainer_pb2.SubmitRunRequest(run_id=run_id,
                                                                    config_json=config),
                                       timeout=self._proxy.connect_timeout_s)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:   # submitted meanwhile: fine
                raise

    async def _control_requests(self, run_id: str) -> Any:
        yield trainer_pb2.ControlEvent(run_id=run_id, subscribe=True)
        await self._closed_event.wait()

    async def _control_loop(self, link: _RunLink) -> None:
        """Keep one ControlStream subscription for the run open, reconnecting as needed."""
        backoff = Backoff(maximum_s=self._proxy.reconnect_max_backoff_s)
        assert self._stub is not None
        refused_token: str | None = None
        while not self._closing:
            try:
                await self._ensure_registered(link, stale_token=refused_token)
                refused_token = None
                token = link.token
                call = self._stub.ControlStream(self._control_requests(link.run_id),
                                                metadata=link.metadata)
                generation = link.flow.begin_resync()
                asyncio.get_running_loop().call_later(_RESYNC_GRACE_S, link.flow.end_resync,
                                                      generation)
                self._control_open += 1
                try:
                    async for event in call:
                        link.flow.apply(event)
                        backoff.reset()
                finally:
                    self._control_open -= 1
                log.info("%s: control stream ended by daemon %s; reconnecting",
                         link.describe(), self._target)
            except grpc.aio.AioRpcError as err:
                if err.code() in _AUTH_CODES:
                    refused_token = token   # register again before the next attempt
                elif err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    log.warning("%s: daemon %s has no ControlStream; pause, credits and rate "
                                "caps will not arrive", link.describe(), self._target)
                    return
                else:
                    log.info("%s: control stream to %s lost (%s); reconnecting",
                             link.describe(), self._target, err.code().name)
            except (_DaemonUnavailable, _Refused):
                pass   # the sender reports and retries delivery; here we only reconnect
            except TelemetryError as err:
                self._fail(err)
                return
            await asyncio.sleep(backoff.next_delay())

    async def _handshake_failure(self, err: grpc.aio.AioRpcError, run_id: str, method: str) -> Exception:
        """`_translate` for a handshake call, which also tells a TLS daemon closing this
        plaintext connection (TlsRequiredError) from a daemon that is away."""
        if (err.code() == grpc.StatusCode.UNAVAILABLE and _CLOSED_MARKER in (err.details() or "")
                and not self._proxy.tls and await _speaks_tls(self._target, self._proxy.connect_timeout_s)):
            return TlsRequiredError(self._target)
        return self._translate(err, run_id, method)

    def _translate(self, err: grpc.aio.AioRpcError, run_id: str, method: str) -> Exception:
        """Map a failed call to: retry later, refused for good, or a user-facing error."""
        code = err.code()
        detail = err.details() or code.name
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return NotADaemonError(self._target, f"it answers gRPC but has no "
                                   f"gymgui.trainer.TrainerService/{method}: {detail}")
        if code == grpc.StatusCode.UNAVAILABLE and any(m in detail for m in _NOT_GRPC_MARKERS):
            return NotADaemonError(self._target, f"it does not speak gRPC: {detail}")
        if code == grpc.StatusCode.UNAVAILABLE and _TLS_FAILURE_MARKER in detail:
            return TlsHandshakeError(self._target, detail)
        if code in _AUTH_CODES:
            return TokenRefusedError(self._target, run_id, f"{code.name}: {detail}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in detail:
            return _Refused(f"{code.name}: {detail}")
        if code in _RETRYABLE:
            return _DaemonUnavailable(f"{code.name}: {detail}")
        return _Refused(f"{code.name}: {detail}")

    def _fail(self, err: TelemetryError) -> None:
        if self._fatal is None:
            log.error("telemetry to %s stopped: %s", self._target, err)
            self._fatal = err
        self._wake.set()
        self._notify_settled()

    # -- sending -----------------------------------------------------------------------
    async def _sender(self) -> None:
        """Deliver the buffer and the spool; spool while the daemon is away."""
        loop = asyncio.get_running_loop()
        next_sync = loop.time() + self._proxy.spool_sync_interval_s
        next_flush = loop.time() + self._proxy.flush_interval_s
        while True:
            # A timer instead of wait_for: a producer's single `sleep(0)` after waking us
            # is then enough for this task to run. The interval counts from the start of the
            # last round, not its end: a round waits for the daemon's commit, and that wait
            # must not stretch the interval (nor its latency).
            timer = loop.call_at(next_flush, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()
            next_flush = loop.time() + self._proxy.flush_interval_s
            try:
                done, next_sync = await self._sender_round(loop, next_sync)
            except Exception as err:   # a bug or a failing disk: stop loudly, never silently
                log.exception("telemetry sender for daemon %s failed", self._target)
                self._fail(TelemetryError(f"the telemetry sender failed: {err!r}"))
                return
            if done:
                return

    async def _sender_round(self, loop: asyncio.AbstractEventLoop,
                            next_sync: float) -> tuple[bool, float]:
        """One wake-up of the sender; returns (finished, when the spool is next synced)."""
        self._wake.clear()
        forced = self._flush_requested or self._closing
        self._flush_requested = False
        sync_due = loop.time() >= next_sync
        if self._fatal is not None:
            self._spill_buffer("telemetry stopped")
        elif self._connected or loop.time() >= self._retry_at or self._closing:
            await self._pump(forced)
        else:   # daemon down: every round, so an accepted record survives the process's death
            self._spill_buffer("daemon unavailable")
        if sync_due:
            next_sync = loop.time() + self._proxy.spool_sync_interval_s
            await self._spool.sync_async()
            if self._proxy.jsonl_stdout:
                sys.stdout.flush()
        if self._connected and loop.time() >= self._next_heartbeat:
            self._next_heartbeat = loop.time() + self._proxy.heartbeat_interval_s
            await self._heartbeat()
        finished = self._closing and (self._fatal is not None or not self._connected
                                      or (not self._buffer and not self._spool.has_pending()))
        return finished, next_sync

    async def _pump(self, forced: bool) -> None:
        """One delivery round: the spool first (older), then the buffer."""
        was_connected = self._connected
        try:
            if not was_connected:
                self._spool.adopt_orphans()
            if self._spool.has_pending():
                await self._replay()
            first = True
            while self._buffer and self._fatal is None and (
                    first or forced or self._buffered >= self._proxy.batch_max_records):
                first = False
                await self._deliver_buffer()
                if self._spool.has_pending():
                    await self._replay()
            self._mark_connected(was_connected)
        except _DaemonUnavailable as failure:
            self._spill_buffer("daemon unavailable")
            self._note_down(failure, None)
        except TelemetryError as err:
            self._spill_buffer("telemetry stopped")
            self._fail(err)

    async def _heartbeat(self) -> None:
        """Tell the daemon this worker is alive for each run it registered for."""
        assert self._stub is not None
        for link in list(self._links.values()):
            if link.token is None:
                continue
            try:
                await self._stub.Heartbeat(trainer_pb2.HeartbeatRequest(run_id=link.run_id),
                                           metadata=link.metadata,
                                           timeout=self._proxy.connect_timeout_s)
            except grpc.aio.AioRpcError as err:
                log.debug("%s: heartbeat to %s failed: %s", link.describe(), self._target,
                          err.code().name)

    def _mark_connected(self, was_connected: bool) -> None:
        if not was_connected:
            log.info("daemon %s reachable again (worker %s, %s)", self._target,
                     self._proxy.worker_id, self._describe_runs())
        self._connected = True
        self._backoff.reset()

    def _note_down(self, failure: Exception, run_id: str | None) -> None:
        delay = self._backoff.next_delay()
        self._retry_at = asyncio.get_running_loop().time() + delay
        about = self._links[run_id].describe() if run_id in self._links else self._describe_runs()
        # Warn when the daemon goes away; the retries that follow are only worth DEBUG.
        level = logging.WARNING if self._connected or not self._down_logged else logging.DEBUG
        self._down_logged = True
        hint = ("; if the daemon uses TLS, pass tls=True"
                if not self._proxy.tls and "Socket closed" in str(failure) else "")
        log.log(level, "daemon %s unavailable for worker %s, %s (%s%s); records go to the spool "
                "under %s, retrying in %.2fs", self._target, self._proxy.worker_id, about,
                failure, hint, self._spool.target_dir, delay)
        self._connected = False

    def _describe_runs(self) -> str:
        return "; ".join(link.describe() for link in self._links.values()) or "no runs yet"

    def _take(self, messages: int | None = None, max_bytes: int = 0) -> list[_Entry]:
        """Remove the oldest buffered entries: all (None), or up to `messages` of them and
        about `max_bytes` (at least one). An entry is one wire message: a record, or a column
        block of many."""
        buffer = self._buffer
        if messages is None or (messages >= len(buffer) and self._buffer_bytes <= max_bytes):
            taken = list(buffer)
            buffer.clear()
        else:
            taken, size = [], 0
            while buffer and len(taken) < messages and (not taken or size + len(buffer[0][1]) <= max_bytes):
                entry = buffer.popleft()
                taken.append(entry)
                size += len(entry[1])
        self._buffer_bytes -= sum(len(framed) for _, framed, _ in taken)
        self._buffered -= sum(count for _, _, count in taken)
        return taken

    def _encode(self, records: Iterable[_Entry]) -> list[tuple[str, list[bytes], int]]:
        """Group records by run (keeping order) and pack each run's into batches below the
        message size limit, each holding at most `batch_max_records` messages. A column block
        counts as one: its steps cost the daemon a fraction of as many messages, and every
        extra message of a publish call costs the sender a turn of the event loop, which a busy
        agent holds for a whole time slice.

        Returns (run_id, [serialized TelemetryBatch, ...], record count) per run.
        """
        by_run: dict[str, list[tuple[bytes, int]]] = {}
        for run_id, framed, count in records:
            by_run.setdefault(run_id, []).append((framed, count))
        out = []
        for run_id, entries in by_run.items():
            head = _framed(_RUN_ID_TAG, run_id.encode())
            payloads: list[bytes] = []
            current: list[bytes] = [head]
            size, held = len(head), 0
            for framed, count in entries:
                if len(current) > 1 and (held >= self._proxy.batch_max_records
                                         or size + len(framed) > self._limit):
                    payloads.append(b"".join(current))
                    current, size, held = [head], len(head), 0
                current.append(framed)
                size += len(framed)
                held += 1
            payloads.append(b"".join(current))
            out.append((run_id, payloads, sum(count for _, count in entries)))
        return out

    def _spill_buffer(self, reason: str) -> None:
        """Move the whole buffer to the spool (durable on the next sync)."""
        if not self._buffer:
            return
        spilled = self._buffered
        for _, payloads, count in self._encode(self._take()):
            for payload in payloads:
                self._spool.append(payload)
            self._spooled += count
        log.debug("spooled %d records (%s)", spilled, reason)
        self._notify_settled()

    async def _deliver_buffer(self) -> None:
        """Send up to a few batches from the buffer; spool what could not be sent."""
        self._inflight_first = self._accepted - self._buffered + 1
        groups = self._encode(self._take(self._proxy.batch_max_records * _CALL_MAX_BATCHES, _CALL_MAX_BYTES))
        try:
            while groups:
                run_id, payloads, count = groups[0]
                try:
                    await self._send(run_id, payloads)
                    self._delivered += count
                except _Refused as refusal:
                    self._quarantine(run_id, payloads, str(refusal), count)
                groups.pop(0)
        finally:
            # Unknown outcome or cancelled: keep them on disk, the daemon dedups the re-send.
            for _, payloads, count in groups:
                for payload in payloads:
                    self._spool.append(payload)
                self._spooled += count
            self._inflight_first = None
            self._notify_settled()

    def _met_store(self, store_id: str) -> None:
        """The daemon at the target keeps store `store_id`: spool for it, and never replay into
        it what was spooled for another store (said once per folder, with what to do)."""
        if not store_id:
            return
        self._store_id = store_id
        self._spool.note_store(store_id)
        for folder, meant in self._spool.set_aside_foreign(store_id):
            log.warning("spool %s holds records meant for the daemon whose store is %s, but the daemon at %s "
                        "keeps store %s: they are not replayed into it. Start the daemon with the store they "
                        "were meant for (its --db) at that address, and a later session delivers them",
                        folder, meant, self._target, store_id)

    async def _replay(self) -> None:
        """Send spooled segments oldest first, deleting each once fully acknowledged; first
        learn which store the daemon keeps, so nothing meant for another one is sent."""
        if not self._store_id:
            assert self._stub is not None
            try:
                health = await self._stub.GetHealth(trainer_pb2.HealthCheckRequest(),
                                                    timeout=self._proxy.connect_timeout_s)
            except grpc.aio.AioRpcError as err:
                raise self._translate(err, "", "GetHealth") from None
            self._met_store(health.store_id)
        for segment in self._spool.replay_queue():
            pending: list[bytes] = []
            pending_run = ""
            pending_count = 0
            for frame in read_frames(segment):
                batch = trainer_pb2.TelemetryBatch.FromString(frame)
                if batch.HasField("finish"):
                    if pending:
                        await self._send_replayed(pending_run, pending, pending_count)
                        pending, pending_count = [], 0
                    await self._replay_finish(batch.finish)
                    continue
                frames = self._resplit(batch) if len(frame) > self._limit else [frame]
                if pending and (batch.run_id != pending_run
                                or len(pending) + len(frames) > _CALL_MAX_BATCHES):
                    await self._send_replayed(pending_run, pending, pending_count)
                    pending, pending_count = [], 0
                pending.extend(frames)
                pending_run = batch.run_id
                pending_count += _batch_record_count(batch)
            if pending:
                await self._send_replayed(pending_run, pending, pending_count)
            self._spool.delivered(segment)

    async def _replay_finish(self, request: trainer_pb2.FinishRunRequest) -> None:
        """Send a spooled FinishRun, now that the records spooled before it are delivered. An
        unreachable daemon keeps it in the spool; a refusal is logged and the replay goes on."""
        link = self._link_without_control(request.run_id)
        await self._ensure_registered(link)
        try:
            response = await self._stub.FinishRun(request, metadata=link.metadata,
                                                  timeout=self._proxy.connect_timeout_s)
        except grpc.aio.AioRpcError as err:
            failure = self._translate(err, request.run_id, "FinishRun")
            if isinstance(failure, _DaemonUnavailable):
                raise failure from None
            log.warning("%s: the daemon at %s did not take the run's spooled end: %s", link.describe(),
                        self._target, failure)
            return
        log.info("%s: the run's spooled end reached the daemon at %s: %s", link.describe(), self._target,
                 trainer_pb2.RunStatus.Name(response.status))

    async def _send_replayed(self, run_id: str, payloads: list[bytes], count: int) -> None:
        self._link(run_id)
        try:
            await self._send(run_id, payloads)
        except _Refused as refusal:
            self._quarantine(run_id, payloads, str(refusal), count)
            return
        self._delivered += count
        self._replayed += count

    def _resplit(self, batch: trainer_pb2.TelemetryBatch, *, with_columns: bool = True) -> list[bytes]:
        """Re-pack a batch below the current message limit (a spooled batch may predate a
        lower one); without columns, column blocks become RunStep / RunEpisode messages."""
        run_id = batch.run_id
        entries = [(run_id, _framed(tag, item.SerializeToString()), 1)
                   for tag, items in ((_STEP_TAG, batch.steps), (_EPISODE_TAG, batch.episodes),
                                      (_MESSAGE_TAG, batch.messages))
                   for item in items]
        blocks = _blocks(batch)
        while blocks:
            block = blocks.pop(0)
            tag, _, row_tag = _BLOCK_KINDS[type(block)]
            if not with_columns:
                entries.extend((run_id, _framed(row_tag, record.SerializeToString()), 1)
                               for record in columns.expand(run_id, block))
                continue
            data = block.SerializeToString()
            if len(data) > self._record_limit(run_id) and columns.count(block) > 1:
                blocks[:0] = columns.split(block)
                continue
            entries.append((run_id, _framed(tag, data), columns.count(block)))
        return [p for _, payloads, _ in self._encode(entries) for p in payloads]

    def _for_daemon(self, payloads: list[bytes]) -> list[bytes]:
        """The payloads as this daemon reads them: column blocks expanded to RunStep and
        RunEpisode messages for a daemon that did not say it reads columns (it would ignore
        them)."""
        if self._columns_ok:
            return payloads
        out = []
        for payload in payloads:
            batch = trainer_pb2.TelemetryBatch.FromString(payload)
            out.extend(self._resplit(batch, with_columns=False) if _blocks(batch) else [payload])
        return out

    def _quarantine(self, run_id: str, payloads: list[bytes], detail: str, count: int) -> None:
        """Keep records the daemon refused in the rejected folder and go on: a refusal never
        blocks the records after it."""
        path = None
        for payload in payloads:
            path = self._spool.quarantine(payload, f"run {run_id}: {detail}")
        self._refused += count
        self._refusals.append(RecordsRejectedError(self._target, run_id, detail, str(path)))

    async def _send(self, run_id: str, payloads: list[bytes]) -> None:
        """Publish serialized batches of one run; re-register once on a refused token."""
        link = self._links.get(run_id) or self._link(run_id)
        await self._ensure_registered(link)
        reregistered = False
        while True:
            token = link.token
            try:
                if self._batch_rpc:
                    response = await self._publish_batch(
                        iter(self._for_daemon(payloads)), metadata=link.metadata,
                        timeout=self._proxy.rpc_timeout_s)
                else:
                    response = await self._send_per_record(link, payloads)
            except grpc.aio.AioRpcError as err:
                code = err.code()
                if code == grpc.StatusCode.UNIMPLEMENTED and self._batch_rpc:
                    log.warning("daemon %s has no PublishTelemetryBatch; falling back to the "
                                "per-record MOSAIC/1.0 publish streams (slower)", self._target)
                    self._batch_rpc = False
                    continue
                if code in _AUTH_CODES | {grpc.StatusCode.NOT_FOUND} and not reregistered:
                    reregistered = True
                    log.info("%s: daemon %s refused the session token (%s); registering again",
                             link.describe(), self._target, code.name)
                    await self._ensure_registered(link, stale_token=token)
                    continue
                raise self._translate(err, run_id, "PublishTelemetryBatch") from None
            if response.dropped:
                log.debug("%s: daemon reports %d duplicate record(s) already stored",
                          link.describe(), response.dropped)
            if response.refused_count:
                self._keep_refused(run_id, payloads, response)
            return

    def _keep_refused(self, run_id: str, payloads: list[bytes],
                      response: trainer_pb2.PublishTelemetryResponse) -> None:
        """The daemon stored a call's records but some: keep those in the rejected folder,
        with the daemon's reason for each."""
        reasons = [r.reason for r in response.refused]
        unlisted = response.refused_count - len(reasons)
        if unlisted:
            reasons.append(f"and {unlisted} more refused records the daemon did not list")
        refused = _refused_batch(run_id, payloads, response.refused)
        detail = f"{response.refused_count} record(s) refused: " + "; ".join(reasons)
        self._quarantine(run_id, [refused.SerializeToString()], detail, response.refused_count)

    async def _send_per_record(self, link: _RunLink,
                               payloads: list[bytes]) -> trainer_pb2.PublishTelemetryResponse:
        """The reference daemon's path: one RunStep / RunEpisode per wire message."""
        batches = [trainer_pb2.TelemetryBatch.FromString(p) for p in payloads]
        steps = [s for b in batches for s in b.steps]
        steps += [s for b in batches for block in b.step_columns for s in columns.expand(link.run_id, block)]
        episodes = [e for b in batches for e in b.episodes]
        episodes += [e for b in batches for block in b.episode_columns
                     for e in columns.expand(link.run_id, block)]
        messages = [m for b in batches for m in b.messages]
        if messages:
            unsendable = trainer_pb2.TelemetryBatch(run_id=link.run_id, messages=messages)
            self._spool.quarantine(unsendable.SerializeToString(),
                                   "the daemon has no PublishTelemetryBatch, the only RPC that "
                                   "carries coordination messages")
        total = trainer_pb2.PublishTelemetryResponse()
        for method, items in ((self._publish_steps, steps), (self._publish_episodes, episodes)):
            if items:
                response = await method(iter([i.SerializeToString() for i in items]),
                                        metadata=link.metadata,
                                        timeout=self._proxy.rpc_timeout_s)
                total.accepted += response.accepted
                total.dropped += response.dropped
                total.refused.extend(response.refused)
                total.refused_count += response.refused_count
        return total
