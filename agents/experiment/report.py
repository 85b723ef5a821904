"""Turn an experiment's cell files into results.csv, summary.md and learning_curves.png.

Units: an agent is a row of results.csv; for statistics the unit is the *cell* (one seed of one
condition), whose value is the mean over its agents, because the agents of one cell are not
independent of each other (they share). Means come with t-based 95% confidence intervals over
seeds, comparisons with Welch's t-test (agents.experiment.stats).

"Episodes to threshold" of an agent that never reached it within the budget is censored at the
budget for the means and tests (the summary says how many reached it), so a condition is never
flattered by leaving out the agents that failed.

When the daemon's store is at hand, the summary also checks that it holds exactly the messages
(count, direction, bytes, per agent) that the results count, cell by cell.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from agents.experiment.spec import ExperimentSpec
from agents.experiment.stats import mean_interval, welch_test

CSV_COLUMNS = (
    "experiment", "condition", "kind", "seed", "agent_id", "run_id", "episodes", "episodes_to_threshold",
    "reached_threshold", "total_env_steps", "final_greedy_success", "final_greedy_return", "messages_sent",
    "bytes_sent", "messages_received", "bytes_received", "cell_elapsed_s",
)


def load_cells(spec: ExperimentSpec, out_dir: Path) -> list[dict[str, Any]]:
    """The cell results of `spec` found in out_dir/cells, in the spec's order."""
    cells = []
    for condition, seed in spec.cells():
        path = out_dir / "cells" / f"{condition.name}__seed{seed}.json"
        if path.exists():
            cells.append(json.loads(path.read_text(encoding="utf-8")))
    return cells


def csv_rows(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for cell in cells:
        for agent in cell["agents"]:
            reached = agent["episodes_to_threshold"]
            rows.append(
                {
                    "experiment": cell["experiment"],
                    "condition": cell["condition"],
                    "kind": cell["kind"],
                    "seed": cell["seed"],
                    "agent_id": agent["agent_id"],
                    "run_id": cell["run_id"],
                    "episodes": agent["episodes"],
                    "episodes_to_threshold": "" if reached is None else reached,
                    "reached_threshold": int(reached is not None),
                    "total_env_steps": agent["steps"],
                    "final_greedy_success": _fmt(agent["final_greedy_success"]),
                    "final_greedy_return": _fmt(agent["final_greedy_return"]),
                    "messages_sent": agent["messages_sent"],
                    "bytes_sent": agent["bytes_sent"],
                    "messages_received": agent["messages_received"],
                    "bytes_received": agent["bytes_received"],
                    "cell_elapsed_s": cell["elapsed_s"],
                }
            )
    return rows


def _fmt(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.4f}"


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)


# ------------------------------------------------------------------------ per condition


def _cell_value(cell: dict[str, Any], metric: str, budget: int) -> float:
    values = []
    for agent in cell["agents"]:
        value = agent[metric]
        if metric == "episodes_to_threshold" and value is None:
            value = budget
        values.append(float("nan") if value is None else float(value))
    return float(np.mean(values))


def _by_condition(spec: ExperimentSpec, cells: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        grouped[cell["condition"]].append(cell)
    return {c.name: grouped[c.name] for c in spec.conditions if grouped[c.name]}


def _interval_text(values: Sequence[float], digits: int) -> str:
    interval = mean_interval(values)
    if interval.half_width is None:
        return f"{interval.mean:,.{digits}f}"
    return f"{interval.mean:,.{digits}f} [{interval.low:,.{digits}f}, {interval.high:,.{digits}f}]"


def _telemetry_check(cells: Sequence[dict[str, Any]], store_path: Optional[Path]) -> Optional[str]:
    if store_path is None or not store_path.exists():
        return None
    from telemetry.store import TelemetryStore

    store = TelemetryStore(store_path, create=False)
    try:
        mismatches, total = [], 0
        for cell in cells:
            held = stored_message_totals(store, cell["run_id"])
            agents = list(cell["agents"]) + ([cell["world"]] if cell.get("world") else [])
            for agent in agents:
                counted = (agent["messages_sent"], agent["bytes_sent"], agent["messages_received"], agent["bytes_received"])
                total += counted[0] + counted[2]
                if held.get(agent["agent_id"], (0, 0, 0, 0)) != counted:
                    mismatches.append(f"{cell['condition']} seed {cell['seed']} {agent['agent_id']}: counted {counted}, stored {held.get(agent['agent_id'])}")
    finally:
        store.close()
    if mismatches:
        return "Telemetry check FAILED: the daemon's store disagrees with these results: " + "; ".join(mismatches)
    return (
        f"Telemetry check: the daemon's store ({store_path.name}) holds exactly the {total:,} coordination messages "
        f"(sent and received, with their bytes, per agent) counted in these results, for all {len(cells)} cells."
    )


def stored_message_totals(store: Any, run_id: str) -> dict[str, tuple[int, int, int, int]]:
    """Per agent_id: (sent, sent bytes, received, received bytes) as the daemon's store holds them."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    since = 0
    while page := store.read_messages(run_id, since_seq=since, limit=50_000):
        for row in page:
            slot = totals[row.agent_id]
            offset = 0 if row.direction == "sent" else 2
            slot[offset] += 1
            slot[offset + 1] += row.bytes
        since = page[-1].seq_id
    return {agent: tuple(values) for agent, values in totals.items()}


def summary_markdown(spec: ExperimentSpec, cells: Sequence[dict[str, Any]], store_path: Optional[Path]) -> str:
    grouped = _by_condition(spec, cells)
    budget = spec.episodes
    threshold = spec.threshold
    measure = (
        f"the first greedy evaluation (every {threshold.eval_every} episodes, {threshold.eval_episodes} greedy episodes) "
        f"with a success rate of at least {threshold.value:g}"
        if threshold.measure == "greedy_evaluation"
        else f"the first episode at which the last {threshold.window} training episodes' success rate is at least {threshold.value:g}"
    )
    source = "the environment's registered reward_threshold" if threshold.source == "registered" else "set in the experiment file"
    lines = [f"# Experiment `{spec.name}`", ""]
    if spec.question:
        lines += [spec.question, ""]
    lines += [
        f"- Environment: `{spec.env_id}` {json.dumps(spec.env_kwargs)}; {spec.learners} agents per cell; budget {budget:,} episodes per agent.",
        f"- Seeds: {', '.join(map(str, spec.seeds))} ({len(spec.seeds)} per condition). Hyperparameters: {json.dumps(spec.hyperparameters)}.",
        f"- Threshold: {threshold.value:g} ({source}); episodes to threshold = {measure}. "
        f"Agents that never reached it count as {budget:,} (the budget).",
        "- Each cell is a real container: SPADE agents on an embedded XMPP server, plans from `asl/`, telemetry to the daemon. "
        "Means over seeds (a cell's value is the mean of its agents) with 95% confidence intervals (t distribution).",
        "",
        "| condition | kind | cells | reached threshold | episodes to threshold | final greedy success | env steps per agent | messages sent per agent | bytes sent per agent |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, group in grouped.items():
        agents = [a for cell in group for a in cell["agents"]]
        reached = sum(a["episodes_to_threshold"] is not None for a in agents)
        lines.append(
            f"| {name} | {group[0]['kind']} | {len(group)} | {reached}/{len(agents)} agents "
            f"| {_interval_text([_cell_value(c, 'episodes_to_threshold', budget) for c in group], 0)} "
            f"| {_interval_text([_cell_value(c, 'final_greedy_success', budget) for c in group], 3)} "
            f"| {_interval_text([_cell_value(c, 'steps', budget) for c in group], 0)} "
            f"| {_interval_text([_cell_value(c, 'messages_sent', budget) for c in group], 0)} "
            f"| {_interval_text([_cell_value(c, 'bytes_sent', budget) for c in group], 0)} |"
        )
    lines += ["", "## Comparisons", ""]
    lines += comparison_sentences(spec, grouped)
    check = _telemetry_check(cells, store_path)
    if check:
        lines += ["", check]
    missing = len(spec.cells()) - len(cells)
    if missing:
        lines += ["", f"**Incomplete:** {missing} of {len(spec.cells())} cells have no result yet; rerun the experiment to finish them."]
    return "\n".join(lines) + "\n"


def comparison_sentences(spec: ExperimentSpec, grouped: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Plain sentences for every pair of conditions (each later one against each earlier one,
    in the file's order): which was faster to the threshold, and which ended with the better
    greedy success, each with the difference's 95% CI and Welch's test."""
    names = list(grouped)
    if len(names) < 2:
        return ["Only one condition has results: nothing to compare."]
    budget = spec.episodes
    out = []
    for j, name in enumerate(names):
        for baseline in names[:j]:
            a = [_cell_value(c, "episodes_to_threshold", budget) for c in grouped[name]]
            b = [_cell_value(c, "episodes_to_threshold", budget) for c in grouped[baseline]]
            sa = [_cell_value(c, "final_greedy_success", budget) for c in grouped[name]]
            sb = [_cell_value(c, "final_greedy_success", budget) for c in grouped[baseline]]
            out += [_speed_sentence(name, baseline, a, b, budget), "", _success_sentence(name, baseline, sa, sb), ""]
    return out


def _significance(test) -> str:
    if test is None:
        return "too few seeds to test"
    verdict = "significant" if test.p < 0.05 else "not significant"
    return f"{verdict} at the 5% level (Welch's t-test, t = {test.t:.2f}, df = {test.df:.1f}, p = {test.p:.3g})"


def _speed_sentence(name: str, baseline: str, a: list[float], b: list[float], budget: int) -> str:
    if all(v >= budget for v in a + b):
        return (
            f"**Speed ({name} vs {baseline}):** no agent of either condition reached the threshold within {budget:,} episodes, "
            f"so this run cannot say which one learns faster by that measure; see final greedy success below."
        )
    test = welch_test(a, b)
    ma, mb = float(np.mean(a)), float(np.mean(b))
    faster, slower = (name, baseline) if ma < mb else (baseline, name)
    ci = f" (95% CI of the difference {name} - {baseline}: {test.low:,.0f} to {test.high:,.0f})" if test else ""
    if ma == mb:
        return f"**Speed ({name} vs {baseline}):** both took {ma:,.0f} episodes to the threshold on average; no difference."
    return (
        f"**Speed ({name} vs {baseline}):** {faster} reached the threshold faster on average: {min(ma, mb):,.0f} against "
        f"{max(ma, mb):,.0f} episodes for {slower}, a difference of {abs(ma - mb):,.0f} episodes{ci}; "
        f"the difference is {_significance(test)}."
        + ("" if test is None or test.p < 0.05 else f" With {len(a)} seeds this is no evidence that either condition is faster.")
    )


def _success_sentence(name: str, baseline: str, a: list[float], b: list[float]) -> str:
    a = [v for v in a if not math.isnan(v)]
    b = [v for v in b if not math.isnan(v)]
    if not a or not b:
        return f"**Final greedy success ({name} vs {baseline}):** not measured."
    test = welch_test(a, b)
    ma, mb = float(np.mean(a)), float(np.mean(b))
    ci = f" (95% CI of the difference: {test.low:+.3f} to {test.high:+.3f})" if test else ""
    return (
        f"**Final greedy success ({name} vs {baseline}):** {ma:.3f} against {mb:.3f}, a difference of {ma - mb:+.3f}{ci}; "
        f"the difference is {_significance(test)}."
    )


# ------------------------------------------------------------------------ curves


def _binned(values: Sequence[float], width: int, length: int) -> np.ndarray:
    data = np.full(length, np.nan)
    data[: len(values)] = values
    usable = (length // width) * width
    return np.nanmean(data[:usable].reshape(-1, width), axis=1)


def write_curves(spec: ExperimentSpec, cells: Sequence[dict[str, Any]], path: Path) -> None:
    """Training return against episodes per condition (mean over seeds, 95% band); with greedy
    evaluations, a second panel of greedy success against episodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = _by_condition(spec, cells)
    width = max(1, spec.episodes // 60)
    evaluations = spec.threshold.measure == "greedy_evaluation"
    figure, axes = plt.subplots(1, 2 if evaluations else 1, figsize=(12 if evaluations else 7, 4.5), squeeze=False)
    left = axes[0][0]
    for name, group in grouped.items():
        per_seed = np.array([np.mean([_binned(a["returns"], width, spec.episodes) for a in cell["agents"]], axis=0) for cell in group])
        x = (np.arange(per_seed.shape[1]) + 1) * width
        _band(left, x, per_seed, name)
        if evaluations:
            points = [np.array([np.mean([a["evaluations"][i][2] for a in cell["agents"]]) for i in range(min(len(a["evaluations"]) for a in cell["agents"]))]) for cell in group]
            length = min(len(p) for p in points)
            if length:
                x_eval = np.array([p[0] for p in group[0]["agents"][0]["evaluations"][:length]])
                _band(axes[0][1], x_eval, np.array([p[:length] for p in points]), name, bounds=(0.0, 1.0))
    left.set_title(f"training return (mean of {width}-episode bins)")
    left.set_xlabel("episodes")
    left.set_ylabel("return")
    left.legend()
    if evaluations:
        right = axes[0][1]
        right.axhline(spec.threshold.value, color="grey", linestyle="--", linewidth=1, label=f"threshold {spec.threshold.value:g}")
        right.set_title(f"greedy success ({spec.threshold.eval_episodes} episodes)")
        right.set_xlabel("episodes")
        right.set_ylabel("success rate")
        right.legend()
    figure.suptitle(f"{spec.name}: mean over {len(spec.seeds)} seeds, band = 95% CI")
    figure.tight_layout()
    partial = path.with_name("." + path.name)
    figure.savefig(partial, format="png", dpi=110)
    plt.close(figure)
    partial.replace(path)


def _band(axis, x: np.ndarray, runs: np.ndarray, label: str, bounds: tuple[float, float] = (-np.inf, np.inf)) -> None:
    """The mean over runs, and its 95% CI as a band (clipped to what the quantity can be)."""
    mean = runs.mean(axis=0)
    line = axis.plot(x, mean, label=label)[0]
    if len(runs) > 1:
        half = np.array([mean_interval(list(column)).half_width for column in runs.T])
        low, high = np.clip(mean - half, *bounds), np.clip(mean + half, *bounds)
        axis.fill_between(x, low, high, color=line.get_color(), alpha=0.2)


def write_reports(spec: ExperimentSpec, out_dir: Path, *, store_path: Optional[Path] = None) -> list[Path]:
    """results.csv, summary.md and learning_curves.png from the cells found in out_dir."""
    cells = load_cells(spec, out_dir)
    results, summary, curves = out_dir / "results.csv", out_dir / "summary.md", out_dir / "learning_curves.png"
    write_csv(results, csv_rows(cells))
    text = summary_markdown(spec, cells, store_path)
    partial = summary.with_name(summary.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(summary)
    write_curves(spec, cells, curves)
    return [results, summary, curves]
