"""What a person watching a container sees: per-agent progress while agents learn, then a
summary table, where the telemetry went, and one `error:` line (on stderr) per failure.

`ProgressBoard` is called with `AgentProgress` snapshots (the container polls its agents). On a
terminal it redraws one line per agent in place, a few times a second; when the output is a
file or a pipe it prints plain lines now and then instead, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from agents.container import ContainerRun

#: Redraw rate on a terminal, and the interval between plain lines otherwise.
TTY_INTERVAL_S = 0.25
PLAIN_INTERVAL_S = 5.0


@dataclass(frozen=True)
class AgentProgress:
    """One agent's counters at one moment (`state`: starting, learning, done or failed)."""

    agent_id: str
    state: str
    episodes: int
    episodes_target: int
    steps: int
    epsilon: float
    success_rate: float  # rolling training success rate


@dataclass(frozen=True)
class SummaryRow:
    """One line of the final table."""

    agent_id: str
    episodes: int
    steps: int
    greedy_success: Optional[float]
    mean_return: Optional[float]
    steps_per_second: float
    stop_reason: str
    ok: bool


class ProgressBoard:
    """Renders snapshots to `stream` (default stderr): in place on a TTY, plain lines otherwise."""

    def __init__(self, stream: Optional[IO[str]] = None, *, tty: Optional[bool] = None, plain_interval_s: float = PLAIN_INTERVAL_S):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = TTY_INTERVAL_S if self.tty else plain_interval_s
        self._drawn_lines = 0
        self._last: dict[str, tuple[float, int]] = {}  # agent_id -> (time, steps) of the previous snapshot
        self._rates: dict[str, float] = {}

    def update(self, snapshot: Sequence[AgentProgress]) -> None:
        """Show the current state of every agent."""
        now = time.perf_counter()
        for agent in snapshot:
            then = self._last.get(agent.agent_id)
            if then is not None and now > then[0]:
                self._rates[agent.agent_id] = (agent.steps - then[1]) / (now - then[0])
            self._last[agent.agent_id] = (now, agent.steps)
        lines = [self._line(agent) for agent in snapshot]
        if self.tty:
            # Move up over the previous block and rewrite it line by line.
            up = f"\x1b[{self._drawn_lines}F" if self._drawn_lines else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn_lines = len(lines)
        else:
            self.stream.write("".join(f"{line}\n" for line in lines))
        self.stream.flush()

    def _line(self, agent: AgentProgress) -> str:
        rate = self._rates.get(agent.agent_id)
        steps_s = "-" if rate is None or agent.state != "learning" else f"{rate:,.0f}"
        return (
            f"{agent.agent_id:<16} {agent.state:<9} episode {agent.episodes:>6}/{agent.episodes_target:<6} "
            f"eps {agent.epsilon:5.3f}  success {agent.success_rate:6.1%}  steps {agent.steps:>8}  steps/s {steps_s:>7}"
        )


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0%}"


def _number(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _shortened(text: str, width: int) -> str:
    """At most `width` characters (the whole text is on the error line after the table)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_table(rows: Sequence[SummaryRow]) -> str:
    """The end-of-run table: agent, episodes, steps, greedy success, mean return, steps/s, stop reason."""
    header = ("agent", "episodes", "steps", "greedy success", "mean return", "steps/s", "stopped because")
    body = [
        (
            row.agent_id,
            str(row.episodes),
            str(row.steps),
            _percent(row.greedy_success),
            _number(row.mean_return, ".3f"),
            f"{row.steps_per_second:,.0f}" if row.steps_per_second > 0 else "-",
            row.stop_reason if row.ok else _shortened(f"FAILED: {row.stop_reason}", 60),
        )
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body)]
    right = {1, 2, 3, 4, 5}  # numbers line up on the right

    def render(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(header), rule, *(render(cells) for cells in body)])


def say_on_stderr(message: str) -> None:
    """A one-line notice or error for people, on stderr (stdout may carry JSON lines)."""
    print(message, file=sys.stderr, flush=True)


def describe_telemetry(run: "ContainerRun") -> str:
    """Where the run's telemetry went, in a line or two for people."""
    t = run.telemetry
    if t.error is not None:
        return f"telemetry: failed: {t.error}"
    steps = sum(o.steps_sent for o in run.outcomes)
    episodes = sum(o.episodes_sent for o in run.outcomes)
    if t.mode == "off":
        return f"telemetry: off ({steps} steps and {episodes} episodes not recorded)"
    if t.mode == "jsonl":
        return f"telemetry: {steps} steps and {episodes} episodes written as JSON lines to stdout"
    text = f"telemetry: {steps} steps and {episodes} episodes for run {run.run_id}"
    if t.pending_in_spool == 0:
        return f"{text} delivered to the daemon at {t.target}"
    return (
        f"{text}: the daemon at {t.target} has not taken {t.pending_in_spool} of them yet; they wait in "
        f"the spool {t.spool_folder} and are sent the next time an agent streams to {t.target} "
        f"(start the daemon with `python -m telemetry.daemon --listen {t.target}`)"
    )


def describe_failures(run: "ContainerRun") -> list[str]:
    """One line per failure: each failed agent (agent, action, error), then the telemetry's."""
    lines = [f"error: {o.error}" for o in run.failures]
    if run.telemetry.error is not None:
        lines.append(f"error: telemetry to {run.telemetry.target} failed: {run.telemetry.error}")
    if run.telemetry.refused:
        lines.append(f"error: the daemon at {run.telemetry.target} refused {run.telemetry.refused} record(s) of run "
                     f"{run.run_id}, so the run lacks them: {run.telemetry.first_refusal}")
    return lines


def print_run_report(run: "ContainerRun", stream: IO[str]) -> None:
    """The summary table, where telemetry went, and each failure."""
    print(file=stream)
    print(summary_table(run.summary_rows()), file=stream)
    print(describe_telemetry(run), file=stream)
    stream.flush()
    for line in describe_failures(run):
        say_on_stderr(line)
