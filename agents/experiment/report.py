"""Turn an experiment's cell files into results.csv, summary.md and learning_curves.png.

Units: an agent is a row of results.csv; for statistics the unit is the *cell* (one seed of one
condition), because the agents of one cell are not independent of each other (they share). A
cell's final greedy success is the mean of its agents'; a cell reached the threshold at the
episode by which *all* its agents had, or never (censored at the budget) if one of them did not.

The comparisons are declared by the design: every condition against the first, on speed to the
threshold and on final greedy success, paired by seed, Holm-corrected together
(agents.experiment.stats). Censored first-passage times are never averaged: the table gives
how many seeds reached the threshold and the Kaplan-Meier median, and speed is compared with a
paired sign test over the seeds whose order is known. A difference that is not significant is
reported as "no difference shown", never as "the same"; below five seeds the summary says that
it can show little.

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
from agents.experiment.stats import Interval, censored_median, holm, mean_interval, paired_censored, paired_difference
from agents.provenance import code_commit

#: Below this many seeds per condition, a summary warns that it can show little.
FEW_SEEDS = 5

CSV_COLUMNS = (
    "experiment", "condition", "kind", "seed", "agent_id", "run_id", "episodes", "episodes_to_threshold",
    "reached_threshold", "total_env_steps", "final_greedy_success", "final_greedy_return", "messages_sent",
    "bytes_sent", "messages_received", "bytes_received", "cell_elapsed_s", "scoring", "success_auc",
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
                    "scoring": agent.get("scoring", "sampled"),
                    "success_auc": _fmt(agent.get("success_auc")),
                }
            )
    return rows


def _fmt(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.4f}"


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = CSV_COLUMNS) -> None:
    """``rows`` as CSV with a header of ``columns``, written atomically (a partial file renamed)."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)


# ------------------------------------------------------------------------ per condition


def _cell_value(cell: dict[str, Any], metric: str) -> float:
    """The mean of a cell's agents (NaN when not measured)."""
    values = [float("nan") if a[metric] is None else float(a[metric]) for a in cell["agents"]]
    return float(np.mean(values))


def exact_scoring(cells: Sequence[dict[str, Any]]) -> bool:
    """Whether every agent was scored by the exact greedy success probability."""
    return bool(cells) and all(a.get("scoring") == "exact" for c in cells for a in c["agents"])


def _cell_passage(cell: dict[str, Any]) -> Optional[float]:
    """The episode by which every agent of the cell reached the threshold; None if one never did."""
    times = [a["episodes_to_threshold"] for a in cell["agents"]]
    return None if any(t is None for t in times) else float(max(times))


def _by_condition(spec: ExperimentSpec, cells: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        grouped[cell["condition"]].append(cell)
    return {c.name: grouped[c.name] for c in spec.conditions if grouped[c.name]}


def _interval_text(interval: Interval, digits: int) -> str:
    if interval.low is None:
        return f"{interval.mean:,.{digits}f} (one seed: no interval)"
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
    exact = exact_scoring(cells)
    if exact:
        measure = (f"the first greedy evaluation (every {threshold.eval_every} episodes) from which the greedy policy's "
                   f"exact success probability (computed from the environment's transition model, no sampling noise) "
                   f"stays at or above {threshold.value:g} to the end of the budget")
    lines = [f"# Experiment `{spec.name}`", ""]
    if spec.question:
        lines += [spec.question, ""]
    lines += [f"Written by commit {code_commit()}; cells run by {', '.join(cell_commits(cells))}.", ""]
    if spec.quick:
        lines += ["**Caution.** Quick mode (the file's [quick] sizes): a check of direction with few seeds and episodes, "
                  "not a result.", ""]
    lines += [
        f"- Environment: `{spec.env_id}` {json.dumps(spec.env_kwargs)}; {spec.learners} agents per cell; budget {budget:,} episodes per agent.",
        f"- Seeds: {', '.join(map(str, spec.seeds))} ({len(spec.seeds)} per condition). Hyperparameters: {json.dumps(spec.hyperparameters)}.",
        f"- Threshold: {threshold.value:g} ({source}); an agent reaches it at {measure}. A seed (cell) reaches it when all "
        "its agents have; a seed that did not within the budget is censored there, never averaged as if it had.",
        "- Each cell is a real container: SPADE agents on an embedded XMPP server, plans from `asl/`, telemetry to the daemon. "
        "The seed is the unit: means over seeds with 95% t intervals (success clipped to [0, 1]); a cell's success is the mean of its agents.",
        *([f"- Success is exact: the greedy policy's success probability at the last evaluation; learning speed is also "
           f"scored by the area under the exact success curve (the mean over the evaluations every "
           f"{threshold.eval_every} episodes, 1.0 at most)."] if exact else []),
        "",
        "| condition | kind | seeds | reached threshold | median episodes to threshold (Kaplan-Meier) | final greedy success | "
        + ("area under the success curve | " if exact else "")
        + "env steps per agent | messages sent per agent | bytes sent per agent |",
        "| --- | --- | --- | --- | --- | --- | " + ("--- | " if exact else "") + "--- | --- | --- |",
    ]
    for name, group in grouped.items():
        passages = [_cell_passage(c) for c in group]
        median = censored_median(passages, budget)
        lines.append(
            f"| {name} | {group[0]['kind']} | {len(group)} | {sum(p is not None for p in passages)}/{len(group)} seeds "
            f"| {'not reached by half the seeds' if median is None else f'{median:,.0f}'} "
            f"| {_interval_text(mean_interval([_cell_value(c, 'final_greedy_success') for c in group], (0.0, 1.0)), 3)} "
            + (f"| {_interval_text(mean_interval([_cell_value(c, 'success_auc') for c in group], (0.0, 1.0)), 3)} " if exact else "")
            + f"| {_interval_text(mean_interval([_cell_value(c, 'steps') for c in group], (0.0, math.inf)), 0)} "
            f"| {_interval_text(mean_interval([_cell_value(c, 'messages_sent') for c in group], (0.0, math.inf)), 0)} "
            f"| {_interval_text(mean_interval([_cell_value(c, 'bytes_sent') for c in group], (0.0, math.inf)), 0)} |"
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


def comparisons(spec: ExperimentSpec, grouped: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The declared comparisons (every condition against the first: speed to the threshold,
    final greedy success), paired by seed, with Holm-adjusted p-values and verdicts."""
    names = list(grouped)
    out: list[dict[str, Any]] = []
    if len(names) < 2:
        return out
    baseline = names[0]
    base = {c["seed"]: c for c in grouped[baseline]}
    for name in names[1:]:
        pairs = [(c, base[c["seed"]]) for c in grouped[name] if c["seed"] in base]
        if not pairs:
            continue
        speed = paired_censored([_cell_passage(c) for c, _ in pairs], [_cell_passage(b) for _, b in pairs])
        out.append({"condition": name, "baseline": baseline, "measure": "speed", "seeds": len(pairs), "test": speed,
                    "p": speed.p})
        for measure, metric in (("success", "final_greedy_success"), ("success_auc", "success_auc")):
            if metric == "success_auc" and not exact_scoring([c for pair in pairs for c in pair]):
                continue
            values = [(_cell_value(c, metric), _cell_value(b, metric)) for c, b in pairs]
            values = [(x, y) for x, y in values if not (math.isnan(x) or math.isnan(y))]
            if values:
                difference, p = paired_difference([x for x, _ in values], [y for _, y in values], (-1.0, 1.0))
                out.append({"condition": name, "baseline": baseline, "measure": measure, "seeds": len(values),
                            "difference": difference, "p": p})
    for comparison, adjusted in zip(out, holm([c["p"] for c in out])):
        comparison["p_holm"] = adjusted
    return out


def comparison_sentences(spec: ExperimentSpec, grouped: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Plain sentences for the declared comparisons (see `comparisons`)."""
    declared = comparisons(spec, grouped)
    if not declared:
        return ["Only one condition has results: nothing to compare."]
    out = [f"Declared comparisons: every condition against {declared[0]['baseline']}, on speed to the threshold "
           f"(paired sign test over the seeds whose order is known), on final greedy success and, where success is "
           f"exact, on the area under the success curve (paired t-tests); "
           f"{len(declared)} p-values, Holm-corrected together.", ""]
    seeds = min(len(group) for group in grouped.values())
    if seeds < FEW_SEEDS:
        out += [f"**Caution:** {seeds} seed(s) per condition: too few to show any but very large differences; "
                "read the numbers as a description of this run.", ""]
    for c in declared:
        out += [_speed_sentence(c, spec.episodes) if c["measure"] == "speed" else _success_sentence(c), ""]
    return out


def _verdict(p_holm: Optional[float]) -> str:
    if p_holm is None:
        return "not testable"
    if p_holm < 0.05:
        return f"significant after Holm's correction (adjusted p = {p_holm:.3g})"
    return f"no difference shown (adjusted p = {p_holm:.3g}; this is not evidence that they are the same)"


def _speed_sentence(c: dict[str, Any], budget: int) -> str:
    test = c["test"]
    name, baseline = c["condition"], c["baseline"]
    if test.p is None:
        return (f"**Speed ({name} vs {baseline}):** in none of the {c['seeds']} paired seeds is one condition known to "
                f"have reached the threshold first (neither did within {budget:,} episodes, or both at the same one): "
                "this run cannot say which learns faster by that measure.")
    return (f"**Speed ({name} vs {baseline}):** {name} reached the threshold first in {test.first_a} seed(s), "
            f"{baseline} in {test.first_b}, {test.ties} without an order; {_verdict(c['p_holm'])}.")


def _success_sentence(c: dict[str, Any]) -> str:
    d: Interval = c["difference"]
    interval = "" if d.low is None else f" (95% interval {d.low:+.3f} to {d.high:+.3f})"
    what = "Area under the success curve" if c["measure"] == "success_auc" else "Final greedy success"
    return (f"**{what} ({c['condition']} vs {c['baseline']}):** a difference of {d.mean:+.3f} "
            f"per seed{interval} over {c['seeds']} paired seeds; {_verdict(c['p_holm'])}.")


def summary_json(spec: ExperimentSpec, cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What summary.md says, machine-readable: per condition and metric the mean, interval and
    seeds; per comparison the estimate, interval, p, adjusted p and verdict."""
    grouped = _by_condition(spec, cells)
    conditions = {}
    for name, group in grouped.items():
        passages = [_cell_passage(c) for c in group]
        conditions[name] = {
            "seeds": [c["seed"] for c in group],
            "reached_threshold": sum(p is not None for p in passages),
            "median_episodes_to_threshold": censored_median(passages, spec.episodes),
            "final_greedy_success": mean_interval([_cell_value(c, "final_greedy_success") for c in group], (0.0, 1.0)).as_dict(),
            "success_auc": (mean_interval([_cell_value(c, "success_auc") for c in group], (0.0, 1.0)).as_dict()
                            if exact_scoring(group) else None),
            "scoring": "exact" if exact_scoring(group) else "sampled",
            "bytes_sent_per_agent": mean_interval([_cell_value(c, "bytes_sent") for c in group], (0.0, math.inf)).as_dict(),
        }
    declared = []
    for c in comparisons(spec, grouped):
        entry = {key: c[key] for key in ("condition", "baseline", "measure", "seeds", "p", "p_holm")}
        entry["verdict"] = _verdict(c["p_holm"])
        if c["measure"] == "speed":
            entry.update(first_condition=c["test"].first_a, first_baseline=c["test"].first_b, ties=c["test"].ties)
        else:
            entry["difference"] = c["difference"].as_dict()
        declared.append(entry)
    return {"experiment": spec.name, "commit": code_commit(), "cell_commits": cell_commits(cells), "quick": spec.quick,
            "budget": spec.episodes, "conditions": conditions, "comparisons": declared}


def cell_commits(cells: Sequence[dict[str, Any]]) -> list[str]:
    """The commits of the code that ran the cells ("unknown" for cells from before they were recorded)."""
    return sorted({c.get("commit", "unknown") for c in cells})


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
        band(left, x, per_seed, name)
        if evaluations:
            points = [np.array([np.mean([_success_point(a["evaluations"][i]) for a in cell["agents"]]) for i in range(min(len(a["evaluations"]) for a in cell["agents"]))]) for cell in group]
            length = min(len(p) for p in points)
            if length:
                x_eval = np.array([p[0] for p in group[0]["agents"][0]["evaluations"][:length]])
                band(axes[0][1], x_eval, np.array([p[:length] for p in points]), name, bounds=(0.0, 1.0))
    left.set_title(f"training return (mean of {width}-episode bins)")
    left.set_xlabel("episodes")
    left.set_ylabel("return")
    left.legend()
    if evaluations:
        right = axes[0][1]
        right.axhline(spec.threshold.value, color="grey", linestyle="--", linewidth=1, label=f"threshold {spec.threshold.value:g}")
        right.set_title("greedy success (exact probability)" if exact_scoring(cells)
                        else f"greedy success ({spec.threshold.eval_episodes} episodes)")
        right.set_xlabel("episodes")
        right.set_ylabel("success rate")
        right.legend()
    figure.suptitle(f"{spec.name}: mean over {len(spec.seeds)} seeds, band = 95% CI")
    figure.tight_layout()
    save_figure(figure, path)


def save_figure(figure: Any, path: Path) -> None:
    """Write ``figure`` as a PNG at ``path`` atomically (a hidden file renamed) and close it."""
    import matplotlib.pyplot as plt

    partial = path.with_name("." + path.name)
    figure.savefig(partial, format="png", dpi=110)
    plt.close(figure)
    partial.replace(path)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a partial file renamed into place: a reader never sees half a report."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _success_point(point: Sequence[Any]) -> float:
    """An evaluation's success: exact (its fifth entry) where measured, else the sampled rate."""
    return point[4] if len(point) > 4 and point[4] is not None else point[2]


def band(axis, x: np.ndarray, runs: np.ndarray, label: str, bounds: tuple[float, float] = (-np.inf, np.inf)) -> None:
    """The mean over runs, and its 95% CI as a band (clipped to what the quantity can be)."""
    mean = runs.mean(axis=0)
    line = axis.plot(x, mean, label=label)[0]
    if len(runs) > 1:
        intervals = [mean_interval(list(column), bounds) for column in runs.T]
        axis.fill_between(x, [i.low for i in intervals], [i.high for i in intervals], color=line.get_color(), alpha=0.2)


def write_reports(spec: ExperimentSpec, out_dir: Path, *, store_path: Optional[Path] = None) -> list[Path]:
    """results.csv, summary.md, summary.json and learning_curves.png from the cells found in out_dir."""
    cells = load_cells(spec, out_dir)
    results, summary, curves = out_dir / "results.csv", out_dir / "summary.md", out_dir / "learning_curves.png"
    write_csv(results, csv_rows(cells))
    machine = out_dir / "summary.json"
    machine.write_text(json.dumps(summary_json(spec, cells), indent=2) + "\n", encoding="utf-8")
    write_text_atomically(summary, summary_markdown(spec, cells, store_path))
    write_curves(spec, cells, curves)
    return [results, summary, machine, curves]
