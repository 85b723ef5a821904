"""CPU used by a waiting agent, against the same agent on stock spade-bdi (which busy-polls).

Each measurement is a ``bench.idle_probe`` process (so the CPU time is the agents' own) whose
agents log in to the run's XMPP server, play one episode and then wait with nothing to do.
"""
from __future__ import annotations

from bench.context import BenchContext, Benchmark, median, spread
from bench.probe import run_probe
from bench.report import Figure

MANY = 10


async def _percent(ctx: BenchContext, agents: int, seconds: float, *flags: str) -> float:
    result = await run_probe(ctx.workdir, "bench.idle_probe", await ctx.xmpp_port(), agents, seconds, *flags,
                             timeout=120 + seconds)
    return result["cpu_percent_per_agent"]


async def run(ctx: BenchContext) -> list[Figure]:
    """Interleaved rounds: one idle agent, ten in one process, one on stock spade-bdi."""
    repeats = ctx.repeats(3, 1)
    seconds = ctx.seconds(5, 2)
    ours: list[float] = []
    many: list[float] = []
    stock: list[float] = []
    for round_ in range(repeats):
        ctx.progress(f"idle: round {round_ + 1}/{repeats}: 1 idle agent, {seconds:g} s")
        ours.append(await _percent(ctx, 1, seconds))
        ctx.progress(f"idle: round {round_ + 1}/{repeats}: {MANY} idle agents in one process")
        many.append(await _percent(ctx, MANY, seconds))
        ctx.progress(f"idle: round {round_ + 1}/{repeats}: 1 idle agent on stock spade-bdi")
        stock.append(await _percent(ctx, 1, seconds, "--stock"))
        ctx.progress(f"idle: {ours[-1]:.2f}% of a core per agent ({many[-1]:.2f}% with {MANY}); "
                     f"stock spade-bdi {stock[-1]:.1f}%")
    return [Figure(
        name="agent.idle_cpu_percent", value=median(ours), unit="% of a core",
        baseline_name="the same idle agent on stock spade-bdi's BDIBehaviour", baseline_value=median(stock),
        notes=(f"a LearningAgent with its telemetry behaviour (records discarded) that played one episode and "
               f"waits (plans done, finish_when_idle=False), logged in to the embedded XMPP server; CPU time of "
               f"its own process over {seconds:g} s of wall time, whole process counted; median of {repeats} "
               f"({spread(ours, '{:.2f}')}); {MANY} idle agents in one process: "
               f"{spread(many, '{:.2f}')}% each; stock: {spread(stock, '{:.1f}')}%"))]


BENCHMARK = Benchmark(area="idle", figures=("agent.idle_cpu_percent",), run=run)
