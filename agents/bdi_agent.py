"""`LearningAgent`: a SPADE BDI agent whose AgentSpeak plans drive tabular Q-learning.

The plan library (.asl) decides everything: when an episode starts, whether to explore or
exploit, when to stop, what to do on reaching the goal or a hole. The agent provides the
`.rl_*` actions and the beliefs they maintain (see `agents.actions`), runs the plans with the
non-spinning, failure-reporting `ReasoningBehaviour` (`agents.reasoning`), and validates the
plan file when it loads (`agents.asl_check`).

Lifecycle::

    agent = LearningAgent("a1@localhost", "pw", config, records=RecordBuffer(), port=5222)
    await agent.start()              # AgentStartError within start_timeout if no XMPP server
    result = await agent.finished()  # AgentResult once the plans call .rl_stop (or fail)
    await agent.stop()

Construct agents inside the running event loop that will run them: SPADE's container adopts
the loop that is running when the first agent is created.

How plans run (agents.reasoning, agents.actions): a plan reacting to a percept
(`+goal_reached <- ...`) runs as soon as the action that changed the belief returns, before the
intention that caused it continues; `.rl_stop` ends every intention; when no intention is left
and nothing is queued the agent finishes on its own (`finish_when_idle`, for learners; pass
False for an agent that waits for messages).

Traps of spade / spade-bdi handled here (docs/spade-traps.md): start() is bounded (trap 2), presence
is set available in setup (3), a failing action ends the agent with a report instead of leaving
it silently dead (4), beliefs are written synchronously as numbers (8), `.my_name` gives a
string (9), and the reasoning cycle does not spin (7).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import agentspeak
import agentspeak.stdlib
from spade.agent import AuthenticationFailure, DisconnectedException
from spade_bdi.bdi import BDIAgent, BDIBehaviour

from agents.actions import LEARNER_BELIEFS, GateLike, LearningActions, as_gate
from agents.asl_check import AslError, AslProblem, check_asl
from agents.config import DEFAULT_ASL, AgentConfig
from agents.qlearning import QLearner
from agents.reasoning import ReasoningBehaviour, ReasoningFailure, fuse_formula_instructions, last_interpreter_error
from agents.records import RecordBuffer
from agents.xmpp_server import xmpp_reachable_async
from envs import make_env

logger = logging.getLogger(__name__)

#: The repository's plan libraries: learner.asl (the default, step by step), learner_fast.asl.
ASL_DIR = DEFAULT_ASL.parent


class AgentStartError(RuntimeError):
    """The agent could not connect to an XMPP server; the message says how to get one."""


class AgentFailedError(RuntimeError):
    """Raised by `finished(raise_on_error=True)` when the agent's reasoning failed."""

    def __init__(self, failure: ReasoningFailure):
        super().__init__(str(failure))
        self.failure = failure


@dataclass(frozen=True)
class AgentResult:
    """What one agent did: counts, the greedy evaluation, why it stopped, and any failure."""

    agent_id: str
    run_id: str
    episodes: int  # episodes closed (each has an EpisodeRecord)
    steps: int  # training steps taken (each has a step in the record buffer)
    greedy_success_rate: Optional[float]  # from the last greedy evaluation, None if none ran
    greedy_mean_return: Optional[float]
    success_rate: float  # rolling training success rate at the end
    epsilon: float
    stop_reason: str
    elapsed_s: float  # from start() to the end of learning
    error: Optional[ReasoningFailure] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.elapsed_s if self.elapsed_s > 0 else 0.0


class LearningAgent(BDIAgent):
    """A BDI agent learning one environment with a Q-table, driven by its .asl plans.

    From `config` (an `agents.config.AgentConfig`) it uses agent_id, run_id, env_id, env_kwargs,
    episodes (the `episodes_target` belief), max_steps_per_episode, hyperparameters, asl, seed
    and policy_out; telemetry and xmpp settings are for whoever starts the agent. `asl_path`
    overrides `config.asl`. `records` (bound to this
    agent) receives a step per step and an EpisodeRecord per episode. `gate`, if given (or set later with
    `set_gate`), is passed before every environment step (see `agents.actions.Gate`).
    `first_episode_index` is where episode numbering starts (a resumed run continues it). Raises
    AslError (file and line) if the plan file is invalid, and the environment/config errors of
    `envs.make_env`.
    """

    #: the beliefs this agent keeps for its plans: the plan check warns about a context reading
    #: any other belief that nothing adds (None: not known in advance, not checked)
    PLAN_BELIEFS: Optional[frozenset[str]] = LEARNER_BELIEFS

    def __init__(
        self,
        jid: str,
        password: str,
        config: AgentConfig,
        *,
        asl_path: str | Path | None = None,
        records: Optional[RecordBuffer] = None,
        port: int = 5222,
        gate: Optional[GateLike] = None,
        start_timeout: float = 10.0,
        eval_episodes: int = 100,
        success_window: int = 100,
        finish_when_idle: bool = True,
        verify_security: bool = False,
        first_episode_index: int = 0,
    ):
        self.config = config
        self.agent_id: str = config.agent_id
        self.run_id: str = config.run_id
        self.records = records if records is not None else RecordBuffer()
        self.start_timeout = start_timeout
        self.finish_when_idle = finish_when_idle
        self.result: Optional[AgentResult] = None
        self._finished = asyncio.Event()
        self._started_at: Optional[float] = None

        env_kwargs = dict(config.env_kwargs)
        max_steps = config.max_steps_per_episode
        env = make_env(config.env_id, max_episode_steps=max_steps, **env_kwargs)
        self.learning = LearningActions(
            agent_id=self.agent_id,
            run_id=self.run_id,
            env=env,
            learner=QLearner(env.n_states, env.n_actions, config.hyperparameters),
            records=self.records,
            episodes_target=config.episodes,
            make_eval_env=lambda: make_env(config.env_id, max_episode_steps=max_steps, **env_kwargs),
            max_steps=max_steps,
            seed=config.seed,
            eval_episodes=eval_episodes,
            success_window=success_window,
            policy_out=None if config.policy_out is None else str(config.policy_out),
            first_episode_index=first_episode_index,
            defer=self._defer,
            on_stop=self._stop_learning,
        )
        self.learning.gate = as_gate(gate)
        asl = asl_path or config.asl
        # SPADE's container, created with the first agent, installs uvloop's event-loop policy
        # process-wide (docs/spade-traps.md, trap 11), which breaks asyncio subprocesses elsewhere in
        # the process (uvloop's policy has no child watcher). The container keeps the running
        # loop either way; the process keeps its own policy.
        policy = asyncio.get_event_loop_policy()
        try:
            super().__init__(
                jid,
                password,
                str(asl),
                actions=agentspeak.Actions(agentspeak.stdlib.actions),
                port=port,
                verify_security=verify_security,
            )
        except BaseException:
            self.learning.close()
            raise
        finally:
            asyncio.set_event_loop_policy(policy)

    # ------------------------------------------------------------ spade-bdi hooks

    def add_behaviour(self, behaviour, template=None) -> None:
        if type(behaviour) is BDIBehaviour:  # the stock, spinning one BDIAgent installs itself
            behaviour = ReasoningBehaviour(on_failure=self._on_failure, on_idle=self._on_idle)
        super().add_behaviour(behaviour, template)

    def add_custom_actions(self, actions: agentspeak.Actions) -> None:
        self.learning.register(actions)

    def _load_asl(self) -> None:
        """Validate, then build the plan library; errors name file and line (never a dead agent)."""
        self.pause_bdi()
        path = str(self.asl_file)
        check_asl(path, self.bdi_actions, self.PLAN_BELIEFS)
        try:
            with open(path, encoding="utf-8") as source:
                self.bdi_agent = self.bdi_env.build_agent(source, self.bdi_actions, name=self.name)
        except agentspeak.AggregatedError:
            message, location = last_interpreter_error()
            line = int(location.rsplit(":", 1)[1]) if location else 0
            raise AslError([AslProblem(path, line, 0, message or "the interpreter rejected the plan library")]) from None
        except agentspeak.AslError as err:  # e.g. an initial goal whose plans' contexts all fail
            raise AslError([AslProblem(path, 0, 0, str(err))]) from None
        # spade-bdi stores the JID object here, which `.my_name` hands to plans and `.print` cannot
        # print (trap 9): plans get the JID as a string.
        self.bdi_agent.name = str(self.jid)
        fuse_formula_instructions(self.bdi_agent)
        self.learning.bind(self.bdi_agent)
        logger.info("agent %s (run %s): plans loaded from %s", self.agent_id, self.run_id, path)
        self.resume_bdi()

    async def setup(self) -> None:
        # Without this, pyjabber may route messages for this JID to a stale session (trap 3).
        self.presence.set_available()

    # ----------------------------------------------------------------- lifecycle

    async def start(self, auto_register: bool = True) -> None:
        """Connect to the XMPP server and start the plans, within `start_timeout` seconds.

        Raises AgentStartError saying how to start a server when none answers in time.
        """
        host, port = str(self.jid.domain), int(self.xmpp_port)
        if not await xmpp_reachable_async(host, port, timeout=min(2.0, self.start_timeout)):
            raise AgentStartError(self._no_server(host, port, "nothing accepts connections there"))
        try:
            await asyncio.wait_for(super().start(auto_register=auto_register), self.start_timeout)
        except asyncio.TimeoutError:
            self._abort_connection()
            raise AgentStartError(self._no_server(host, port, f"no XMPP session within {self.start_timeout:g}s")) from None
        except (AuthenticationFailure, DisconnectedException) as err:
            self._abort_connection()
            raise AgentStartError(self._no_server(host, port, str(err))) from err
        self._started_at = time.perf_counter()
        logger.info("agent %s (run %s) started as %s", self.agent_id, self.run_id, self.jid)

    def _no_server(self, host: str, port: int, why: str) -> str:
        return (
            f"agent {self.agent_id} ({self.jid}) cannot connect to an XMPP server at {host}:{port}: {why}. "
            f"Start one with `spade run --client_port {port}` (or plain `spade run` for port 5222), "
            f"or run the container with its embedded server."
        )

    def _abort_connection(self) -> None:
        if self.client is not None:
            self.client.cancel_connection_attempt()
            self.client.abort()

    async def finished(self, timeout: Optional[float] = None, *, raise_on_error: bool = False) -> AgentResult:
        """Wait until learning has ended (`.rl_stop`, a failure, the plans running out, or stop()).

        Returns the AgentResult; with `raise_on_error`, a failure raises AgentFailedError instead.
        Raises TimeoutError if `timeout` seconds pass first.
        """
        try:
            await asyncio.wait_for(self._finished.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"agent {self.agent_id} has not finished after {timeout:g}s "
                f"({self.learning.episodes_done} episodes, {self.learning.total_steps} steps so far)"
            ) from None
        assert self.result is not None
        if raise_on_error and self.result.error is not None:
            raise AgentFailedError(self.result.error)
        return self.result

    async def stop(self, timeout: float = 5.0) -> None:
        """Disconnect and release the environments. Ends learning first if it is still running:
        the reasoning behaviour is killed before the result is taken, so no plan step runs after
        it (SPADE's own stop kills behaviours later, from a task of its own)."""
        if self.bdi is not None:
            self.bdi.kill()
        if not self._finished.is_set():
            self._finish("agent stopped before its plans finished", evaluate=False)
        try:
            await asyncio.wait_for(super().stop(), timeout)
        except asyncio.TimeoutError:
            logger.warning("agent %s: XMPP disconnect took over %gs; closing the connection", self.agent_id, timeout)
            self._abort_connection()
        self.learning.close()

    def set_gate(self, gate: Optional[GateLike]) -> None:
        """Install (or remove, with None) the gate passed before every environment step: a
        `Gate` (a synchronous check, awaited only when it says no) or a coroutine function
        awaited before every step."""
        self.learning.gate = as_gate(gate)

    @property
    def episodes_done(self) -> int:
        return self.learning.episodes_done

    @property
    def total_steps(self) -> int:
        return self.learning.total_steps

    @property
    def success_rate(self) -> float:
        return self.learning.success_rate

    @property
    def epsilon(self) -> float:
        return float(self.learning.learner.epsilon)

    @property
    def learner(self) -> QLearner:
        return self.learning.learner

    # -------------------------------------------------------------- internals

    def _defer(self, action: str, work) -> None:
        self.bdi.defer(action, work)

    def _stop_learning(self, reason: str) -> None:
        """`.rl_stop`: close the episode, evaluate, publish the result and end the plans."""
        self._finish(reason)
        self.bdi_agent.intentions.clear()

    def _on_failure(self, failure: ReasoningFailure) -> None:
        self._finish("error", error=failure, evaluate=False)

    def _on_idle(self) -> None:
        if self.finish_when_idle and not self._finished.is_set():
            self._finish("plans ended without .rl_stop")

    def _finish(self, reason: str, *, error: Optional[ReasoningFailure] = None, evaluate: bool = True) -> None:
        if self._finished.is_set():
            return
        learning = self.learning
        if evaluate:
            try:
                learning.finish()
            except Exception as err:  # a failed final evaluation must not leave finished() hanging
                error = ReasoningFailure(self.agent_id, "final evaluation", err)
                logger.error("%s", error)
        elif learning.in_episode:
            learning.end_episode(ended_by="stop")
        elapsed = time.perf_counter() - self._started_at if self._started_at is not None else 0.0
        self.result = AgentResult(
            agent_id=self.agent_id,
            run_id=self.run_id,
            episodes=learning.episodes_done,
            steps=learning.total_steps,
            greedy_success_rate=learning.greedy_success_rate,
            greedy_mean_return=learning.greedy_return,
            success_rate=learning.success_rate,
            epsilon=float(learning.learner.epsilon),
            stop_reason=reason,
            elapsed_s=elapsed,
            error=error,
        )
        self._finished.set()
        if error is None:
            logger.info(
                "agent %s (run %s) finished (%s): %d episodes, %d steps, greedy success %s",
                self.agent_id,
                self.run_id,
                reason,
                learning.episodes_done,
                learning.total_steps,
                "n/a" if learning.greedy_success_rate is None else f"{learning.greedy_success_rate:.2f}",
            )
