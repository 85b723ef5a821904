"""The agent container: N learning agents in one process, one event loop, one telemetry session.

`run_agents(container)` is the one function that runs a list of agents; `python -m agents run
CONFIG`, the one-agent worker (`agents.worker`) and the demo (`agents.demo`) all go
through it. It:

- finds the XMPP server: the one at the configured host/port (`spade run`), or one it starts
  in-process (`embedded`), or, for the worker, the configured one if it answers and an
  embedded one otherwise. No server and no permission to start one: `ContainerError` at once,
  saying how to get one;
- opens one telemetry session for the run (one `TelemetryGrpcProxy` per process, every agent's
  records tagged with its own agent_id), or writes JSON lines to stdout, or neither;
- at the end, tells the daemon the run finished (FinishRun: TERM, or FAULT naming the agents
  that failed);
- builds each agent inside the running loop with its own record buffer and `TelemetryBehaviour`
  (whose gate lets daemon backpressure pause that agent's plans), starts them (bounded),
  waits for each to finish (or fail, or the stop event, or the time limit), stops it and waits
  for its telemetry to drain (bounded), then closes the session (bounded by the proxy's
  close timeout: what the daemon has not taken by then stays in the durable spool).

Nothing here waits without a bound, so a failing agent ends the run instead of hanging it.
The command-line side (`python -m agents run`) is at the bottom: `add_run_command`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Awaitable, Callable, Optional, Sequence

from agents.actions import Gate
from agents.asl_check import AslError
from agents.bdi_agent import AgentResult, AgentStartError, LearningAgent
from agents.config import AgentConfig, ConfigError, ContainerConfig, TelemetryConfig, XmppConfig, load_container_config
from agents.progress import AgentProgress, ProgressBoard, SummaryRow, print_run_report, say_on_stderr
from agents.records import RecordBuffer
from agents.telemetry_behaviour import DEFAULT_PERIOD_S, DiscardSink, JsonlSink, RecordSink, SessionSink, TelemetryBehaviour
from agents.xmpp_server import EmbeddedXmppServer, XmppServerError, start_xmpp_server, xmpp_reachable_async
from telemetry import TelemetryGrpcProxy
from telemetry.errors import RunRefusedError, TelemetryError
from telemetry.proxy import TelemetrySession
from telemetry.spool import slug

logger = logging.getLogger(__name__)

#: Exit codes: 1 a run that failed (an agent, the XMPP server), 2 bad input (config, plan file).
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
#: How long an agent may take to connect (each attempt), to disconnect, and to hand over its
#: last records. Stock pyjabber (the server behind `spade run`) sometimes loses a client's
#: stream restart after STARTTLS, leaving that session silent: a fresh session on a new JID
#: succeeds, so a start is tried START_ATTEMPTS times. (The embedded server has that bug
#: fixed, in agents.xmpp_server.)
START_TIMEOUT_S = 5.0
START_ATTEMPTS = 3
STOP_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 10.0
_XMPP_PROBE_TIMEOUT_S = 2.0

class ContainerError(RuntimeError):
    """The run could not start (no XMPP server, an agent could not connect...); the message
    says what was wrong and what to do. ``exit_code``: 1, or 2 when the input is at fault
    (e.g. the run_id names a run that has already finished)."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ------------------------------------------------------------------------------ outcomes


@dataclass(frozen=True)
class AgentOutcome:
    """What one agent did (`result`), what its telemetry behaviour sent, and why it failed."""

    config: AgentConfig
    jid: str
    result: AgentResult
    steps_sent: int
    episodes_sent: int
    error: Optional[str] = None  # the agent's failure (agent, action, error) or its telemetry's

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def agent_id(self) -> str:
        return self.config.agent_id


@dataclass(frozen=True)
class TelemetryOutcome:
    """Where the records went. `mode`: "grpc" (the daemon at `target`), "jsonl" (stdout) or
    "off". For grpc, `delivered` records reached the daemon (live, or replayed from the spool)
    and `pending_in_spool` wait in the spool folder (`spool_folder`) for the next session to
    the same daemon to replay them."""

    mode: str
    target: Optional[str] = None
    accepted: int = 0
    delivered: int = 0
    spooled: int = 0
    connected: bool = False
    spool_folder: Optional[Path] = None
    error: Optional[str] = None  # the session's fatal error (e.g. the daemon refused the worker)
    #: records the daemon refused (kept in the spool's rejected folder, never stored)
    refused: int = 0
    first_refusal: Optional[str] = None

    @property
    def pending_in_spool(self) -> int:
        """Accepted records the daemon has not acknowledged. (Records of an earlier session's
        spool that this session replayed count as delivered, so this can under-count then.)"""
        return max(0, self.accepted - self.delivered) if self.mode == "grpc" else 0


@dataclass(frozen=True)
class ContainerRun:
    """The outcome of `run_agents`."""

    run_id: str
    outcomes: list[AgentOutcome]
    telemetry: TelemetryOutcome
    xmpp_address: str
    xmpp_embedded: bool
    interrupted: bool = False

    @property
    def failures(self) -> list[AgentOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failures and self.telemetry.error is None and not self.telemetry.refused and not self.interrupted

    def summary_rows(self) -> list[SummaryRow]:
        return [
            SummaryRow(
                agent_id=o.agent_id,
                episodes=o.result.episodes,
                steps=o.result.steps,
                greedy_success=o.result.greedy_success_rate,
                mean_return=o.result.greedy_mean_return,
                steps_per_second=o.result.steps_per_second,
                stop_reason=o.result.stop_reason if o.ok else (o.error or o.result.stop_reason),
                ok=o.ok,
            )
            for o in self.outcomes
        ]


# ------------------------------------------------------------------------------ XMPP


async def connect_xmpp(
    xmpp: XmppConfig, *, start_if_missing: bool = False, say: Callable[[str], None] = logger.info
) -> tuple[str, int, Optional[EmbeddedXmppServer]]:
    """Where agents log in: (host, port, the embedded server to stop later or None).

    `xmpp.embedded` starts a server in this process on `xmpp.port` (0: a free port). Otherwise
    the server at host:port must answer, unless `start_if_missing`, which then starts an
    embedded one there (or on a free port if that port is taken) and says so.
    Raises ContainerError with what to do.
    """
    if xmpp.embedded:
        return xmpp.host, *(await _start_embedded(xmpp.host, xmpp.port, say))
    if await xmpp_reachable_async(xmpp.host, xmpp.port, timeout=_XMPP_PROBE_TIMEOUT_S):
        return xmpp.host, xmpp.port, None
    if not start_if_missing:
        raise ContainerError(
            f"no XMPP server answers at {xmpp.host}:{xmpp.port}. Start one in another terminal with "
            f"`spade run{'' if xmpp.port == 5222 else f' --client_port {xmpp.port}'}`, or pass --embedded-xmpp "
            f"to start one inside this process."
        )
    try:
        return xmpp.host, *(await _start_embedded(xmpp.host, xmpp.port, say, why=f"no XMPP server answered at {xmpp.host}:{xmpp.port}"))
    except ContainerError:
        return xmpp.host, *(await _start_embedded(xmpp.host, 0, say, why=f"port {xmpp.port} is taken and no XMPP server answers there"))


async def _start_embedded(host: str, port: int, say: Callable[[str], None], why: str = "") -> tuple[int, EmbeddedXmppServer]:
    try:
        server = await start_xmpp_server(client_port=port, server_port=0, host=host)
    except XmppServerError as err:
        raise ContainerError(str(err)) from None
    say(f"{why + '; ' if why else ''}started an embedded XMPP server at {host}:{server.client_port}")
    return server.client_port, server


# ------------------------------------------------------------------------------ telemetry


@dataclass
class _Telemetry:
    """The run's telemetry plumbing: a sink per agent, the gate, and the session if any."""

    config: TelemetryConfig
    sink: RecordSink
    session: Optional[TelemetrySession] = None
    spool_folder: Optional[Path] = None  # where records wait while the daemon is away
    error: Optional[TelemetryError] = None

    async def close(self) -> None:
        """Close the session: deliver what the daemon takes within the proxy's close timeout,
        spool the rest. A fatal telemetry error is kept for the report, not raised."""
        try:
            await self.session.__aexit__(None, None, None)
        except TelemetryError as err:
            self.error = err

    def gate(self) -> Optional[Gate]:
        return None if self.session is None else Gate.of_session(self.session)

    async def finish(self, run_id: str, reason: str, timeout_s: float, *, cancelled: bool = False) -> None:
        """Tell the daemon the run is over: TERM when ``reason`` is empty, FAULT with it
        otherwise, TERM marked cancelled with ``cancelled`` (bounded; a daemon that cannot finish
        runs leaves it to its own FAULT watch, which is logged)."""
        if self.session is None or self.error is not None:
            return
        try:
            await asyncio.wait_for(self.session.finish_run(run_id, failure_reason=reason, cancelled=cancelled), timeout_s)
        except asyncio.TimeoutError:
            logger.warning("run %s: the daemon at %s did not confirm the run's end within %.0fs", run_id, self.config.target, timeout_s)

    def outcome(self) -> TelemetryOutcome:
        if self.session is None:
            return TelemetryOutcome(mode="jsonl" if self.config.jsonl_stdout else "off")
        stats = self.session.stats
        return TelemetryOutcome(
            mode="grpc",
            target=self.config.target,
            accepted=stats.accepted,
            delivered=stats.delivered,
            spooled=stats.spooled,
            connected=stats.connected,
            spool_folder=self.spool_folder,
            error=None if self.error is None else str(self.error),
            refused=stats.refused,
            first_refusal=str(self.session.refusals[0]) if self.session.refusals else None,
        )


async def _open_telemetry(
    stack: contextlib.AsyncExitStack,
    container: ContainerConfig,
    *,
    spool_dir: Optional[Path],
    close_timeout_s: float,
    jsonl_stream: Optional[IO[str]],
) -> _Telemetry:
    config = container.telemetry
    if not config.use_grpc_telemetry:
        sink = JsonlSink(jsonl_stream) if config.jsonl_stdout else DiscardSink()
        return _Telemetry(config, sink)
    proxy = TelemetryGrpcProxy(
        config.target,
        resume=container.resume,
        run_secret=config.run_secret,
        run_config={"run_id": container.run_id, "agents": [a.to_dict() for a in container.agents]},
        jsonl_stdout=bool(config.jsonl_stdout),
        spool_dir=spool_dir,
        close_timeout_s=close_timeout_s,
    )
    session = proxy.session(container.run_id)
    try:
        await session.__aenter__()
    except RunRefusedError as err:
        raise ContainerError(f"telemetry to {config.target} cannot start: {err}", exit_code=EXIT_BAD_INPUT) from None
    except TelemetryError as err:
        raise ContainerError(f"telemetry to {config.target} cannot start: {err}") from None
    telemetry = _Telemetry(config, SessionSink(session), session, spool_folder=proxy.spool_dir / slug(config.target))
    stack.push_async_callback(telemetry.close)
    return telemetry


# ------------------------------------------------------------------------------ agents


def agent_jid(agent_id: str, host: str) -> str:
    """A fresh XMPP address for an agent: its agent_id and a random suffix. Never reused,
    because pyjabber routes messages for a JID that connected before to its stale session
    (docs/spade-traps.md, trap 3), and an account left by an earlier run holds another password."""
    return f"{agent_id.lower()}.{secrets.token_hex(4)}@{host}"


@dataclass
class _Slot:
    config: AgentConfig
    agent: LearningAgent
    behaviour: TelemetryBehaviour
    started: bool = False


def _progress(slot: _Slot) -> AgentProgress:
    agent = slot.agent
    result = agent.result
    if result is not None:
        state = "done" if result.ok else "failed"
    else:
        state = "learning" if slot.started or agent.total_steps else "starting"
    return AgentProgress(
        agent_id=slot.config.agent_id,
        state=state,
        episodes=agent.episodes_done,
        episodes_target=slot.config.episodes,
        steps=agent.total_steps,
        epsilon=agent.epsilon,
        success_rate=agent.success_rate,
    )


def _build_slot(config: AgentConfig, telemetry: _Telemetry, host: str, port: int, period_s: float) -> _Slot:
    """One agent with its record buffer and telemetry behaviour (call inside the running loop:
    SPADE's container adopts the loop current when the first agent is created). In a resumed
    run the agent's episodes continue the numbering the daemon holds for it."""
    records = RecordBuffer()
    resumed_at = {} if telemetry.session is None else telemetry.session.next_episode_index
    agent = LearningAgent(
        agent_jid(config.agent_id, host),
        secrets.token_urlsafe(12),
        config,
        records=records,
        port=port,
        start_timeout=START_TIMEOUT_S,
        first_episode_index=resumed_at.get(config.agent_id, 0),
    )
    behaviour = TelemetryBehaviour(records, telemetry.sink, gate=telemetry.gate(), period=period_s)
    behaviour.attach(agent)
    return _Slot(config, agent, behaviour)


async def _start(slots: list[_Slot], rebuild: Callable[[AgentConfig], _Slot]) -> None:
    """Start every agent, each within START_ATTEMPTS sessions of START_TIMEOUT_S (a retry is a
    new agent on a new JID). Raises ContainerError naming the agents that could not connect;
    the caller stops the others."""

    async def start(index: int) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            slot = slots[index]
            try:
                await slot.agent.start()
            except AgentStartError as err:
                if attempt == START_ATTEMPTS:
                    raise
                logger.warning(
                    "agent %s (run %s): %s; trying a fresh session (%d of %d)",
                    slot.config.agent_id, slot.config.run_id, err, attempt + 1, START_ATTEMPTS,
                )  # fmt: skip
                await slot.agent.stop(timeout=STOP_TIMEOUT_S)
                slots[index] = rebuild(slot.config)
            else:
                slot.started = True
                return

    outcomes = await asyncio.gather(*(start(i) for i in range(len(slots))), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, AgentStartError):
            raise outcome
    errors = [o for o in outcomes if isinstance(o, AgentStartError)]
    if errors:
        raise ContainerError("; ".join(str(e) for e in errors)) from errors[0]


async def _stop(slot: _Slot) -> None:
    """End the agent's plans, disconnect it (bounded) and wait for its telemetry behaviour to
    drain (bounded)."""
    agent = slot.agent
    await agent.stop(timeout=STOP_TIMEOUT_S)
    if slot.started and not await slot.behaviour.wait_drained(DRAIN_TIMEOUT_S):
        logger.warning(
            "agent %s (run %s): telemetry still draining after %.0fs; left %d records unsent",
            slot.config.agent_id,
            slot.config.run_id,
            DRAIN_TIMEOUT_S,
            len(slot.behaviour.records),
        )


async def _supervise(slot: _Slot, stop: asyncio.Event, deadline: Optional[float]) -> AgentOutcome:
    """Wait for one agent to finish, fail, be stopped or run out of time; stop it; its outcome."""
    agent, behaviour = slot.agent, slot.behaviour
    finished = asyncio.ensure_future(agent.finished())
    telemetry_failed = asyncio.ensure_future(behaviour.failed.wait())
    stopping = asyncio.ensure_future(stop.wait())
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        await asyncio.wait({finished, telemetry_failed, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (finished, telemetry_failed, stopping):
            waiter.cancel()
    ended_early = agent.result is None
    await _stop(slot)
    result = agent.result
    assert result is not None  # stop() publishes a result if learning had not ended
    # The failure names the agent by its XMPP name; people know it by its agent_id.
    error = None if result.error is None else str(dataclasses.replace(result.error, agent=slot.config.agent_id))
    if behaviour.failure is not None:
        error = f"agent {slot.config.agent_id}: telemetry failed: {behaviour.failure}"
    elif ended_early:
        reason = "interrupted" if stop.is_set() else "time limit reached"
        result = dataclasses.replace(result, stop_reason=reason)
    return AgentOutcome(slot.config, str(agent.jid), result, behaviour.steps_sent, behaviour.episodes_sent, error)


async def _report_progress(slots: Sequence[_Slot], on_progress: Callable[[list[AgentProgress]], None], interval_s: float) -> None:
    while True:
        on_progress([_progress(slot) for slot in slots])
        await asyncio.sleep(interval_s)


async def run_agents(
    container: ContainerConfig,
    *,
    start_xmpp_if_missing: bool = False,
    stop: Optional[asyncio.Event] = None,
    time_limit_s: Optional[float] = None,
    on_progress: Optional[Callable[[list[AgentProgress]], None]] = None,
    progress_interval_s: float = 1.0,
    say: Callable[[str], None] = logger.info,
    spool_dir: Optional[Path] = None,
    close_timeout_s: float = 10.0,
    telemetry_period_s: float = DEFAULT_PERIOD_S,
    jsonl_stream: Optional[IO[str]] = None,
    on_started: Optional[Callable[[dict[str, LearningAgent]], None]] = None,
) -> ContainerRun:
    """Run the container's agents to the end and report what each did and where telemetry went.

    `stop` (set it to interrupt: agents are stopped, telemetry flushed) and `time_limit_s` end
    agents early. `on_progress` gets a snapshot of every agent each `progress_interval_s`.
    `say` receives one-line notices for people (an embedded server started...). `spool_dir`
    and `close_timeout_s` go to the proxy; `jsonl_stream` replaces stdout for JSON lines.
    `on_started` gets the running agents by agent_id (tests use it to watch them).
    Raises ContainerError when the run cannot start, AslError for an invalid plan file.
    """
    stop = stop or asyncio.Event()
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    async with contextlib.AsyncExitStack() as stack:
        host, port, embedded = await connect_xmpp(container.xmpp, start_if_missing=start_xmpp_if_missing, say=say)
        if embedded is not None:
            stack.push_async_callback(embedded.stop)
        telemetry = await _open_telemetry(
            stack, container, spool_dir=spool_dir, close_timeout_s=close_timeout_s, jsonl_stream=jsonl_stream
        )
        slots: list[_Slot] = []
        try:

            def build(config: AgentConfig) -> _Slot:
                return _build_slot(config, telemetry, host, port, telemetry_period_s)

            slots.extend(build(config) for config in container.agents)
            progress_task = None
            if on_progress is not None:
                progress_task = asyncio.create_task(_report_progress(slots, on_progress, progress_interval_s))
            try:
                await _start(slots, build)
                if on_started is not None:
                    on_started({slot.config.agent_id: slot.agent for slot in slots})
                outcomes = list(await asyncio.gather(*(_supervise(slot, stop, deadline) for slot in slots)))
                failed = "; ".join(o.error or f"agent {o.agent_id} failed" for o in outcomes if not o.ok)
                if stop.is_set():
                    await telemetry.finish(container.run_id, failed or "interrupted (Ctrl-C or SIGTERM)", close_timeout_s, cancelled=True)
                else:
                    await telemetry.finish(container.run_id, failed, close_timeout_s)
            finally:
                if progress_task is not None:
                    progress_task.cancel()
                    await asyncio.gather(progress_task, return_exceptions=True)
                    on_progress([_progress(slot) for slot in slots])
        except BaseException as err:
            await asyncio.gather(*(_stop(slot) for slot in slots if slot.started), return_exceptions=True)
            for slot in slots:
                if not slot.started:
                    slot.agent.learning.close()  # what stop() releases for a started agent
            if isinstance(err, Exception):
                # The run ends now, with the real reason, not as a watchdog FAULT 30 s later.
                await telemetry.finish(container.run_id, f"the container could not run: {err}", close_timeout_s)
            raise
    # Leaving the stack closed the session (delivered, or spooled within close_timeout_s) and
    # stopped the embedded server; the session's counters are final now.
    return ContainerRun(
        run_id=container.run_id,
        outcomes=outcomes,
        telemetry=telemetry.outcome(),
        xmpp_address=f"{host}:{port}",
        xmpp_embedded=embedded is not None,
        interrupted=stop.is_set(),
    )


# ------------------------------------------------------------------------------ processes


def exit_code(run: ContainerRun) -> int:
    """1 when an agent or its telemetry failed, or the daemon refused records (they are not in
    the run), else 0 (interruptions: see run_process)."""
    failed = run.failures or run.telemetry.error is not None or run.telemetry.refused
    return EXIT_FAILED if failed else 0


class _LogFormatter(logging.Formatter):
    """Log lines for people: without tracebacks unless asked for (--log-level DEBUG); the
    failures they explain are reported in the summary and as one `error:` line each."""

    def __init__(self, *, tracebacks: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if not self.tracebacks and (record.exc_info or record.exc_text):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record)


def run_process(main: Callable[[asyncio.Event], Awaitable[int]], *, log_level: str = "WARNING") -> int:
    """Run `main(stop)` with asyncio.run (not spade.run, which hides exceptions and exit codes:
    docs/spade-traps.md, trap 5) and return the process exit code.

    SIGINT/SIGTERM set `stop`: agents are stopped and telemetry flushed, and the exit code is
    128 + the signal (130 for Ctrl-C). A second signal exits at once.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter(tracebacks=log_level == "DEBUG"))
    logging.basicConfig(level=log_level, handlers=[handler])

    async def supervised() -> int:
        stop = asyncio.Event()
        received: list[int] = []
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if received:
                os._exit(128 + signum)  # the user insists: nothing more is waited for
            received.append(signum)
            say_on_stderr("interrupted: stopping the agents and flushing telemetry (press Ctrl-C again to quit at once)")
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        code = await main(stop)
        code = 128 + received[0] if received else code
        await _end_leftover_tasks(code)
        return code

    return asyncio.run(supervised())


#: How long tasks still running when the container is done get to end once cancelled.
EXIT_GRACE_S = 5.0


async def _end_leftover_tasks(code: int) -> None:
    """Cancel the tasks still running (library internals: XMPP clients, the embedded server)
    and give them EXIT_GRACE_S to end. asyncio.run would do the same but wait for ever, and a
    task that swallows its cancellation (pyjabber's server task sometimes does) then hangs the
    finished process; after the grace period the process exits with `code` without them."""
    leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    if not leftovers:
        return
    for task in leftovers:
        task.cancel()
    _, pending = await asyncio.wait(leftovers, timeout=EXIT_GRACE_S)
    if pending:
        names = ", ".join(sorted(task.get_name() for task in pending))
        logger.warning("%d task(s) did not end within %.0fs of being cancelled (%s); exiting without them",
                       len(pending), EXIT_GRACE_S, names)
        sys.stdout.flush()
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)


def human_stream(container: ContainerConfig, *, prefer: IO[str]) -> IO[str]:
    """Where progress and summaries go: `prefer`, unless records are JSON lines on stdout."""
    if prefer is sys.stdout and container.telemetry.jsonl_stdout:
        return sys.stderr
    return prefer


async def run_with_report(
    container: ContainerConfig,
    stop: asyncio.Event,
    *,
    stream: IO[str],
    after: Optional[Callable[[ContainerRun], None]] = None,
    **options,
) -> int:
    """`run_agents` with progress on `stream`, the report at the end, and the exit code.

    Shared by `python -m agents run`, the worker and the demo. ContainerError becomes a one-line
    error and exit code 1, an invalid plan file exit code 2.
    """
    board = ProgressBoard(stream)
    say_on_stderr(f"run {container.run_id}" + (" (resuming it)" if container.resume else ""))
    try:
        run = await run_agents(
            container, stop=stop, on_progress=board.update, progress_interval_s=board.interval_s, say=say_on_stderr, **options
        )
    except ContainerError as err:
        say_on_stderr(f"error: {err}")
        return err.exit_code
    except AslError as err:
        say_on_stderr(f"error: {err}")
        return EXIT_BAD_INPUT
    print_run_report(run, stream)
    if after is not None:
        after(run)
    return exit_code(run)


# ------------------------------------------------------------------------------ python -m agents run


def add_run_command(commands: argparse._SubParsersAction) -> None:
    """Register `run CONFIG` on `python -m agents`."""
    parser = commands.add_parser(
        "run",
        help="run the agents of a TOML or JSON config in one process",
        description="Run every agent of CONFIG (TOML or JSON) in this process and stream their telemetry. "
        "While the daemon is away, records wait in the per-user spool $XDG_DATA_HOME/mosaic-telemetry/spool "
        "(default ~/.local/share/mosaic-telemetry/spool) and are delivered by a later run.",
    )
    parser.add_argument("config", help="the container config file (.toml or .json); see examples/")
    parser.add_argument("--embedded-xmpp", action="store_true", help="start an XMPP server in this process instead of using `spade run`'s")
    parser.add_argument("--xmpp-host", help="XMPP server host (default: the config's, else localhost)")
    parser.add_argument("--xmpp-port", type=int, help="XMPP client port (default: the config's, else 5222)")
    parser.add_argument("--telemetry-target", metavar="HOST:PORT", help="telemetry daemon address (default: the config's, else 127.0.0.1:50055)")
    parser.add_argument("--time-limit", type=float, metavar="S", help="stop every agent after S seconds")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the config's run_id although that run has finished (episode numbering continues); "
        "without it a finished run_id is refused",
    )
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(handler=_run_command)


def with_overrides(
    container: ContainerConfig,
    *,
    xmpp_host: Optional[str] = None,
    xmpp_port: Optional[int] = None,
    embedded: Optional[bool] = None,
    telemetry_target: Optional[str] = None,
    resume: Optional[bool] = None,
) -> ContainerConfig:
    """The container with command-line overrides applied to it and to each agent's copy."""
    xmpp = dataclasses.replace(
        container.xmpp,
        host=xmpp_host or container.xmpp.host,
        port=container.xmpp.port if xmpp_port is None else xmpp_port,
        embedded=container.xmpp.embedded if embedded is None else embedded,
    )
    telemetry = dataclasses.replace(container.telemetry, target=telemetry_target or container.telemetry.target)
    agents = [dataclasses.replace(a, xmpp=xmpp, telemetry=telemetry) for a in container.agents]
    resume = container.resume if resume is None else resume
    return dataclasses.replace(container, xmpp=xmpp, telemetry=telemetry, agents=agents, resume=resume)


def _is_target(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return text.startswith("unix:") or (bool(host) and port.isdigit() and 0 < int(port) < 65536)


def _run_command(args: argparse.Namespace) -> int:
    if args.xmpp_port is not None and not 0 <= args.xmpp_port <= 65535:
        say_on_stderr(f"error: --xmpp-port must be in [0, 65535] (0: a free port, with --embedded-xmpp), got {args.xmpp_port}")
        return EXIT_BAD_INPUT
    if args.telemetry_target is not None and not _is_target(args.telemetry_target):
        say_on_stderr(f"error: --telemetry-target must be HOST:PORT such as 127.0.0.1:50055, got {args.telemetry_target!r}")
        return EXIT_BAD_INPUT
    try:
        container = load_container_config(args.config)
    except ConfigError as err:
        say_on_stderr(f"error: {err}")
        return EXIT_BAD_INPUT
    container = with_overrides(
        container,
        xmpp_host=args.xmpp_host,
        xmpp_port=args.xmpp_port,
        embedded=True if args.embedded_xmpp else None,
        telemetry_target=args.telemetry_target,
        resume=True if args.resume else None,
    )
    stream = human_stream(container, prefer=sys.stdout)
    return run_process(
        functools.partial(run_with_report, container, stream=stream, time_limit_s=args.time_limit),
        log_level=args.log_level,
    )
