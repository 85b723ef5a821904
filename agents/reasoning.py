"""The AgentSpeak reasoning cycle as a SPADE behaviour that neither spins nor dies silently.

spade-bdi's stock `BDIBehaviour` runs one interpreter instruction per event-loop turn (a
message poll, a buffer check and `asyncio.sleep(0)` around every instruction) and polls at 100%
of a core when nothing is runnable (docs/spade-traps.md, trap 7). An exception in an action kills it
while the agent still looks alive (trap 4). `ReasoningBehaviour` replaces it:

- it runs instructions in batches of up to `time_slice` seconds between event-loop turns, so
  other behaviours and agents still run, but the interpreter is not taxed per instruction;
- when no intention is runnable it waits on an event (woken by an incoming message, a belief
  set from Python, `wake()`, or the next `.wait` deadline) instead of polling;
- an exception in an action, or an AgentSpeak failure (no applicable plan, a failed plan),
  becomes a `ReasoningFailure` naming the agent, the action and the error; the behaviour stops
  and hands the failure to its `on_failure` callback, so the owner can finish and report;
- an action may `defer()` asynchronous work (awaiting a backpressure gate, or space in a record
  buffer); it is awaited before the next instruction, so plans see its effects synchronously.

`fuse_formula_instructions` compiles a loaded plan library to fewer interpreter instructions
(same meaning); with both, a Q-learning step driven through the reasoning cycle runs about 3x
faster than on the stock behaviour.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

import agentspeak
import agentspeak.runtime
from spade_bdi.bdi import BDIBehaviour

logger = logging.getLogger(__name__)


class PlanError(RuntimeError):
    """An action was called when it cannot run, or with a bad argument; the message says what to
    do, in a sentence meant for people (shown as it is, never as a Python repr)."""


class ActionFailed(Exception):
    """Work an action deferred to the behaviour raised; keeps the action's name."""

    def __init__(self, action: str, error: BaseException):
        super().__init__(f"{action} raised {error!r}")
        self.action = action
        self.error = error


@dataclass(frozen=True)
class ReasoningFailure:
    """Why an agent's reasoning stopped: which agent, which action (if an action raised), what error."""

    agent: str
    action: Optional[str]
    error: BaseException
    location: Optional[str] = None  # "file.asl:LINE" of the failing instruction, when known

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        if self.action:
            detail = str(self.error) if isinstance(self.error, PlanError) else repr(self.error)
            return f"agent {self.agent}: action {self.action}{where} failed: {detail}"
        return f"agent {self.agent}: plan failed{where}: {self.error}"


def _failing_action(error: BaseException) -> Optional[str]:
    """`functor/arity` of the AgentSpeak action that raised `error`, read from its traceback.

    The interpreter runs an action inside `ActionQuery.execute`, whose `self.term` is the call;
    finding that frame costs nothing until something fails (a wrapper around every action would
    cost a generator layer on every call).
    """
    name = None
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code in _ACTION_CODES:
            query = frame.f_locals["self" if frame.f_code is _ACTION_CODES[0] else "query"]
            if type(query) is agentspeak.runtime.ActionQuery:
                name = f"{query.term.functor}/{len(query.term.args)}"
        tb = tb.tb_next
    return name


def _failed_test_goal(error: BaseException) -> Optional[str]:
    """For a plan that failed at a test goal (`?g(X)`), which goal and what the agent believes
    instead, read from the traceback (the interpreter itself only says "plan failure")."""
    tb = error.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        instr, agent = local.get("instr"), local.get("self", local.get("agent"))
        step = getattr(instr, "f", None)
        if getattr(step, "func", None) is agentspeak.runtime.test_belief and isinstance(agent, agentspeak.runtime.Agent):
            term = step.args[0]
            key = f"{term.functor}/{len(term.args)}"
            known = sorted(f"{f}/{n}" for (f, n), held in agent.beliefs.items() if held)
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            return f"test goal ?{term.functor}/{len(term.args)} failed: the agent holds no belief {key}{hint}"
        tb = tb.tb_next
    return None


def _run_formula(query, agent, intention) -> bool:
    """One body formula (`.action(...)`, `X = Y + 1`, ...): its first solution, or failure."""
    if type(query) is agentspeak.runtime.ActionQuery:
        for _ in query.impl(agent, query.term, intention):
            return True
        return False
    for _ in query.execute(agent, intention):
        return True
    return False


def _test_while(query, agent, intention) -> bool:
    """A `while` condition: open the loop's choicepoint, then the condition's first solution."""
    agentspeak.runtime.push_choicepoint(agent, intention)
    for _ in query.execute(agent, intention):
        return True
    return False


def fuse_formula_instructions(asp_agent: agentspeak.runtime.Agent) -> int:
    """Compile plain body formulas and `while` conditions to fewer interpreter instructions.

    The interpreter compiles a formula to push_query -> next_or_fail -> pop_query (take the
    query's first solution, fail the plan if there is none, drop the query), and a `while`
    condition to push_query -> push_choicepoint -> next_or_fail -> pop_query, leaving by
    pop_choicepoint -> pop_query when the condition fails. Each becomes one instruction doing the
    same (bindings stay in the intention's scope and the loop's choicepoint is kept, as before),
    which makes every action call and loop turn of a plan cheaper. `if` and `for` keep their
    query on the stack across their bodies and are left alone. Returns how many were fused.
    """
    runtime = agentspeak.runtime
    fused = 0
    seen: set[int] = set()
    for plans in list(asp_agent.plans.values()):
        for plan in plans:
            stack = [plan.body]
            while stack:
                instr = stack.pop()
                if instr is None or id(instr) in seen:
                    continue
                seen.add(id(instr))
                f = instr.f
                if isinstance(f, functools.partial) and f.func is runtime.push_query:
                    query = f.args[0]
                    after = instr.success
                    if (  # a plain formula: push_query -> next_or_fail (no failure branch) -> pop_query
                        after is not None
                        and after.f is runtime.next_or_fail
                        and after.failure is None
                        and after.success is not None
                        and after.success.f is runtime.pop_query
                    ):
                        instr.f = functools.partial(_run_formula, query)
                        instr.success = after.success.success
                        instr.loc, instr.extra_locs = after.loc, after.extra_locs
                        fused += 1
                    elif (  # a while condition: push_query -> push_choicepoint -> next_or_fail -> pop_query
                        after is not None
                        and after.f is runtime.push_choicepoint
                        and after.success is not None
                        and after.success.f is runtime.next_or_fail
                        and after.success.success is not None
                        and after.success.success.f is runtime.pop_query
                        and after.success.failure is not None
                        and after.success.failure.f is runtime.pop_choicepoint
                        and after.success.failure.success is not None
                        and after.success.failure.success.f is runtime.pop_query
                    ):
                        test = after.success
                        leave = runtime.Instruction(runtime.pop_choicepoint)
                        leave.success = test.failure.success.success
                        instr.f = functools.partial(_test_while, query)
                        instr.success = test.success.success
                        instr.failure = leave
                        fused += 1
                stack.append(instr.success)
                stack.append(instr.failure)
    return fused


_ACTION_CODES = (agentspeak.runtime.ActionQuery.execute.__code__, _run_formula.__code__, _test_while.__code__)


class _InterpreterErrorCapture(logging.Filter):
    """Keeps the last error the interpreter logged (message and source location) for the report.

    The interpreter prints its own coloured traceback to stderr and raises an opaque
    AggregatedError; the location exists only in the log record. The failure is re-logged by
    this module, naming the agent, so the interpreter's copy is suppressed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.message: Optional[str] = None
        self.location: Optional[str] = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        loc = getattr(record, "loc", None)
        self.message = record.getMessage()
        self.location = f"{loc.filename}:{loc.lineno}" if loc else None
        return False

    def take(self) -> tuple[Optional[str], Optional[str]]:
        message, location = self.message, self.location
        self.message = self.location = None
        return message, location


_capture = _InterpreterErrorCapture()
agentspeak.runtime.LOGGER.addFilter(_capture)


def last_interpreter_error() -> tuple[Optional[str], Optional[str]]:
    """(message, "file:line") of the last error the interpreter logged, then forget it."""
    return _capture.take()


class ReasoningBehaviour(BDIBehaviour):
    """Drop-in replacement for spade-bdi's BDIBehaviour: batched, sleeps when idle, reports failures."""

    time_slice = 0.01  # seconds of interpreting before letting the event loop run other tasks
    idle_wait = 1.0  # upper bound on an idle wait, so a missed wake-up costs at most this

    def __init__(
        self,
        on_failure: Optional[Callable[[ReasoningFailure], None]] = None,
        on_idle: Optional[Callable[[], None]] = None,
    ):
        """`on_failure(failure)` is called once if reasoning fails; `on_idle()` each time the
        plans run out of work (no intention left, nothing queued)."""
        super().__init__()
        self.on_failure = on_failure
        self.on_idle = on_idle
        self.failure: Optional[ReasoningFailure] = None
        self.instructions = 0
        self.deferrals = 0  # actions' work awaited between instructions (gate waits, buffer space)
        self._wake = asyncio.Event()
        self._deferred: Optional[tuple[str, Awaitable]] = None
        self._waiting_task: Optional[asyncio.Task] = None  # set while deferred work is awaited

    def wake(self) -> None:
        """Make an idle reasoning cycle look for work now."""
        self._wake.set()

    def defer(self, action: str, work: Awaitable) -> None:
        """Have `work` awaited right after the current instruction, before any other runs."""
        self.deferrals += 1
        self._deferred = (action, work)

    def kill(self, exit_code=None) -> None:
        super().kill(exit_code)
        self.wake()
        if self._waiting_task is not None:
            # Deferred work may wait on a gate that never opens again (a paused run being shut
            # down): cancel it rather than leave the behaviour pending forever.
            self._waiting_task.cancel()

    async def enqueue(self, message) -> None:
        await self.queue.put(message)
        self.wake()

    def set_belief(self, name: str, *args) -> None:
        super().set_belief(name, *args)
        self.wake()

    def remove_belief(self, name: str, *args) -> None:
        super().remove_belief(name, *args)
        self.wake()

    def is_idle(self) -> bool:
        """True when no intention is left and nothing is queued: the plans have nothing to do."""
        agent = self.agent
        return (
            not any(agent.bdi_agent.intentions)
            and not agent.bdi_intention_buffer
            and self.queue.empty()
            and self._deferred is None
        )

    async def run(self) -> None:
        agent = self.agent
        # Cleared before looking for work: a wake-up arriving while this turn runs (a message
        # during a deferred await) makes the idle wait below return at once.
        self._wake.clear()
        if not agent.bdi_enabled or agent.bdi_agent is None:
            await self._sleep(self.idle_wait)
            return
        try:
            # Messages and beliefs set from Python go through the stock code path (rare).
            while not self.queue.empty() or agent.bdi_intention_buffer:
                await super().run()
                await self._finish_deferred()
            if self.is_killed():  # killed while a message or deferred work was awaited
                return
            ran = await self._run_batch(agent.bdi_agent)
        except Exception as err:
            self._fail(err)
            return
        if not ran:
            if self.on_idle is not None and self.is_idle():
                self.on_idle()
            deadline = agent.bdi_agent.shortest_deadline()
            timeout = self.idle_wait if deadline is None else max(0.0, deadline - time.time())
            await self._sleep(min(timeout, self.idle_wait))

    async def _run_batch(self, bdi: agentspeak.runtime.Agent) -> bool:
        """Run instructions until none is runnable (False) or the time slice is used (True)."""
        step = bdi.step
        clock = time.perf_counter
        deadline = clock() + self.time_slice
        count = 0
        try:
            while True:
                if not step():
                    return False
                count += 1
                if self._deferred is not None:
                    await self._finish_deferred()
                    if self.is_killed():  # killed (e.g. by stop()) while the work was awaited
                        return True
                if not count & 31 and clock() > deadline:
                    return True
        finally:
            self.instructions += count

    async def _finish_deferred(self) -> None:
        if self._deferred is None:
            return
        action, work = self._deferred
        self._deferred = None
        self._waiting_task = asyncio.current_task()
        try:
            await work
        except Exception as err:
            raise ActionFailed(action, err) from err
        finally:
            self._waiting_task = None

    async def _sleep(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _fail(self, err: Exception) -> None:
        message, location = last_interpreter_error()
        # The interpreter re-raises what went wrong as an opaque AggregatedError; the original
        # exception is its context.
        cause = err.__context__ if isinstance(err, agentspeak.AggregatedError) and err.__context__ else err
        name = self.agent.name
        if isinstance(cause, ActionFailed):
            failure = ReasoningFailure(name, cause.action, cause.error, location)
        elif isinstance(cause, agentspeak.AslError) or (cause is err and message is not None):
            detail = _failed_test_goal(cause) or message or str(cause)
            failure = ReasoningFailure(name, None, agentspeak.AslError(detail), location)
        else:
            failure = ReasoningFailure(name, _failing_action(cause), cause, location)
        self.failure = failure
        # Whoever runs the agent reports the failure (agent.result); the traceback is for --log-level DEBUG.
        logger.info("%s", failure, exc_info=(type(failure.error), failure.error, failure.error.__traceback__))
        self.kill(exit_code=failure)
        if self.on_failure is not None:
            self.on_failure(failure)
