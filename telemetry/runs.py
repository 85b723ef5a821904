"""Runs: their validated state machine, liveness (FAULT), and control-event fan-out.

States (MOSAIC/1.0 ``RunStatus``) and what moves a run between them:

    INIT  -- created by SubmitRun, or by the first RegisterWorker of an unknown run
    RDY   -- a producer (any worker_kind but "operator") registered
    EXEC  -- telemetry was published (first publish, or publishing again after FAULT)
    PAUSE -- a run-wide ``pause`` control event; ``resume`` returns it to EXEC
    FAULT -- RDY/EXEC/PAUSE with no open producer stream (publish or subscribed control
             stream) and no heartbeat, registration or publish for ``fault_after_s``;
             a later registration (-> RDY) or publish (-> EXEC) recovers it
    TERM  -- CancelRun, a clean FinishRun, or a producer's cancelled FinishRun (interrupted:
             the reason then reads "cancelled: ..."). Telemetry still arriving for a TERM run
             (late flushes, spool replays) is stored, but the run leaves TERM only when a
             producer resumes it on purpose (RegisterWorker with ``resume``: back to RDY).

One run_id is one run: a producer that registers for a *finished* run (TERM, or FAULT by a
FinishRun) is refused with ``RunClosed`` unless it asks to resume. A live run (INIT, RDY,
EXEC, PAUSE, or FAULT by the watchdog) takes any number of producers: that is how the agents
of several workers started together share one run.

FinishRun (a producer's "my agents are done") moves a RDY/EXEC/PAUSE/FAULT run to TERM, or,
with a failure reason, to FAULT with that reason. A run finished FAULT is *finished*: it
stays FAULT (later publishes, heartbeats and registrations do not revive it, and the FAULT
watch only looks at live runs), and a second finish of a finished run changes nothing.

Only the transitions in ``TRANSITIONS`` happen; a control event that would need another
(pause a run that is INIT, FAULT or TERM) is refused with ``ControlRefused``. HSHK is part
of the contract's enum but unused: our handshake is the single RegisterWorker call.

Every change that moves a run (status, config) gets the next global ``seq_id`` and is
persisted (the run's row, plus an entry in the run-change log that WatchRuns replays), then
published on ``hub.RUNS_TOPIC`` after commit. Heartbeats and control-state changes are
persisted quietly (no new seq_id, no WatchRuns event).
Everything here runs on the daemon's event loop thread.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import IntEnum

from telemetry.flow import RUN_WIDE
from telemetry.generated import trainer_pb2
from telemetry.hub import RUNS_TOPIC, LiveHub
from telemetry.store import RunRow, StoreWriter

log = logging.getLogger(__name__)


class RunStatus(IntEnum):
    """The contract's RunStatus numbers."""
    UNSPECIFIED = 0
    INIT = 1
    HSHK = 2
    RDY = 3
    EXEC = 4
    PAUSE = 5
    FAULT = 6
    TERM = 7


S = RunStatus
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    S.INIT: frozenset({S.RDY, S.TERM}),
    S.HSHK: frozenset({S.RDY, S.FAULT, S.TERM}),
    S.RDY: frozenset({S.EXEC, S.PAUSE, S.FAULT, S.TERM}),
    S.EXEC: frozenset({S.PAUSE, S.FAULT, S.TERM}),
    S.PAUSE: frozenset({S.EXEC, S.FAULT, S.TERM}),
    S.FAULT: frozenset({S.RDY, S.EXEC, S.TERM}),
    S.TERM: frozenset(),
}
LIVE_STATUSES = frozenset({S.RDY, S.EXEC, S.PAUSE})


class UnknownRun(KeyError):
    """No run with that id."""

    def __str__(self) -> str:
        return f"no run '{self.args[0]}'"


class InvalidTransition(RuntimeError):
    """The state machine does not allow this move."""


class ControlRefused(RuntimeError):
    """A control event that the run's state does not allow (e.g. pause a TERM run)."""


class RunConflict(RuntimeError):
    """SubmitRun for an existing run with a different config."""


class RunProtected(PermissionError):
    """A registration for a run protected by a secret gave another (or none)."""

    def __str__(self) -> str:
        return (f"run '{self.args[0]}' is protected by a secret: give the run's secret (run_secret in the "
                "config, --secret for the telemetry command) or the daemon's operator token")


class RunClosed(RuntimeError):
    """A producer registered for a finished run without asking to resume it."""

    def __init__(self, run: "RunState") -> None:
        state = run.status.name + (f" ({run.failure_reason})" if run.failure_reason else "")
        super().__init__(
            f"run '{run.run_id}' has already finished ({state}) and keeps its records; a new producer "
            "would mix another run into it. Start a fresh run (leave run_id out of the config, or use "
            "a template such as 'name-{date}-{time}'), or continue this one on purpose with --resume")


def config_digest(config_json: str) -> str:
    """SHA-256 (hex) of the config exactly as submitted."""
    return hashlib.sha256(config_json.encode()).hexdigest()


@dataclass
class RunState:
    """A run as the daemon holds it in memory (the stored row plus live bookkeeping)."""
    run_id: str
    status: RunStatus
    digest: str = ""
    config_json: str = ""
    created_at_ns: int = 0
    updated_at_ns: int = 0
    last_heartbeat_ns: int = 0
    failure_reason: str = ""
    seq_id: int = 0
    paused_agents: set[str] = field(default_factory=set)
    max_rate_hz: int = 0
    agent_max_rate_hz: dict[str, int] = field(default_factory=dict)
    open_streams: int = 0
    last_activity: float = 0.0
    finished: bool = False
    #: worker_ids of the producers registered for the run that have not finished it yet
    producers: set[str] = field(default_factory=set)
    #: steps granted since credit mode began, per agent ("" for the run-wide pool)
    granted: dict[str, int] = field(default_factory=dict)
    #: SHA-256 of the run's secret ("" : the run is open to any registration)
    secret_digest: str = ""

    def admits(self, secret: str) -> bool:
        """Whether a registration giving ``secret`` may join the run."""
        return not self.secret_digest or hashlib.sha256(secret.encode()).hexdigest() == self.secret_digest

    @classmethod
    def from_row(cls, row: RunRow, now: float) -> "RunState":
        control = json.loads(row.control_json or "{}")
        return cls(row.run_id, RunStatus(row.status), row.digest, row.config_json, row.created_at_ns,
                   row.updated_at_ns, row.last_heartbeat_ns, row.failure_reason, row.seq_id,
                   set(control.get("paused_agents", [])), int(control.get("max_rate_hz", 0)),
                   {k: int(v) for k, v in control.get("agent_max_rate_hz", {}).items()},
                   last_activity=now, finished=bool(control.get("finished", False)),
                   producers=set(control.get("producers", [])),
                   granted={k: int(v) for k, v in control.get("granted", {}).items()},
                   secret_digest=control.get("secret", ""))

    def control(self) -> dict:
        """The standing control state (and bookkeeping) as stored in the run's control_json."""
        control = {"paused_agents": sorted(self.paused_agents), "max_rate_hz": self.max_rate_hz,
                   "agent_max_rate_hz": self.agent_max_rate_hz}
        if self.granted:
            control["granted"] = self.granted
        if self.secret_digest:   # persisted so a restarted daemon keeps the run protected
            control["secret"] = self.secret_digest
        return control

    def row(self) -> RunRow:
        """An immutable snapshot for the store and WatchRuns."""
        control = self.control()
        if self.finished:   # persisted so a restarted daemon keeps a finished FAULT run FAULT
            control["finished"] = True
        if self.producers:  # persisted so a restarted daemon still waits for every producer
            control["producers"] = sorted(self.producers)
        return RunRow(self.run_id, int(self.status), self.digest, self.config_json, self.created_at_ns,
                      self.updated_at_ns, self.last_heartbeat_ns, self.failure_reason, self.seq_id,
                      json.dumps(control, sort_keys=True))


def describe_control(status: int, control: dict) -> str:
    """What control holds a run's producers to, in words and with the command that lifts
    each hold; "" when nothing does. ``control`` is a run's control_json, decoded."""
    if status == S.TERM:
        return ""
    holds = []
    if status == S.PAUSE:
        holds.append("paused (lift: --resume)")
    paused = control.get("paused_agents", [])
    if paused:
        holds.append(f"agents paused: {', '.join(paused)} (lift: --resume --agent A)")
    granted = control.get("granted", {})
    if RUN_WIDE in granted:
        holds.append(f"step credits: {granted[RUN_WIDE]} granted, each step spends one (lift: --unlimited)")
    agents = sorted(a for a in granted if a != RUN_WIDE)
    if agents:
        holds.append("step credits for " + ", ".join(f"{a} ({granted[a]} granted)" for a in agents)
                     + " (lift: --unlimited --agent A)")
    if control.get("max_rate_hz"):
        holds.append(f"rate cap {control['max_rate_hz']} Hz (lift: --rate 0)")
    capped = control.get("agent_max_rate_hz", {})
    if capped:
        holds.append("rate caps " + ", ".join(f"{a} {hz} Hz" for a, hz in sorted(capped.items()))
                     + " (lift: --rate 0 --agent A)")
    return "; ".join(holds)


def _log_failed_save(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not persist a run change: %s", future.exception())


class RunRegistry:
    """Every run the daemon knows, its transitions, and the FAULT watch."""

    def __init__(self, writer: StoreWriter, hub: LiveHub, rows: Collection[RunRow], *,
                 fault_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.fault_after_s = fault_after_s
        self._writer = writer
        self._hub = hub
        self._clock = clock
        now = clock()
        # After a restart every live run gets a full fault_after_s to reconnect.
        self._runs = {r.run_id: RunState.from_row(r, now) for r in rows}
        self._seq = max((r.seq_id for r in rows), default=0)
        self._fault_watch: asyncio.Task | None = None

    # -- lookups ---------------------------------------------------------------------------

    def get(self, run_id: str) -> RunState | None:
        return self._runs.get(run_id)

    def require(self, run_id: str) -> RunState:
        run = self._runs.get(run_id)
        if run is None:
            raise UnknownRun(run_id)
        return run

    def list(self, statuses: Collection[int] = ()) -> list[RunState]:
        """Runs oldest first, only those in ``statuses`` when given."""
        runs = sorted(self._runs.values(), key=lambda r: (r.created_at_ns, r.run_id))
        return [r for r in runs if not statuses or r.status in statuses]

    # -- persistence -----------------------------------------------------------------------

    def _save(self, run: RunState, *, announce: bool) -> asyncio.Future:
        if announce:
            self._seq += 1
            run.seq_id = self._seq
            run.updated_at_ns = time.time_ns()
        publish = (lambda row: self._hub.publish(RUNS_TOPIC, [row])) if announce else None
        future = self._writer.submit_run(run.row(), announce=announce, on_commit=publish)
        future.add_done_callback(_log_failed_save)
        return future

    def _move(self, run: RunState, status: RunStatus, reason: str = "") -> asyncio.Future:
        if status not in TRANSITIONS[run.status]:
            raise InvalidTransition(f"run '{run.run_id}' cannot go from {run.status.name} to {status.name}")
        log.info("run %s: %s -> %s%s", run.run_id, run.status.name, status.name, f" ({reason})" if reason else "")
        run.status = status
        # FAULT says why; TERM keeps a reason only when it was cancelled ("cancelled: ...").
        run.failure_reason = reason if status is S.FAULT or reason.startswith("cancelled") else ""
        return self._save(run, announce=True)

    def _create(self, run_id: str, config_json: str = "") -> RunState:
        now_ns = time.time_ns()
        run = RunState(run_id, S.INIT, config_digest(config_json) if config_json else "", config_json,
                       now_ns, now_ns, last_activity=self._clock())
        self._runs[run_id] = run
        log.info("run %s: created (INIT)", run_id)
        return run

    # -- RPC-driven events -----------------------------------------------------------------

    async def submit(self, run_id: str, config_json: str) -> RunState:
        """SubmitRun: create the run with its config, idempotent for the same config."""
        digest = config_digest(config_json)
        run = self._runs.get(run_id)
        if run is None:
            run = self._create(run_id, config_json)
            await self._save(run, announce=True)
        elif run.digest == digest:
            return run
        elif not run.digest:
            run.config_json, run.digest = config_json, digest
            await self._save(run, announce=True)
        else:
            raise RunConflict(f"run '{run_id}' exists with another config (digest {run.digest[:12]}...); "
                              "submit under a new run_id")
        return run

    async def register_worker(self, run_id: str, *, producer: bool, worker_id: str = "",
                              resume: bool = False, secret: str = "", operator: bool = False) -> RunState:
        """RegisterWorker: producers create unknown runs and make them RDY, and are counted
        until they finish the run; operators (observers and controllers) need an existing run
        and change nothing. A producer for a finished run is refused (``RunClosed``) unless
        it asks to ``resume`` it, which reopens the run (RDY). A run's first producer may
        protect it with ``secret``; later registrations must give it (``RunProtected``) unless
        they hold the daemon's ``operator`` authority."""
        run = self._runs.get(run_id)
        if run is None:
            if not producer:
                raise UnknownRun(run_id)
            run = self._create(run_id)
            self._save(run, announce=True)
        if not operator and not run.admits(secret):
            raise RunProtected(run_id)
        if producer and secret and not run.secret_digest and not run.producers and not run.finished:
            run.secret_digest = hashlib.sha256(secret.encode()).hexdigest()
            self._save(run, announce=False)
        if producer and (run.finished or run.status is S.TERM):
            if not resume:
                raise RunClosed(run)
            self._reopen(run, worker_id)
        if producer:
            run.last_activity = self._clock()
            if not run.finished and worker_id not in run.producers:
                run.producers.add(worker_id)
                self._save(run, announce=False)
            if run.status in (S.INIT, S.FAULT, S.HSHK) and not run.finished:
                await self._move(run, S.RDY)
        return run

    def _reopen(self, run: RunState, worker_id: str) -> None:
        """A producer resumes a finished run on purpose: it is live again (RDY)."""
        log.info("run %s: resumed by producer '%s' (was %s)", run.run_id, worker_id, run.status.name)
        run.finished = False
        run.status = S.RDY
        run.failure_reason = ""
        run.producers.clear()
        self._save(run, announce=True)

    async def cancel(self, run_id: str) -> RunState:
        """CancelRun: TERM, marked cancelled (idempotent)."""
        run = self.require(run_id)
        if run.status is not S.TERM:
            run.finished = True
            await self._move(run, S.TERM, "cancelled: CancelRun")
        return run

    async def finish(self, run_id: str, failure_reason: str = "", worker_id: str = "", *,
                     cancelled: bool = False, on_behalf_of: str = "") -> RunState:
        """FinishRun from producer ``worker_id``: FAULT with ``failure_reason`` at once when
        one is given; TERM marked "cancelled: ..." at once when ``cancelled`` (the producer
        was interrupted, so the run is incomplete whatever the others do); otherwise TERM
        once every producer registered for the run has finished it (until then the run stays
        as it is). ``on_behalf_of``: the producer whose finish a spool replay by ``worker_id``
        carries (both are done). The caller makes sure everything published for the run is
        committed first. A run already finished (or TERM) is left as it is."""
        run = self.require(run_id)
        if run.finished or run.status is S.TERM:
            log.warning("run %s: already finished (%s); finish by '%s' ignored", run_id, run.status.name,
                        worker_id)
            return run
        run.producers.discard(worker_id)
        run.producers.discard(on_behalf_of)
        if cancelled:
            run.finished = True
            await self._move(run, S.TERM, "cancelled: " + (failure_reason or "the producer was interrupted"))
            return run
        if not failure_reason and run.producers:
            log.info("run %s: producer '%s' is done; waiting for %d more (%s)", run_id, worker_id,
                     len(run.producers), ", ".join(sorted(run.producers)))
            await self._save(run, announce=False)
            return run
        target = S.FAULT if failure_reason else S.TERM
        if target not in TRANSITIONS[run.status] and run.status is not S.FAULT:
            raise InvalidTransition(f"run '{run_id}' is {run.status.name}: only a RDY, EXEC, PAUSE or FAULT "
                                    f"run can be finished")
        run.finished = True
        if not failure_reason:
            await self._move(run, S.TERM, "finished")
        elif run.status is S.FAULT:   # FAULT -> FAULT is no transition: replace the reason
            log.info("run %s: FAULT, finished (%s)", run_id, failure_reason)
            run.failure_reason = failure_reason
            await self._save(run, announce=True)
        else:
            await self._move(run, S.FAULT, failure_reason)
        return run

    def heartbeat(self, run_id: str) -> RunState:
        """Heartbeat: the run's worker is alive; a FAULT run recovers to RDY (unless finished)."""
        run = self.require(run_id)
        run.last_activity = self._clock()
        run.last_heartbeat_ns = time.time_ns()
        if run.status is S.FAULT and not run.finished:
            self._move(run, S.RDY)
        else:
            self._save(run, announce=False)
        return run

    def publish_seen(self, run: RunState) -> None:
        """Telemetry arrived for ``run``: it is alive, and executing unless paused or over."""
        run.last_activity = self._clock()
        if run.finished:
            return
        if run.status in (S.INIT, S.HSHK):
            self._move(run, S.RDY)
        if run.status in (S.RDY, S.FAULT):
            self._move(run, S.EXEC)

    def producer_stream_opened(self, run: RunState) -> None:
        """A producer holds a stream open: the run cannot FAULT meanwhile."""
        run.open_streams += 1
        run.last_activity = self._clock()

    def producer_stream_closed(self, run: RunState) -> None:
        run.open_streams -= 1
        run.last_activity = self._clock()

    # -- control ---------------------------------------------------------------------------

    async def apply_control(self, run: RunState, event: trainer_pb2.ControlEvent) -> None:
        """Apply a control command to the run's state (the caller fans it out).

        Run-wide pause/resume move the run PAUSE/EXEC; agent-targeted ones only change which
        agents are paused. ``max_rate_hz`` 0 removes a cap. Raises ``ControlRefused`` when
        the run's state does not allow the command, ValueError for an empty event.

        The new state is saved without waiting for the commit: the writer commits in
        submission order, so behind a backlog of telemetry a control event (a pause meant to
        relieve exactly that) would otherwise wait for all of it before reaching anyone. A
        failed save is logged; the daemon's exit flushes what is queued.
        """
        kind = event.WhichOneof("event")
        if kind is None or kind == "subscribe":
            raise ValueError("the ControlEvent carries no command (grant_steps, unlimited_steps, pause, resume "
                             "or max_rate_hz)")
        if run.status is S.TERM:
            raise ControlRefused(f"run '{run.run_id}' is TERM: control events no longer apply")
        agent = event.agent_id
        if kind in ("pause", "resume") and not agent and run.status not in LIVE_STATUSES:
            raise ControlRefused(f"run '{run.run_id}' is {run.status.name}: only a RDY, EXEC or PAUSE run "
                                 f"can be paused or resumed")
        if kind == "pause":
            if agent:
                run.paused_agents.add(agent)
            elif run.status is not S.PAUSE:
                self._move(run, S.PAUSE)
                return
        elif kind == "resume":
            if agent:
                run.paused_agents.discard(agent)
            else:
                run.paused_agents.clear()
                if run.status is S.PAUSE:
                    self._move(run, S.EXEC)
                    return
        elif kind == "grant_steps":
            run.granted[agent] = run.granted.get(agent, 0) + event.grant_steps
        elif kind == "unlimited_steps":
            if agent:
                run.granted.pop(agent, None)
            else:
                run.granted.clear()
        elif kind == "max_rate_hz":
            if agent:
                if event.max_rate_hz:
                    run.agent_max_rate_hz[agent] = event.max_rate_hz
                else:
                    run.agent_max_rate_hz.pop(agent, None)
            else:
                run.max_rate_hz = event.max_rate_hz
        self._save(run, announce=False)

    def control_snapshot(self, run: RunState, agent_id: str = "") -> list[trainer_pb2.ControlEvent]:
        """The standing control state as events, for a producer that subscribes late
        (after a reconnect it must know the run is paused). Credits are deltas and are not
        replayed."""
        def mine(agent: str) -> bool:
            return not agent_id or agent == agent_id

        events = []
        if run.status is S.PAUSE:
            events.append(trainer_pb2.ControlEvent(run_id=run.run_id, pause=True))
        events += [trainer_pb2.ControlEvent(run_id=run.run_id, agent_id=a, pause=True)
                   for a in sorted(run.paused_agents) if mine(a)]
        if run.max_rate_hz:
            events.append(trainer_pb2.ControlEvent(run_id=run.run_id, max_rate_hz=run.max_rate_hz))
        events += [trainer_pb2.ControlEvent(run_id=run.run_id, agent_id=a, max_rate_hz=hz)
                   for a, hz in sorted(run.agent_max_rate_hz.items()) if mine(a)]
        return events

    # -- liveness --------------------------------------------------------------------------

    def check_faults(self) -> list[RunState]:
        """Move silent live runs to FAULT; return them."""
        now = self._clock()
        faulted = []
        for run in self._runs.values():
            if (run.status in LIVE_STATUSES and run.open_streams <= 0
                    and now - run.last_activity > self.fault_after_s):
                self._move(run, S.FAULT, f"no heartbeat, publish or producer stream for {self.fault_after_s:g} s")
                faulted.append(run)
        return faulted

    def start_fault_watch(self) -> None:
        """Check liveness periodically until ``stop_fault_watch``."""
        async def watch() -> None:
            interval = min(1.0, self.fault_after_s / 4)
            while True:
                await asyncio.sleep(interval)
                self.check_faults()

        self._fault_watch = asyncio.get_running_loop().create_task(watch(), name="run-fault-watch")

    async def stop_fault_watch(self) -> None:
        if self._fault_watch is not None:
            self._fault_watch.cancel()
            try:
                await self._fault_watch
            except asyncio.CancelledError:
                pass
            self._fault_watch = None


class ControlOutbox:
    """What one ControlStream sends back: fanned-out events if it subscribed, acknowledgements
    of its own commands otherwise, and finally the end or a refusal. Bounded: a client that
    stops reading its control stream is cut off rather than holding events forever."""

    def __init__(self, run_id: str, capacity: int = 1024) -> None:
        self.run_id = run_id
        self.capacity = capacity
        self.agent_id = ""
        self.subscribed = False
        self.refusal: tuple[str, str] | None = None
        self._events: deque[trainer_pb2.ControlEvent] = deque()
        self._wakeup = asyncio.Event()
        self._ended = False

    def put(self, event: trainer_pb2.ControlEvent) -> None:
        """Queue an event to send (ignored once the stream is ending)."""
        if self._ended:
            return
        if len(self._events) >= self.capacity:
            self.refuse("RESOURCE_EXHAUSTED", f"control stream of run '{self.run_id}' is not being read; "
                        f"{self.capacity} events are waiting")
            return
        self._events.append(event)
        self._wakeup.set()

    def refuse(self, code: str, message: str) -> None:
        """End the stream at once with a gRPC status (code name) and message."""
        if self.refusal is None:
            self.refusal = (code, message)
        self.end()

    def end(self) -> None:
        """End the stream after the events already queued."""
        self._ended = True
        self._wakeup.set()

    async def next(self) -> trainer_pb2.ControlEvent | None:
        """The next event to send; None when the stream should end (see ``refusal``)."""
        while not self._events and not self._ended:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.refusal is not None or not self._events:
            return None
        return self._events.popleft()


class ControlRelay:
    """Fan-out of control events to the subscribed producer streams of each run.

    Targeting: an event with an empty agent_id reaches every subscriber of the run; one
    with an agent_id reaches subscribers for that agent and subscribers that subscribed
    with an empty agent_id (a session serving several agents filters by itself)."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[ControlOutbox]] = {}

    def add(self, outbox: ControlOutbox, agent_id: str) -> None:
        outbox.agent_id = agent_id
        outbox.subscribed = True
        self._subscribers.setdefault(outbox.run_id, set()).add(outbox)

    def remove(self, outbox: ControlOutbox) -> None:
        subs = self._subscribers.get(outbox.run_id)
        if subs is not None:
            subs.discard(outbox)
            if not subs:
                del self._subscribers[outbox.run_id]

    def subscribers(self, run_id: str) -> int:
        return len(self._subscribers.get(run_id, ()))

    def broadcast(self, event: trainer_pb2.ControlEvent) -> int:
        """Queue ``event`` for the run's matching subscribers; return how many."""
        delivered = 0
        for outbox in tuple(self._subscribers.get(event.run_id, ())):
            if not event.agent_id or not outbox.agent_id or outbox.agent_id == event.agent_id:
                outbox.put(event)
                delivered += 1
        return delivered

    def close(self) -> None:
        """End every control stream (daemon shutdown)."""
        for subs in list(self._subscribers.values()):
            for outbox in list(subs):
                outbox.end()
        self._subscribers.clear()
