"""The telemetry daemon: every MOSAIC/1.0 RPC (plus our extensions) over grpc.aio.

``serve()`` starts it in the running event loop and returns a ``Daemon``;
``python -m telemetry.daemon`` runs it until SIGINT/SIGTERM, then stops accepting, commits
everything it accepted and exits 0.

Publishing: every publish stream must carry ``authorization: Bearer <token>`` (from
RegisterWorker) valid for the run its records name. Records go to the store's single
writer; the response's ``accepted`` counts records newly stored and ``dropped`` counts
records not stored because their natural key was already there (retries, spool replays,
repeats within the stream). A record holding a value the store cannot keep (an integer of
2**63 or more) is refused on its own: the response's ``refused`` (extension) names it and
the field, its neighbours are stored. NaN and infinite rewards are stored as they are.
INTERNAL means a fault of the daemon itself (its store), never bad input. A stream refused part-way (run_id changed: INVALID_ARGUMENT)
keeps what it sent before the refusal (committed before the refusal is sent). The response
is sent only after every record of the stream is committed.

Reading: StreamRunSteps/Episodes/Messages replay a run from ``since_seq`` out of the store,
then continue live (``telemetry.hub``); ``agent_id`` filters. StreamRunStepBatches
(extension) does what StreamRunSteps does with many steps per message. WatchRuns does the
same for run changes: every change after ``since_seq`` (a global, increasing seq), then live.
Readers need no token.

Finishing: FinishRun (extension) needs a token for the run from a producer (not an
"operator"). It hands every open publish stream's buffered records of the run to the writer
first; the writer commits in submission order, so the run's TERM/FAULT is committed (and
announced) only after everything already published for it.

Runs: see ``telemetry.runs`` for the state machine. RegisterWorker creates unknown runs
(except for worker_kind "operator", which may only join existing runs, e.g. to send control
events) and returns a new session token for that run (see ``telemetry.auth``).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import ssl
import sys
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from telemetry import columns
from telemetry.auth import PROTO_VERSION, Session, SessionTokens, bearer_token
from telemetry.dashboard import DEFAULT_HOST as DASHBOARD_HOST
from telemetry.dashboard import DEFAULT_PORT as DASHBOARD_PORT
from telemetry.dashboard import DashboardServer, DashboardStartError, start_dashboard
from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc
from telemetry.hub import (
    DEFAULT_QUEUE_BYTES,
    DEFAULT_TOTAL_QUEUE_BYTES,
    RUNS_TOPIC,
    LiveHub,
    episodes_topic,
    messages_topic,
    steps_topic,
)
from telemetry.readers import DEFAULT_MAX_READERS, ReaderBudget, TooManyReaders
from telemetry.runs import (
    ControlOutbox,
    ControlRefused,
    ControlRelay,
    InvalidTransition,
    RunClosed,
    RunConflict,
    RunProtected,
    RunRegistry,
    RunState,
    RunStatus,
    UnknownRun,
    describe_control,
)
from telemetry.store import (
    EpisodeRow,
    IngestResult,
    InvalidRecords,
    MessageRow,
    RunRow,
    StepRow,
    StoreError,
    StoreWriter,
    TelemetryStore,
)
from telemetry.undecodable import RefuseUndecodable
from telemetry.validate import Refusal

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:50055"
DEFAULT_DB = "telemetry.db"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
OPERATOR_KIND = "operator"
#: Where the daemon and the telemetry commands read the daemon-wide operator token.
OPERATOR_TOKEN_ENV = "MOSAIC_OPERATOR_TOKEN"
REPLAY_PAGE = 2000
#: What the daemon may send beyond its largest inbound message: a stored record goes back out
#: with its seq_id and run_id filled in, so a record that only just fitted coming in fits going out.
SEND_HEADROOM_BYTES = 1024 * 1024
# StreamRunStepBatches: bounds of one message. Well under gRPC's default 4 MiB receive limit,
# which is what viewers have unless they raise it (a single larger step goes alone).
STEP_BATCH_RECORDS = 2000
STEP_BATCH_BYTES = 1024 * 1024
# On SIGINT/SIGTERM, publish streams in flight get this long to finish (their records are
# committed either way); viewers and control streams end at once.
SHUTDOWN_GRACE_S = 5.0
MAX_RUN_ID_LENGTH = 256
# A publish response lists at most this many refused records (it counts all of them).
MAX_REFUSED_LISTED = 1000


class DaemonStartError(Exception):
    """The daemon cannot start (address unusable, database unusable, TLS files unreadable)."""


# ---------------------------------------------------------------------------------------
# Stored rows -> wire messages
# ---------------------------------------------------------------------------------------

def _timestamp(ns: int) -> Timestamp | None:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000) if ns else None


def step_message(row: StepRow) -> pb.RunStep:
    """A stored step as the RunStep the producer sent, with its seq_id."""
    return pb.RunStep(
        run_id=row.run_id, episode_index=row.episode_index, step_index=row.step_index,
        action_json=row.action_json, observation_json=row.observation_json, reward=row.reward,
        terminated=row.terminated, truncated=row.truncated, timestamp=_timestamp(row.timestamp_ns),
        policy_label=row.policy_label, backend=row.backend, seq_id=row.seq_id, agent_id=row.agent_id,
        render_hint_json=row.render_hint_json, frame_ref=row.frame_ref, payload_version=row.payload_version,
        render_payload_json=row.render_payload_json, episode_seed=row.episode_seed, worker_id=row.worker_id)


def step_batches(run_id: str, steps: Sequence[pb.RunStep], max_bytes: int) -> list[pb.TelemetryBatch]:
    """``steps`` (non-empty, in order) as TelemetryBatches of at most ``max_bytes`` each,
    halving until they fit; a single step larger than that goes alone."""
    batch = pb.TelemetryBatch(run_id=run_id, steps=steps)
    if len(steps) == 1 or batch.ByteSize() <= max_bytes:
        return [batch]
    half = len(steps) // 2
    return step_batches(run_id, steps[:half], max_bytes) + step_batches(run_id, steps[half:], max_bytes)


def episode_message(row: EpisodeRow) -> pb.RunEpisode:
    """A stored episode as a RunEpisode with its seq_id."""
    return pb.RunEpisode(
        run_id=row.run_id, episode_index=row.episode_index, total_reward=row.total_reward, steps=row.steps,
        terminated=row.terminated, truncated=row.truncated, metadata_json=row.metadata_json,
        timestamp=_timestamp(row.timestamp_ns), seq_id=row.seq_id, agent_id=row.agent_id,
        worker_id=row.worker_id)


def coordination_message(row: MessageRow) -> pb.CoordinationMessage:
    """A stored coordination message with its seq_id."""
    return pb.CoordinationMessage(
        run_id=row.run_id, agent_id=row.agent_id, message_index=row.message_index, direction=row.direction,
        peer=row.peer, kind=row.kind, bytes=row.bytes, episode_index=row.episode_index,
        timestamp=_timestamp(row.timestamp_ns), seq_id=row.seq_id, worker_id=row.worker_id)


def run_record(run: RunRow | RunState) -> pb.RunRecord:
    """A run (stored row or live state) as a RunRecord."""
    control = run.control() if isinstance(run, RunState) else json.loads(run.control_json or "{}")
    record = pb.RunRecord(run_id=run.run_id, status=int(run.status), digest=run.digest, seq_id=run.seq_id,
                          created_at=_timestamp(run.created_at_ns), updated_at=_timestamp(run.updated_at_ns),
                          last_heartbeat=_timestamp(run.last_heartbeat_ns),
                          control_hold=describe_control(int(run.status), control))
    if run.failure_reason:
        record.failure_reason = run.failure_reason
    return record


# ---------------------------------------------------------------------------------------
# One publish stream
# ---------------------------------------------------------------------------------------

class _PublishStream:
    """Checks, buffers and counts the records of one publish stream.

    The per-record RPCs (one RunStep per message) are gathered into chunks of up to
    ``FLUSH_RECORDS`` records, flushed at the latest ``FLUSH_DELAY_S`` after the first
    record of the chunk so that live viewers see them promptly even on a stream that stays
    open. Batches from PublishTelemetryBatch go to the writer as they are. Several chunks
    may be in flight at once; the writer's bound is the backpressure.
    """
    FLUSH_RECORDS = 512
    FLUSH_DELAY_S = 0.005

    def __init__(self, daemon: "Daemon", session: Session, context: grpc.aio.ServicerContext) -> None:
        self._daemon = daemon
        self._session = session
        self._context = context
        self.run: RunState | None = None
        self._pending: dict[str, list] = {"steps": [], "episodes": [], "messages": []}
        self._pending_count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: deque[asyncio.Future] = deque()
        self.accepted = 0
        self.dropped = 0
        self.refused: list[pb.RefusedRecord] = []
        self.refused_count = 0
        self._closed = False

    async def check_run(self, run_id: str) -> None:
        """The records of a stream must all name the run the session token is for."""
        run = self.run
        if run is not None and run_id == run.run_id:
            self._daemon.registry.publish_seen(run)
            return
        if not run_id:
            await self._settle()
            await self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, "run_id is required on every message")
        if run is None:
            if run_id != self._session.run_id:
                log.warning("run %s: refused a publish stream holding a token of run %s",
                            run_id, self._session.run_id)
                await self._context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"the session token is not valid for run '{run_id}': register a worker for that run")
            self.run = self._daemon.registry.require(run_id)
            self._daemon.registry.producer_stream_opened(self.run)
            self._daemon.open_publish_streams.add(self)
            self._daemon.registry.publish_seen(self.run)
            return
        await self._settle()
        await self._context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"run_id changed mid-stream from '{run.run_id}' to '{run_id}': open one stream per run")

    async def refuse_undecodable(self, position: int, error: DecodeError) -> None:
        """A message of the stream is not a valid protobuf message (corrupt bytes, a string
        that is not UTF-8): nothing in it can be trusted, so the stream ends with
        INVALID_ARGUMENT after committing what came before it."""
        await self._settle()
        run = f"run {self.run.run_id!r}" if self.run else f"a stream of run {self._session.run_id!r}"
        log.warning("worker %s: %s: message %d cannot be decoded (%s)", self._session.worker_id, run, position, error)
        await self._context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{run}: message {position} of the stream cannot be decoded ({error}); strings must be "
            "UTF-8 and the bytes a serialized message of the RPC's type. The messages before it are stored.")

    async def add_record(self, kind: str, record: Any) -> None:
        """Buffer one record of the per-record RPCs."""
        await self._daemon.writer.wait_for_room()
        self._pending[kind].append(record)
        self._pending_count += 1
        if self._pending_count >= self.FLUSH_RECORDS:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.FLUSH_DELAY_S, self._flush)
        await self._fold_done()

    async def add_batch(self, batch: pb.TelemetryBatch) -> None:
        """Hand one TelemetryBatch to the writer."""
        await self._daemon.writer.wait_for_room()
        self._submit(batch.steps, batch.episodes, batch.messages, batch.step_columns, batch.episode_columns)
        await self._fold_done()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending_count:
            pending = self._pending
            self._pending = {"steps": [], "episodes": [], "messages": []}
            self._pending_count = 0
            self._submit(pending["steps"], pending["episodes"], pending["messages"])

    def _submit(self, steps: Sequence[Any], episodes: Sequence[Any], messages: Sequence[Any],
                step_columns: Sequence[Any] = (), episode_columns: Sequence[Any] = ()) -> None:
        future = self._daemon.writer.submit_ingest(self.run.run_id, steps, episodes, messages,
                                                   step_columns=step_columns,
                                                   episode_columns=episode_columns,
                                                   on_commit=self._daemon.publish_live)
        self._inflight.append(future)

    def submit_buffered(self) -> list[asyncio.Future]:
        """Hand what the stream buffered to the writer now; the futures of everything it
        submitted that is not committed yet."""
        self._flush()
        return [f for f in self._inflight if not f.done()]

    async def _settle(self) -> None:
        """Before refusing the stream: commit what it sent so far, so the refusal means
        "everything before this message is stored"."""
        self._flush()
        if self._inflight:
            await asyncio.wait(list(self._inflight))

    async def _fold_done(self) -> None:
        while self._inflight and self._inflight[0].done():
            await self._fold(self._inflight.popleft())

    async def _fold(self, future: asyncio.Future) -> None:
        try:
            result: IngestResult = future.result()
        except InvalidRecords as exc:
            await self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StoreError as exc:
            log.error("run %s: %s", self.run.run_id, exc)
            await self._context.abort(grpc.StatusCode.INTERNAL, str(exc))
        self.accepted += result.accepted
        self.dropped += result.dropped
        if result.refused:
            self._note_refused(result.refused)

    def _note_refused(self, refusals: Sequence[Refusal]) -> None:
        """Count records the store could not hold, keep the first few for the response, and
        log the first of each job so the daemon's log names the run, agent and record."""
        self.refused_count += len(refusals)
        room = MAX_REFUSED_LISTED - len(self.refused)
        self.refused.extend(pb.RefusedRecord(kind=r.kind, agent_id=r.agent_id, episode_index=r.episode_index,
                                             index=r.index, field=r.field, reason=r.reason)
                            for r in refusals[:max(room, 0)])
        more = f" (and {len(refusals) - 1} more in this batch)" if len(refusals) > 1 else ""
        log.warning("worker %s: refused %s%s", self._session.worker_id, refusals[0].reason, more)

    async def finish(self) -> pb.PublishTelemetryResponse:
        """Commit everything still buffered, wait for all of it, and answer with the counts."""
        if self.run is not None:
            self._flush()
            while self._inflight:
                await asyncio.wait([self._inflight[0]])
                await self._fold(self._inflight.popleft())
            log.debug("run %s: publish stream of %s done, accepted %d dropped %d",
                      self.run.run_id, self._session.worker_id, self.accepted, self.dropped)
        return pb.PublishTelemetryResponse(accepted=self.accepted, dropped=self.dropped,
                                           refused=self.refused, refused_count=self.refused_count)

    def close(self) -> None:
        """The stream is over, however it ended: what was received still gets committed."""
        if self._closed:
            return
        self._closed = True
        if self.run is None:
            return
        with contextlib.suppress(RuntimeError):  # the writer is already closed: nothing pending
            self._flush()
        for future in self._inflight:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._daemon.registry.producer_stream_closed(self.run)
        self._daemon.open_publish_streams.discard(self)


# ---------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------

class TrainerService(trainer_pb2_grpc.TrainerServiceServicer):
    """The RPC handlers; state lives in the ``Daemon``'s components."""

    def __init__(self, daemon: "Daemon") -> None:
        self._d = daemon

    # -- helpers ---------------------------------------------------------------------------

    async def _session(self, context: grpc.aio.ServicerContext) -> Session:
        token = bearer_token(context.invocation_metadata())
        if token is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing session token: send metadata 'authorization: Bearer <token>' "
                                "with the token RegisterWorker returned")
        session = self._d.tokens.verify(token)
        if session is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "session token not recognised by this daemon: call RegisterWorker again")
        return session

    @contextlib.asynccontextmanager
    async def _reader(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Count a stream for as long as it runs, or refuse it (RESOURCE_EXHAUSTED) at the limit."""
        readers = self._d.readers
        try:
            readers.admit()
        except TooManyReaders as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            yield
        finally:
            readers.leave()

    async def _run(self, run_id: str, context: grpc.aio.ServicerContext) -> RunState:
        run = self._d.registry.get(run_id)
        if run is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no run '{run_id}' in this daemon")
        return run

    # -- runs ------------------------------------------------------------------------------

    async def SubmitRun(self, request: pb.SubmitRunRequest, context: grpc.aio.ServicerContext) -> pb.SubmitRunResponse:
        run_id = request.run_id or f"run-{uuid.uuid4().hex[:12]}"
        await _check_run_id(run_id, context)
        try:
            json.loads(request.config_json)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"config_json is not valid JSON: {exc}")
        try:
            run = await self._d.registry.submit(run_id, request.config_json)
        except RunConflict as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        return pb.SubmitRunResponse(run_id=run.run_id, digest=run.digest)

    def _holds_operator_token(self, context: grpc.aio.ServicerContext) -> bool:
        token = bearer_token(context.invocation_metadata())
        return bool(self._d.operator_token) and token == self._d.operator_token

    async def CancelRun(self, request: pb.CancelRunRequest, context: grpc.aio.ServicerContext) -> pb.CancelRunResponse:
        """A protected run is cancelled only with a session token of that run (whose holder gave
        its secret) or the operator token; an open run by anyone (MOSAIC/1.0 needs no token)."""
        run = self._d.registry.get(request.run_id)
        if run is not None and run.secret_digest and not self._holds_operator_token(context):
            session = self._d.tokens.verify(bearer_token(context.invocation_metadata()))
            if session is None or session.run_id != request.run_id:
                log.warning("run %s: refused a CancelRun without the run's authority", request.run_id)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"run '{request.run_id}' is protected by a secret: cancel it with a session token "
                                    "of the run (register with its secret) or the daemon's operator token")
        try:
            await self._d.registry.cancel(request.run_id)
        except UnknownRun as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.CancelRunResponse()

    async def FinishRun(self, request: pb.FinishRunRequest, context: grpc.aio.ServicerContext) -> pb.FinishRunResponse:
        session = await self._session(context)
        if request.run_id != session.run_id:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"the session token is not valid for run '{request.run_id}'")
        if session.worker_kind == OPERATOR_KIND:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"only a producer of run '{request.run_id}' can finish it, not an operator")
        run = await self._run(request.run_id, context)
        # Everything published for the run before this call is committed before the run ends
        # (the writer commits in submission order; waiting also surfaces nothing to us).
        pending = [f for stream in list(self._d.open_publish_streams) if stream.run is run
                   for f in stream.submit_buffered()]
        if pending:
            await asyncio.wait(pending)
        try:
            await self._d.registry.finish(run.run_id, request.failure_reason, session.worker_id,
                                          cancelled=request.cancelled, on_behalf_of=request.worker_id)
        except InvalidTransition as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        log.info("run %s: finished by %s: %s", run.run_id, session.worker_id or session.worker_kind,
                 run.status.name + (f" ({run.failure_reason})" if run.failure_reason else ""))
        return pb.FinishRunResponse(status=int(run.status))

    async def ListRuns(self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext) -> pb.ListRunsResponse:
        runs = self._d.registry.list(set(request.status_filter))
        return pb.ListRunsResponse(runs=[run_record(r) for r in runs])

    async def WatchRuns(self, request: pb.WatchRunsRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.RunRecord]:
        statuses = set(request.status_filter)
        store = self._d.store
        last = await asyncio.to_thread(store.last_run_change_seq)
        if request.since_seq > last:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"since_seq {request.since_seq} is past the newest run change ({last}): "
                                f"pass 0 for every change, or {last} for the changes from now on")

        def wanted(row: RunRow) -> bool:
            return not statuses or row.status in statuses

        async def read_page(after: int) -> list[RunRow]:
            # Filtering happens after paging: a page of unwanted runs must not end the replay.
            while True:
                rows = await asyncio.to_thread(store.read_runs_since, after, REPLAY_PAGE)
                if not rows:
                    return []
                kept = [r for r in rows if wanted(r)]
                if kept:
                    return kept
                after = rows[-1].seq_id

        async with self._reader(context), contextlib.aclosing(
                self._d.hub.replay_then_live(RUNS_TOPIC, read_page, request.since_seq, wanted)) as rows:
            async for row in rows:
                record = run_record(row)
                if row.status in (RunStatus.TERM, RunStatus.FAULT):
                    counts = await asyncio.to_thread(store.counts, row.run_id)
                    record.step_count, record.episode_count = counts.steps, counts.episodes
                yield record

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext) -> pb.HeartbeatResponse:
        try:
            self._d.registry.heartbeat(request.run_id)
        except UnknownRun as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.HeartbeatResponse()

    async def RegisterWorker(self, request: pb.RegisterWorkerRequest,
                             context: grpc.aio.ServicerContext) -> pb.RegisterWorkerResponse:
        if request.proto_version != PROTO_VERSION:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"this daemon speaks {PROTO_VERSION}; the worker asked for "
                                f"'{request.proto_version}'. Use a client built for {PROTO_VERSION}")
        await _check_run_id(request.run_id, context)
        producer = request.worker_kind != OPERATOR_KIND
        try:
            await self._d.registry.register_worker(
                request.run_id, producer=producer, worker_id=request.worker_id, resume=request.resume,
                secret=request.run_secret, operator=not producer and self._holds_operator_token(context))
        except UnknownRun as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{exc}: operators can only join existing runs")
        except RunProtected as exc:
            log.warning("run %s: refused worker '%s': wrong or missing run secret", request.run_id, request.worker_id)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except RunClosed as exc:
            log.warning("run %s: refused producer '%s': the run has already finished", request.run_id,
                        request.worker_id)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        token, row = self._d.tokens.issue(request.run_id, request.worker_id, request.worker_kind)
        await self._d.writer.submit_session(row)
        log.info("run %s: registered %s worker '%s'%s", request.run_id, request.worker_kind or "unnamed-kind",
                 request.worker_id, " (resuming)" if request.resume else "")
        response = pb.RegisterWorkerResponse(accepted_version=PROTO_VERSION, session_token=token,
                                             max_message_bytes=self._d.max_message_bytes,
                                             accepts_columns=True, store_id=self._d.store.store_id)
        if request.resume and producer:
            response.next_episode_index.update(
                await asyncio.to_thread(self._d.store.next_episode_indexes, request.run_id))
        return response

    async def GetHealth(self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext) -> pb.HealthCheckResponse:
        return pb.HealthCheckResponse(pid=os.getpid(), started_at=_timestamp(self._d.started_at_ns),
                                      listen_address=self._d.address, healthy=not self._d.stopping,
                                      store_id=self._d.store.store_id)

    # -- control ---------------------------------------------------------------------------

    async def ControlStream(self, request_iterator: AsyncIterator[pb.ControlEvent],
                            context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ControlEvent]:
        """Needs a token for the run. A producer first sends ``subscribe`` (optionally with its
        agent_id) and from then on receives the run's standing control state followed by every
        control event for it; it may half-close and keep listening. Any other stream sends
        commands (grant_steps, pause, resume, max_rate_hz), each applied to the run, fanned
        out to its subscribed producers and echoed back as acknowledgement; the stream ends
        when the sender half-closes. A refused command ends the stream with its status."""
        session = await self._session(context)
        outbox = ControlOutbox(session.run_id)
        if self._d.stopping:
            return
        self._d.control_outboxes.add(outbox)
        subscribed_run: list[RunState] = []
        reader = asyncio.get_running_loop().create_task(
            self._read_control(request_iterator, session, outbox, subscribed_run))
        try:
            while True:
                event = await outbox.next()
                if event is None:
                    break
                yield event
            if outbox.refusal is not None:
                code, message = outbox.refusal
                await context.abort(grpc.StatusCode[code], message)
        finally:
            reader.cancel()
            self._d.control_outboxes.discard(outbox)
            self._d.relay.remove(outbox)
            if subscribed_run:
                self._d.registry.producer_stream_closed(subscribed_run[0])

    async def _read_control(self, requests: AsyncIterator[pb.ControlEvent], session: Session,
                            outbox: ControlOutbox, subscribed_run: list[RunState]) -> None:
        """Apply the commands a ControlStream sends; a ``subscribe`` event makes the stream a
        producer subscription (it then receives the run's standing state and every event)."""
        registry = self._d.registry
        run: RunState | None = None
        try:
            async for event in requests:
                if run is None:
                    if event.run_id != session.run_id:
                        outbox.refuse("UNAUTHENTICATED",
                                      f"the session token is not valid for run '{event.run_id}'")
                        return
                    run = registry.get(event.run_id)
                    if run is None:
                        outbox.refuse("NOT_FOUND", f"no run '{event.run_id}'")
                        return
                elif event.run_id != run.run_id:
                    outbox.refuse("INVALID_ARGUMENT",
                                  f"run_id changed mid-stream from '{run.run_id}' to '{event.run_id}'")
                    return
                if event.WhichOneof("event") == "subscribe":
                    if not outbox.subscribed:
                        self._d.relay.add(outbox, event.agent_id)
                        registry.producer_stream_opened(run)
                        subscribed_run.append(run)
                        for standing in registry.control_snapshot(run, event.agent_id):
                            outbox.put(standing)
                    continue
                try:
                    await registry.apply_control(run, event)
                except ValueError as exc:
                    outbox.refuse("INVALID_ARGUMENT", str(exc))
                    return
                except ControlRefused as exc:
                    outbox.refuse("FAILED_PRECONDITION", str(exc))
                    return
                reached = self._d.relay.broadcast(event)
                log.info("run %s: control %s%s from %s reached %d producer stream(s)", run.run_id,
                         event.WhichOneof("event"), f" for agent {event.agent_id}" if event.agent_id else "",
                         session.worker_id or session.worker_kind, reached)
                if not outbox.subscribed:
                    outbox.put(event)
            # A subscriber may half-close (it has nothing to send) and keep listening; an
            # operator's stream ends once its commands are acknowledged.
            if not outbox.subscribed:
                outbox.end()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-read; nothing to answer
            log.debug("control stream of run %s ended: %s", session.run_id, exc)
            outbox.end()

    # -- publishing ------------------------------------------------------------------------

    async def _publish(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                       add: Callable[[_PublishStream, Any], Any]) -> pb.PublishTelemetryResponse:
        session = await self._session(context)
        if session.worker_kind == OPERATOR_KIND:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"an operator session of run '{session.run_id}' controls and watches; it cannot "
                                "publish records (register as a producer)")
        stream = _PublishStream(self._d, session, context)
        received = 0
        try:
            try:
                async for message in requests:
                    received += 1
                    await stream.check_run(message.run_id)
                    await add(stream, message)
            except DecodeError as exc:
                await stream.refuse_undecodable(received + 1, exc)
            return await stream.finish()
        finally:
            stream.close()

    async def PublishRunSteps(self, request_iterator: AsyncIterator[pb.RunStep],
                              context: grpc.aio.ServicerContext) -> pb.PublishTelemetryResponse:
        return await self._publish(request_iterator, context, lambda s, m: s.add_record("steps", m))

    async def PublishRunEpisodes(self, request_iterator: AsyncIterator[pb.RunEpisode],
                                 context: grpc.aio.ServicerContext) -> pb.PublishTelemetryResponse:
        return await self._publish(request_iterator, context, lambda s, m: s.add_record("episodes", m))

    async def PublishTelemetryBatch(self, request_iterator: AsyncIterator[pb.TelemetryBatch],
                                    context: grpc.aio.ServicerContext) -> pb.PublishTelemetryResponse:
        return await self._publish(request_iterator, context, _PublishStream.add_batch)

    # -- streaming out ---------------------------------------------------------------------

    async def _source(self, topic_of: Callable[[str], Any], request: Any, context: grpc.aio.ServicerContext,
                      read: Callable[..., list], convert: Callable[[Any], Any], *,
                      chunk_records: int | None = None) -> AsyncIterator[Any]:
        """Replay-then-live records of one kind of a run, as wire messages: one at a time, or
        with ``chunk_records`` in lists of at most that many (``LiveHub.replay_then_live_chunks``).
        Each replay page holds at most what the reader budget allows now (``ReaderBudget``)."""
        run = await self._run(request.run_id, context)
        agent = request.agent_id or None
        run_id = run.run_id
        readers = self._d.readers

        def read_messages(after: int) -> list:
            return [convert(row) for row in read(run_id, after, agent, REPLAY_PAGE, readers.page_bytes())]

        async def read_page(after: int) -> list:
            return await asyncio.to_thread(read_messages, after)

        keep = (lambda record: record.agent_id == agent) if agent else None
        if chunk_records is None:
            return self._d.hub.replay_then_live(topic_of(run_id), read_page, request.since_seq, keep)
        return self._d.hub.replay_then_live_chunks(topic_of(run_id), read_page, request.since_seq, keep,
                                                   chunk_records)

    async def StreamRunSteps(self, request: pb.StreamStepsRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.RunStep]:
        async with self._reader(context), contextlib.aclosing(
                await self._source(steps_topic, request, context, self._d.store.read_steps, step_message)) as records:
            async for record in records:
                yield record

    async def StreamRunEpisodes(self, request: pb.StreamEpisodesRequest,
                                context: grpc.aio.ServicerContext) -> AsyncIterator[pb.RunEpisode]:
        async with self._reader(context), contextlib.aclosing(await self._source(
                episodes_topic, request, context, self._d.store.read_episodes, episode_message)) as records:
            async for record in records:
                yield record

    async def StreamRunMessages(self, request: pb.StreamMessagesRequest,
                                context: grpc.aio.ServicerContext) -> AsyncIterator[pb.CoordinationMessage]:
        async with self._reader(context), contextlib.aclosing(await self._source(
                messages_topic, request, context, self._d.store.read_messages, coordination_message)) as records:
            async for record in records:
                yield record

    async def StreamRunStepBatches(self, request: pb.StreamStepsRequest,
                                   context: grpc.aio.ServicerContext) -> AsyncIterator[pb.TelemetryBatch]:
        """StreamRunSteps many steps per message: one TelemetryBatch per store page while
        replaying, then per what the live hub has queued (bounded by ``STEP_BATCH_RECORDS``
        and ``STEP_BATCH_BYTES``), so a viewer keeps up with a fast run."""
        async with self._reader(context), contextlib.aclosing(await self._source(
                steps_topic, request, context, self._d.store.read_steps, step_message,
                chunk_records=STEP_BATCH_RECORDS)) as chunks:
            async for chunk in chunks:
                for batch in step_batches(request.run_id, chunk, STEP_BATCH_BYTES):
                    yield batch


async def _check_run_id(run_id: str, context: grpc.aio.ServicerContext) -> None:
    if not run_id:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "run_id is required")
    if len(run_id) > MAX_RUN_ID_LENGTH or not run_id.isprintable():
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"run_id must be printable and at most {MAX_RUN_ID_LENGTH} characters")


# ---------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------

class Daemon:
    """A running daemon: the gRPC server and the components behind it."""

    def __init__(self, *, store: TelemetryStore, writer: StoreWriter, hub: LiveHub, registry: RunRegistry,
                 tokens: SessionTokens, max_message_bytes: int, operator_token: str = "",
                 readers: ReaderBudget | None = None) -> None:
        self.store = store
        self.readers = readers or ReaderBudget()
        #: the daemon-wide authority (given at start; "" for none): any run, never publishing
        self.operator_token = operator_token
        self.writer = writer
        self.hub = hub
        self.registry = registry
        self.tokens = tokens
        self.relay = ControlRelay()
        self.max_message_bytes = max_message_bytes
        self.started_at_ns = time.time_ns()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.address = ""
        self.stopping = False
        self.open_publish_streams: set[_PublishStream] = set()
        self.control_outboxes: set[ControlOutbox] = set()
        self.dashboard: DashboardServer | None = None
        self._stopped = asyncio.Event()

    def publish_live(self, result: IngestResult) -> None:
        """After COMMIT: hand newly stored records to live viewers, completed with their seq_id
        and run_id (only when someone is watching; nobody else sees these objects)."""
        hub = self.hub
        for topic, records, first_seq, values, build in (
                (steps_topic(result.run_id), result.new_steps, result.first_step_seq,
                 result.new_step_values, columns.step_message),
                (episodes_topic(result.run_id), result.new_episodes, result.first_episode_seq,
                 result.new_episode_values, columns.episode_message),
                (messages_topic(result.run_id), result.new_messages, result.first_message_seq, None, None)):
            if records and hub.has_subscribers(topic):
                run_id = result.run_id
                if build is not None and any(r is None for r in records):   # rows that came as columns
                    records = [build(run_id, row) if record is None else record
                               for record, row in zip(records, values)]
                for offset, record in enumerate(records):
                    record.seq_id = first_seq + offset
                    if not record.run_id:
                        record.run_id = run_id
                hub.publish(topic, records)

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting RPCs, end live streams, let publish streams finish for up to
        ``grace`` seconds, commit everything received, close the store."""
        if self.stopping:
            await self._stopped.wait()
            return
        self.stopping = True
        log.info("stopping: no new RPCs; committing everything received")
        if self.dashboard is not None:
            await self.dashboard.stop()
        stopping = asyncio.get_running_loop().create_task(self.server.stop(grace))
        self.hub.close()
        self.relay.close()
        for outbox in list(self.control_outboxes):
            outbox.end()
        await stopping
        for stream in list(self.open_publish_streams):
            stream.close()
        await self.registry.stop_fault_watch()
        await self.writer.close()
        self.store.close()
        log.info("stopped after %d transactions", self.writer.transactions)
        self._stopped.set()

    async def wait_for_termination(self) -> None:
        """Return once ``stop`` has finished."""
        await self._stopped.wait()


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise DaemonStartError(f"--listen must be HOST:PORT (e.g. {DEFAULT_LISTEN}), got '{listen}'")
    return host, int(port)


def _probe_listen(host: str, port: int) -> None:
    """Fail early and readably when the address cannot be bound (gRPC's own error is a log
    line in C plus a generic RuntimeError). gRPC's SO_REUSEPORT is disabled in ``serve``,
    so a port held by another daemon is refused there too."""
    bare = host.strip("[]")
    try:
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise DaemonStartError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            hint = " (is another daemon running? use --listen with another port)" if exc.errno == errno.EADDRINUSE else ""
            raise DaemonStartError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None


def _server_credentials(tls_cert: str | None, tls_key: str | None) -> grpc.ServerCredentials | None:
    if not tls_cert and not tls_key:
        return None
    if not (tls_cert and tls_key):
        raise DaemonStartError("TLS needs both a certificate and a key (--tls-cert and --tls-key)")
    try:
        key, cert = Path(tls_key).read_bytes(), Path(tls_cert).read_bytes()
    except OSError as exc:
        raise DaemonStartError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from None
    try:   # gRPC would only fail later, as an address that cannot be bound
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls_cert, tls_key, password=b"")
    except ssl.SSLError as exc:
        raise DaemonStartError(
            f"the TLS certificate {tls_cert} and key {tls_key} cannot be used ({exc.reason or exc}): "
            "--tls-cert needs a PEM certificate (chain) and --tls-key its PEM private key, unencrypted") from None
    return grpc.ssl_server_credentials([(key, cert)])


async def serve(listen: str = DEFAULT_LISTEN, db_path: str | Path = DEFAULT_DB, *, tls_cert: str | None = None,
                tls_key: str | None = None, fault_after_s: float = 30.0,
                max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, live_queue_records: int = 10_000,
                live_queue_bytes: int = DEFAULT_QUEUE_BYTES, live_total_bytes: int = DEFAULT_TOTAL_QUEUE_BYTES,
                max_readers: int = DEFAULT_MAX_READERS, dashboard_port: int | None = None,
                dashboard_host: str = DASHBOARD_HOST, operator_token: str = "") -> Daemon:
    """Start the daemon in the running event loop on ``listen`` ("HOST:PORT"; port 0 picks a
    free one) with its store in ``db_path``. Raises ``DaemonStartError`` with a readable
    message when the address, database or TLS files cannot be used.

    ``max_message_bytes`` is the largest inbound message (larger ones get
    RESOURCE_EXHAUSTED from gRPC), advertised in RegisterWorkerResponse.
    ``live_queue_records`` and ``live_queue_bytes`` bound each live viewer's queue before it
    catches up from the store, ``live_total_bytes`` all of them together (``telemetry.hub``).
    ``max_readers`` caps the streams served at once (``telemetry.readers``).
    Readers get messages up to ``max_message_bytes`` plus ``SEND_HEADROOM_BYTES``: a stored
    record comes back whole, so a reader must accept that much (``telemetry tail`` does).
    ``dashboard_port`` (0: a free one; None: no dashboard) serves the live web dashboard on
    ``dashboard_host``, loopback unless told otherwise (it has no login). A dashboard that
    cannot listen is logged as an error and the daemon serves telemetry without it.
    ``operator_token``, when given, is the daemon-wide authority: a caller presenting it may
    register as an operator for (and so control) and cancel any run, protected or not, but never publish.
    """
    host, port = _split_listen(listen)
    if port:
        _probe_listen(host, port)
    credentials = _server_credentials(tls_cert, tls_key)
    try:
        store = TelemetryStore(db_path)
    except StoreError as exc:
        raise DaemonStartError(str(exc)) from None
    writer = StoreWriter(db_path)
    writer.start()
    hub = LiveHub(live_queue_records, live_queue_bytes, live_total_bytes)
    registry = RunRegistry(writer, hub, store.list_runs(), fault_after_s=fault_after_s)
    daemon = Daemon(store=store, writer=writer, hub=hub, registry=registry,
                    tokens=SessionTokens(store.load_sessions()), max_message_bytes=max_message_bytes,
                    operator_token=operator_token, readers=ReaderBudget(max_readers))
    server = grpc.aio.server(interceptors=[RefuseUndecodable()], options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max(max_message_bytes, 4 * 1024 * 1024) + SEND_HEADROOM_BYTES),
        ("grpc.so_reuseport", 0),
    ])
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(TrainerService(daemon), server)
    try:
        bound = (server.add_secure_port(listen, credentials) if credentials
                 else server.add_insecure_port(listen))
    except RuntimeError:
        await writer.close()
        store.close()
        raise DaemonStartError(f"cannot listen on {listen}: the address is in use or not available") from None
    await server.start()
    daemon.server = server
    daemon.port = bound
    daemon.address = f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '::') else host}:{bound}"
    registry.start_fault_watch()
    if dashboard_port is not None:
        try:
            daemon.dashboard = await start_dashboard(store, hub, host=dashboard_host, port=dashboard_port)
        except DashboardStartError as exc:
            log.error("serving telemetry without a dashboard: %s", exc)
    log.info("listening on %s (store %s, %d runs, fault after %g s, max message %d bytes%s)", daemon.address,
             db_path, len(registry.list()), fault_after_s, max_message_bytes, ", TLS" if credentials else "")
    return daemon


# ---------------------------------------------------------------------------------------
# python -m telemetry.daemon
# ---------------------------------------------------------------------------------------

class _Arguments(argparse.ArgumentParser):
    """argparse with a one-line error instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got '{text}'")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got '{text}'")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Arguments(prog="python -m telemetry.daemon",
                        description="MOSAIC/1.0 telemetry daemon: stores agents' steps and episodes in SQLite "
                                    "and streams them back out, replayed or live.")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN}). "
                        f"${OPERATOR_TOKEN_ENV}, when set, is the operator token: it may control and cancel "
                        "any run (never publish)")
    parser.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file of the store (default {DEFAULT_DB})")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    parser.add_argument("--tls-cert", help="PEM certificate chain (serve TLS; needs --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument("--fault-after", type=_positive_float, default=30.0, metavar="S",
                        help="seconds without heartbeat or stream before a run is FAULT (default 30)")
    parser.add_argument("--dashboard-port", type=_port, default=DASHBOARD_PORT, metavar="PORT",
                        help=f"HTTP port of the live web dashboard (default {DASHBOARD_PORT}; 0: a free one)")
    parser.add_argument("--dashboard-host", default=DASHBOARD_HOST, metavar="HOST",
                        help=f"address the dashboard binds (default {DASHBOARD_HOST}: this machine only, "
                             "as the dashboard has no login)")
    parser.add_argument("--no-dashboard", action="store_true", help="serve no web dashboard")
    parser.add_argument("--max-message-bytes", type=_positive_int, default=DEFAULT_MAX_MESSAGE_BYTES, metavar="N",
                        help=f"largest inbound message (default {DEFAULT_MAX_MESSAGE_BYTES})")
    parser.add_argument("--max-readers", type=_positive_int, default=DEFAULT_MAX_READERS, metavar="N",
                        help=f"most streams (tails, viewers, watchers) served at once (default {DEFAULT_MAX_READERS})")
    return parser


async def _run(args: argparse.Namespace) -> int:
    daemon = await serve(args.listen, args.db, tls_cert=args.tls_cert, tls_key=args.tls_key,
                         fault_after_s=args.fault_after, max_message_bytes=args.max_message_bytes,
                         dashboard_port=None if args.no_dashboard else args.dashboard_port,
                         dashboard_host=args.dashboard_host, max_readers=args.max_readers,
                         operator_token=os.environ.get(OPERATOR_TOKEN_ENV, ""))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # Announce readiness only once a signal can no longer kill us before the flush.
    print(f"listening on {daemon.address}", flush=True)
    if daemon.dashboard is not None:
        print(f"dashboard at {daemon.dashboard.url}", flush=True)
    await stop.wait()
    await daemon.stop(grace=SHUTDOWN_GRACE_S)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the daemon until SIGINT/SIGTERM; return the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_run(args))
    except DaemonStartError as exc:
        print(f"telemetry daemon: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
