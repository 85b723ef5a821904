"""One cell of an experiment: one condition, one seed, a real container of agents.

`run_cell` starts an embedded XMPP server on free ports (one per process: pyjabber keeps its
state in module globals), opens a telemetry session to the daemon (if any) for the cell's own
run, builds the condition's agents (CoordinatingAgents; for hunting conditions also the
environment agent hosting the pursuit world), runs them to their budget, stops them, drains
every record and message into the session, and returns what the cell measured. Agents of one
cell share one process, so their messages go through SPADE's in-process dispatch
(docs/spade-traps.md, trap 12); the XMPP server is still where they log in.

Each cell's run_id is new (`<experiment>.<condition>.seed<k>.<random>`): a cell killed half way
and run again leaves its partial telemetry under its own run id and never mixes it with the
finished attempt, whose run_id the cell result records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from agents.actions import Gate
from agents.bdi_agent import LearningAgent
from agents.config import AgentConfig, TelemetryConfig
from agents.container import agent_jid
from agents.coordination.agent import CoordinatingAgent
from agents.coordination.ledger import COORDINATION, ENVIRONMENT, MessageLedger, channel_of
from agents.coordination.telemetry import MessageTelemetryBehaviour, drain_ledger
from agents.coordination.world_agent import PursuitHost, TanHost, WorldAgent
from agents.experiment.spec import Condition, ExperimentSpec
from agents.experiment.tan_metrics import trial_metrics
from agents.provenance import code_commit
from agents.qlearning import Hyperparameters
from agents.records import RecordBuffer, RecordChunk
from agents.telemetry_behaviour import DiscardSink, RecordSink, SessionSink, TelemetryBehaviour
from agents.xmpp_server import start_xmpp_server
from envs.multiagent import PursuitWorld, joint_state_index, sensation_index
from envs.multiagent.tan import TanOptions, TanWorld
from telemetry import TelemetryGrpcProxy

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 30.0
PROGRESS_EVERY_S = 20.0


class CellError(RuntimeError):
    """The cell could not finish (an agent failed, the time limit passed); says which and why."""


@dataclass(frozen=True)
class CellTask:
    """What a cell process needs: the experiment, the cell, and where telemetry goes."""

    spec: ExperimentSpec
    condition: Condition
    seed: int
    telemetry_target: Optional[str]
    spool_dir: Optional[str]

    @property
    def label(self) -> str:
        return f"{self.condition.name} seed {self.seed}"

    @property
    def file_name(self) -> str:
        return f"{self.condition.name}__seed{self.seed}.json"


class CurveSink:
    """Passes records on to `inner` (steps only when `steps`), keeping each agent's episode
    returns and successes: the learning curves are what the telemetry received."""

    def __init__(self, inner: RecordSink, *, steps: bool):
        self.inner = inner
        self.steps = steps
        self.returns: dict[str, list[float]] = defaultdict(list)
        self.successes: dict[str, list[bool]] = defaultdict(list)

    async def write(self, chunk: RecordChunk) -> None:
        for record in chunk.episodes:
            self.returns[record.agent_id].append(record.total_reward)
            self.successes[record.agent_id].append(bool(record.metadata.get("success")))
        await self.inner.write(chunk if self.steps else chunk.without_steps())


def episodes_to_threshold(spec: ExperimentSpec, successes: Sequence[bool], evaluations: Sequence[Any]) -> Optional[int]:
    """Episodes an agent needed to reach the threshold, None if it never did within the budget.

    greedy_evaluation: where every evaluation has the exact success probability (the
    environment publishes its transition model), the episode count of the first evaluation from
    which it stays at or above the threshold to the end; otherwise the first sampled greedy
    evaluation at or above it (sampling noise can cross a threshold once by chance);
    training_window: the first episode at which the last `window` training episodes' success
    rate is at or above it.
    """
    threshold = spec.threshold
    if threshold.measure == "greedy_evaluation":
        if evaluations and all(point.exact_success is not None for point in evaluations):
            reached = None
            for point in evaluations:
                if point.exact_success >= threshold.value - 1e-12:
                    reached = point.episodes if reached is None else reached
                else:
                    reached = None
            return reached
        return next((point.episodes for point in evaluations if point.success_rate >= threshold.value - 1e-12), None)
    window = threshold.window
    if len(successes) < window:
        return None
    rolling = np.convolve(np.asarray(successes, dtype=float), np.ones(window), mode="valid") / window
    hits = np.nonzero(rolling >= threshold.value - 1e-12)[0]
    return int(hits[0]) + window if len(hits) else None


def evaluate_hunters(
    tables: Sequence[np.ndarray], world: PursuitWorld, *, partner_sensation: bool, episodes: int, seed: int, greedy: bool
) -> float:
    """Capture rate of two hunters acting together over `episodes` episodes: greedy on their
    Q-tables, or uniformly at random (`greedy=False`, the random baseline)."""
    rng = np.random.default_rng(seed)
    size = world.size

    def state(sensations, i: int) -> int:
        own, partner = sensations[i], sensations[1 - i]
        return joint_state_index(own, partner, size) if partner_sensation else sensation_index(own, size)

    captures = 0
    for episode in range(episodes):
        result = world.reset(seed if episode == 0 else None)
        while True:
            if greedy:
                actions = [int(tables[i][state(result.sensations, i)].argmax()) for i in range(2)]
            else:
                actions = [int(a) for a in rng.integers(len(tables[0][0]), size=2)]
            result = world.step(actions)
            if result.terminated or result.truncated:
                captures += result.captured
                break
    return captures / episodes


#: Tan's exploration temperature (Boltzmann), unless a condition sets temperature.
TAN_TEMPERATURE = 0.4
SCOUT_ID = "scout"


def _agent_ids(task: CellTask) -> list[str]:
    """The cell's agents, in the world's mover order (hunters, then the scout)."""
    condition = task.condition
    if condition.tan:
        world = TanOptions(**_tan_world(task))
        return [f"hunter-{i + 1}" for i in range(world.hunters)] + [SCOUT_ID] * world.scouts
    prefix = "hunter" if condition.hunting else "learner"
    return [f"{prefix}-{i + 1}" for i in range(task.spec.learners)]


def _tan_world(task: CellTask) -> dict[str, Any]:
    """The options of a tan condition's world (without the agents' view)."""
    return {k: v for k, v in task.condition.world_kwargs(task.spec.env_kwargs).items() if k != "view"}


def _partner(task: CellTask, agent_id: str, ids: Sequence[str]) -> Optional[str]:
    """Whose report a mover waits for and to whom it reports: the other hunter, or hunter and
    scout to each other."""
    if task.condition.tan:
        if SCOUT_ID in ids:
            return SCOUT_ID if agent_id != SCOUT_ID else ids[0]
        others = [a for a in ids if a != agent_id]
        return others[0] if others else None
    if task.condition.hunting:
        return next(a for a in ids if a != agent_id)
    return None


def _agent_config(task: CellTask, run_id: str, agent_id: str, index: int) -> AgentConfig:
    spec, condition = task.spec, task.condition
    env_kwargs = dict(spec.env_kwargs)
    episodes = spec.episodes
    if condition.hunting:
        env_kwargs["partner_sensation"] = condition.kind == "joint_hunters"
    if condition.tan:
        env_kwargs = condition.world_kwargs(spec.env_kwargs)
        env_kwargs["role"] = "scout" if agent_id == SCOUT_ID else "hunter"
        episodes += spec.final_eval_episodes  # the test trials follow the training trials
    seed = task.seed * 1000 + index + 1  # the same agents' seeds in every condition: paired cells
    return AgentConfig(
        agent_id=agent_id,
        run_id=run_id,
        env_id=spec.env_id,
        episodes=episodes,
        env_kwargs=env_kwargs,
        max_steps_per_episode=spec.max_steps_per_episode,
        hyperparameters=Hyperparameters(**spec.hyperparameters, seed=seed),
        asl=Path(condition.plan),
        seed=seed,
        telemetry=TelemetryConfig(target=task.telemetry_target or TelemetryConfig.target, use_grpc_telemetry=task.telemetry_target is not None),
    )


def _settings(task: CellTask, agent_id: str) -> dict[str, Any]:
    threshold = task.spec.threshold
    settings: dict[str, Any] = dict(task.condition.settings)
    if task.condition.tan:
        settings["role"] = "scout" if agent_id == SCOUT_ID else "hunter"
        settings["training_trials"] = task.spec.episodes
        settings.setdefault("temperature", TAN_TEMPERATURE)
        return settings
    if threshold.measure == "greedy_evaluation":
        settings.setdefault("eval_every", threshold.eval_every)
        settings.setdefault("eval_episodes", threshold.eval_episodes)
    return settings


async def _report_progress(task: CellTask, agents: Sequence[LearningAgent], say: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        parts = ", ".join(f"{a.agent_id} {a.episodes_done}/{a.config.episodes}" for a in agents)
        say(f"  {task.label}: {parts} episodes")


async def _wait_for_agents(task: CellTask, agents: Sequence[LearningAgent], behaviours: Sequence[TelemetryBehaviour]) -> None:
    """Until every agent finished; CellError at the first failure (agent or telemetry) or the time limit."""
    deadline = time.monotonic() + task.spec.cell_time_limit_s
    pending = {asyncio.ensure_future(agent.finished()): agent for agent in agents}
    failed = {asyncio.ensure_future(b.failed.wait()): b for b in behaviours}
    try:
        while pending:
            timeout = deadline - time.monotonic()
            done, _ = await asyncio.wait([*pending, *failed], timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise CellError(f"{task.label}: time limit of {task.spec.cell_time_limit_s:g}s reached")
            for future in done:
                if future in failed:
                    raise CellError(f"{task.label}: telemetry failed: {failed[future].failure}")
                agent = pending.pop(future)
                if agent.result.error is not None:
                    raise CellError(f"{task.label}: {agent.result.error}")
    finally:
        for future in [*pending, *failed]:
            future.cancel()


def _tan_window(spec: ExperimentSpec) -> int:
    """Trials in Tan's early and late means: the threshold's window (50: one of Tan's blocks)."""
    return min(spec.threshold.window, spec.episodes)


def message_costs(ledgers: Sequence[MessageLedger], *, test_phase: bool = False) -> dict[str, Any]:
    """Every sent message of a cell (or, `test_phase`, of its test trials only) by kind and by
    channel (coordination apart from the environment's I/O): count, body bytes, stanza bytes
    and information bits."""
    by_kind: dict[str, dict[str, float]] = {}
    for ledger in ledgers:
        costs = ledger.phase_costs() if test_phase else ledger.totals().sent_cost_by_kind
        for kind, cost in costs.items():
            into = by_kind.setdefault(kind, {"count": 0, "body_bytes": 0, "stanza_bytes": 0, "bits": 0.0})
            for key, value in cost.as_dict().items():
                into[key] += value
    channels = {}
    for channel in (COORDINATION, ENVIRONMENT):
        kinds = [c for k, c in by_kind.items() if channel_of(k) == channel]
        channels[channel] = {key: sum(c[key] for c in kinds) for key in ("count", "body_bytes", "stanza_bytes", "bits")}
    return {"by_kind": by_kind, **channels}


def world_agent(task: CellTask, run_id: str, jid: str, mover_jids: Sequence[str], mover_ids: Sequence[str], port: int) -> WorldAgent:
    """The environment agent of a hosted cell (not started)."""
    spec = task.spec
    world = WorldAgent(
        jid,
        secrets.token_urlsafe(12),
        run_id=run_id,
        hunters=mover_jids,
        hunter_ids=mover_ids,
        world=_hosted_world(task),
        seed=task.seed * 1000 + 999,
        # Test trials: the same starts in every condition of a seed.
        reseed_at=(spec.episodes, spec.final_eval_seed + task.seed) if task.condition.tan else None,
        port=port,
        start_timeout=START_TIMEOUT_S,
    )
    if task.condition.tan:
        world.ledger.phase_from = spec.episodes
    return world


def _hosted_world(task: CellTask) -> PursuitHost | TanHost:
    if task.condition.tan:
        return TanHost(TanWorld(TanOptions(**_tan_world(task))))
    options = {k: v for k, v in task.spec.env_kwargs.items() if k in ("size", "max_steps", "prey_moves")}
    return PursuitHost(PursuitWorld(**options))


async def run_cell(task: CellTask, say: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Run one cell to the end; its measurements as a JSON-ready dict. Raises CellError."""
    spec, condition = task.spec, task.condition
    run_id = f"{spec.name}.{condition.name}.seed{task.seed}.{secrets.token_hex(3)}"
    started = time.monotonic()
    server = await start_xmpp_server(client_port=0, server_port=0)
    agents: list[CoordinatingAgent] = []
    world: Optional[WorldAgent] = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            session = None
            if task.telemetry_target is not None:
                proxy = TelemetryGrpcProxy(
                    task.telemetry_target,
                    run_config={"experiment": spec.name, "condition": condition.name, "kind": condition.kind, "seed": task.seed},
                    spool_dir=Path(task.spool_dir) if task.spool_dir else None,
                )
                session = await stack.enter_async_context(proxy.session(run_id))
            sink = CurveSink(SessionSink(session) if session is not None else DiscardSink(), steps=spec.telemetry_steps)
            ids = _agent_ids(task)
            jids = {agent_id: agent_jid(agent_id, server.host) for agent_id in ids}
            hosted = condition.hunting or condition.tan
            world_jid = agent_jid("world", server.host) if hosted else None
            directory = {jid: agent_id for agent_id, jid in jids.items()}
            behaviours: list[TelemetryBehaviour] = []
            for index, agent_id in enumerate(ids):
                config = _agent_config(task, run_id, agent_id, index)
                peers = {other: jid for other, jid in jids.items() if other != agent_id}
                records = RecordBuffer()
                agent = CoordinatingAgent(
                    jids[agent_id],
                    secrets.token_urlsafe(12),
                    config,
                    peers=peers,
                    directory=directory,
                    world_jid=world_jid,
                    partner=_partner(task, agent_id, ids),
                    settings=_settings(task, agent_id),
                    records=records,
                    port=server.client_port,
                    start_timeout=START_TIMEOUT_S,
                    eval_episodes=0 if hosted else spec.threshold.eval_episodes,
                )
                if condition.tan:
                    agent.ledger.phase_from = spec.episodes
                agents.append(agent)
                behaviour = TelemetryBehaviour(records, sink, gate=Gate.of_session(session) if session is not None else None)
                behaviour.attach(agent)
                behaviours.append(behaviour)
                agent.add_behaviour(MessageTelemetryBehaviour(agent.ledger, session))
            if hosted:
                world = world_agent(task, run_id, world_jid, [jids[a] for a in ids], ids, server.client_port)
                world.add_behaviour(MessageTelemetryBehaviour(world.ledger, session))
                await world.start()
            await asyncio.gather(*(agent.start() for agent in agents))
            progress = asyncio.create_task(_report_progress(task, agents, say))
            try:
                await _wait_for_agents(task, agents, behaviours)
            finally:
                progress.cancel()
            results = [agent.result for agent in agents]
            await asyncio.gather(*(agent.stop(timeout=STOP_TIMEOUT_S) for agent in agents))
            if world is not None:
                await world.stop()
            for behaviour in behaviours:
                if not await behaviour.wait_drained(DRAIN_TIMEOUT_S):
                    raise CellError(f"{task.label}: telemetry of an agent did not drain within {DRAIN_TIMEOUT_S:g}s")
            for ledger in [a.ledger for a in agents] + ([world.ledger] if world is not None else []):
                await drain_ledger(ledger, session)
            if session is not None:
                await session.flush()
    finally:
        for agent in agents:
            if agent.is_alive():
                await agent.stop(timeout=STOP_TIMEOUT_S)
        if world is not None and world.is_alive():
            await world.stop()
        await server.stop()
    final_capture = None
    if condition.hunting:
        options = {k: v for k, v in spec.env_kwargs.items() if k in ("size", "max_steps", "prey_moves")}
        final_capture = evaluate_hunters(
            [agent.learner.q for agent in agents],
            PursuitWorld(**options),
            partner_sensation=condition.kind == "joint_hunters",
            episodes=spec.final_eval_episodes,
            seed=spec.final_eval_seed + task.seed,  # the same episodes for every condition of a seed
            greedy=condition.kind != "random_hunters",
        )
    rows = []
    for agent, result in zip(agents, results):
        totals = agent.ledger.totals()
        evaluations = agent.coordination.evaluations
        successes = sink.successes[agent.agent_id]
        exact = [p.exact_success for p in evaluations]
        scored_exactly = bool(exact) and all(e is not None for e in exact) and not condition.hunting
        rows.append(
            {
                "agent_id": agent.agent_id,
                "episodes": result.episodes,
                "steps": result.steps,
                "episodes_to_threshold": episodes_to_threshold(spec, successes, evaluations),
                # exact where the environment allows: the last evaluation's success probability
                "final_greedy_success": (exact[-1] if scored_exactly else
                                         final_capture if condition.hunting else result.greedy_success_rate),
                "scoring": "exact" if scored_exactly else "sampled",
                # the area under the exact success curve, as a fraction of its maximum (1.0)
                "success_auc": float(np.mean(exact)) if scored_exactly else None,
                "final_greedy_return": final_capture if condition.hunting else result.greedy_mean_return,
                "messages_sent": totals.sent,
                "bytes_sent": totals.sent_bytes,
                "messages_received": totals.received,
                "bytes_received": totals.received_bytes,
                "sent_by_kind": totals.sent_by_kind,
                "sent_bytes_by_kind": totals.sent_bytes_by_kind,
                "merges": agent.coordination.merges_done,
                "shared_transitions_learned": agent.coordination.shared_transitions_learned,
                # Tan's agents play test trials after the budget: the curves are the training trials'.
                "returns": sink.returns[agent.agent_id][: spec.episodes],
                "successes": [int(s) for s in successes][: spec.episodes],
                "evaluations": [[p.episodes, p.steps, p.success_rate, p.mean_return, p.exact_success] for p in evaluations],
            }
        )
    world_row = None
    if world is not None:
        totals = world.ledger.totals()
        world_row = {"agent_id": world.agent_id, "messages_sent": totals.sent, "bytes_sent": totals.sent_bytes, "messages_received": totals.received, "bytes_received": totals.received_bytes, "captures": world.captures}
    tan = None
    if condition.tan:
        ledgers = [agent.ledger for agent in agents] + [world.ledger]
        tan = {
            "world": _tan_world(task),
            "trials": [[steps, int(captured)] for steps, captured in world.trials],
            "metrics": trial_metrics(world.trials, spec.episodes, TanOptions(**_tan_world(task)).max_steps, _tan_window(spec)),
            "messages": message_costs(ledgers),
            "test_messages": message_costs(ledgers, test_phase=True),
        }
    return {
        "experiment": spec.name,
        "digest": spec.digest(),
        "commit": code_commit(),
        "condition": condition.name,
        "kind": condition.kind,
        "seed": task.seed,
        "run_id": run_id,
        "telemetry_target": task.telemetry_target,
        "elapsed_s": round(time.monotonic() - started, 3),
        "agents": rows,
        "world": world_row,
        "tan": tan,
    }
