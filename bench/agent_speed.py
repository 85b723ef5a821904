"""Steps/s of Q-learning driven by AgentSpeak plans, against a plain Python loop.

Four ways to learn slippery FrozenLake-v1 (4x4) with the same Q-learner, hyperparameters and
seed, in interleaved rounds in this process:

* the plain loop (``agents.training.train_plain_counted``): the baseline of every figure here;
* ``agent.asl_step``: a ``LearningAgent`` running asl/learner.asl, one step per turn of the
  plans' ``while`` loop (choose, step, learn through the reasoning cycle);
* ``agent.episode_action``: asl/learner_fast.asl, a whole episode per ``.rl_run_episode``;
* ``agent.stock_bdi_step``: learner.asl on stock spade-bdi: its own ``BDIBehaviour`` and the
  interpreter's own compilation of the plans (what "stock spade-bdi's loop" means in the
  AgentSpeak-driven target), with our custom actions, which any learner needs.

Each agent is a real SPADE agent logged in to the run's XMPP server (another process), with its
records drained as the container does when telemetry is off (a ``TelemetryBehaviour`` with a
``DiscardSink``); no greedy evaluation at the end (``eval_episodes=0``).

The figures are steps per second of this process's CPU time, from start() returning to the
plans calling .rl_stop (for the plain loop: around the loop). Everything here is one thread
bound by the CPU, so on an idle machine that is the wall-clock rate; on this shared machine,
where other people's work takes the cores for seconds at a time, the CPU time is what the code
itself costs, and the ratios stay meaningful. Wall-clock rates are given in the notes.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass

from spade_bdi.bdi import BDIAgent

from agents.bdi_agent import ASL_DIR, LearningAgent
from agents.config import AgentConfig
from agents.qlearning import QLearner
from agents.records import RecordBuffer
from agents.telemetry_behaviour import DiscardSink, TelemetryBehaviour
from agents.training import build_env, train_plain_counted
from bench.context import BenchContext, Benchmark, median, spread
from bench.report import Figure

ENV_ID = "FrozenLake-v1"
SEED = 1
PLAIN = "plain Python Q-learning loop, same env and learner"
_serial = itertools.count(1)


class StockBdiAgent(LearningAgent):
    """The same learner on stock spade-bdi: its busy-polling ``BDIBehaviour``, and the plan
    library as the interpreter compiles it (without ``fuse_formula_instructions``)."""

    def add_behaviour(self, behaviour, template=None) -> None:
        BDIAgent.add_behaviour(self, behaviour, template)

    def _load_asl(self) -> None:
        super()._load_asl()  # validates and binds; then the stock compilation replaces the fused one
        with open(self.asl_file, encoding="utf-8") as source:
            self.bdi_agent = self.bdi_env.build_agent(source, self.bdi_actions, name=self.name)
        self.bdi_agent.name = str(self.jid)
        self.learning.bind(self.bdi_agent)


def _config(episodes: int, asl: str) -> AgentConfig:
    return AgentConfig(agent_id=f"speed-{next(_serial)}", run_id="bench-agent-speed", env_id=ENV_ID,
                       episodes=episodes, asl=ASL_DIR / asl, seed=SEED)


@dataclass(frozen=True)
class Rate:
    """Steps per CPU second and per wall-clock second of one measurement."""
    cpu: float
    wall: float


def plain_loop_rate(episodes: int) -> Rate:
    """The plain loop over ``episodes`` episodes."""
    config = _config(episodes, "learner.asl")
    env = build_env(config)
    try:
        learner = QLearner(env.n_states, env.n_actions, config.hyperparameters)
        wall, cpu = time.perf_counter(), time.process_time()
        run = train_plain_counted(env, learner, episodes, seed=config.seed)
        return Rate(run.steps / (time.process_time() - cpu), run.steps / (time.perf_counter() - wall))
    finally:
        env.close()


async def agent_rate(ctx: BenchContext, episodes: int, asl: str, agent_class: type[LearningAgent] = LearningAgent) -> Rate:
    """One agent learning ``episodes`` episodes with plan library ``asl``."""
    config = _config(episodes, asl)
    records = RecordBuffer()
    agent = agent_class(f"{config.agent_id}-{os.getpid()}@localhost", "bench", config, records=records,
                        port=await ctx.xmpp_port(), eval_episodes=0)
    TelemetryBehaviour(records, DiscardSink()).attach(agent)
    await agent.start()
    cpu = time.process_time()
    try:
        result = await agent.finished(timeout=600, raise_on_error=True)
        cpu = time.process_time() - cpu
    finally:
        await agent.stop()
    return Rate(result.steps / cpu, result.steps_per_second)


async def run(ctx: BenchContext) -> list[Figure]:
    """Interleaved rounds of the plain loop and the three agents."""
    repeats = ctx.repeats(3, 1)
    episodes = ctx.size(2000, 300, minimum=20)
    kinds = {
        "agent.asl_step.steps_per_s": ("learner.asl", LearningAgent,
                                       "asl/learner.asl: one Q-learning step per turn of the plan's while loop "
                                       "(.rl_choose, .rl_step, .rl_learn through the reasoning cycle)"),
        "agent.episode_action.steps_per_s": ("learner_fast.asl", LearningAgent,
                                             "asl/learner_fast.asl: one .rl_run_episode action per episode, "
                                             "the plans decide between episodes"),
        "agent.stock_bdi_step.steps_per_s": ("learner.asl", StockBdiAgent,
                                             "asl/learner.asl on stock spade-bdi (its BDIBehaviour, the "
                                             "interpreter's own plan compilation), our .rl_* actions"),
    }
    plain: list[Rate] = []
    rates: dict[str, list[Rate]] = {name: [] for name in kinds}
    for round_ in range(repeats):
        ctx.progress(f"agents: round {round_ + 1}/{repeats}: plain loop, {episodes:,} episodes")
        plain.append(plain_loop_rate(episodes))
        for name, (asl, agent_class, _) in kinds.items():
            ctx.progress(f"agents: round {round_ + 1}/{repeats}: {name} ({asl}, {agent_class.__name__})")
            rates[name].append(await agent_rate(ctx, episodes, asl, agent_class))
            ctx.progress(f"agents: {name}: {rates[name][-1].cpu:,.0f} steps/CPU-s, {rates[name][-1].wall:,.0f} "
                         f"steps/s (plain loop {plain[-1].cpu:,.0f} and {plain[-1].wall:,.0f})")
    return [
        Figure(name=name, value=median([r.cpu for r in rates[name]]), unit="steps/CPU-s", baseline_name=PLAIN,
               baseline_value=median([r.cpu for r in plain]),
               notes=(f"{how}; {ENV_ID} (slippery 4x4), {episodes:,} episodes, seed {SEED}, a real SPADE agent on the "
                      f"embedded XMPP server, records drained as with telemetry off; steps per CPU second of the "
                      f"process, median of {repeats} interleaved rounds ({spread([r.cpu for r in rates[name]])}; "
                      f"plain loop {spread([r.cpu for r in plain])}); wall clock: median "
                      f"{median([r.wall for r in rates[name]]):,.0f} steps/s against "
                      f"{median([r.wall for r in plain]):,.0f}"))
        for name, (_, _, how) in kinds.items()
    ]


BENCHMARK = Benchmark(
    area="agents",
    figures=("agent.asl_step.steps_per_s", "agent.episode_action.steps_per_s", "agent.stock_bdi_step.steps_per_s"),
    run=run,
)
