"""The reports of a Tan (1993) experiment (conditions of kind ``tan``): results.csv, summary.json,
summary.md, steps_per_trial.png and cost_benefit.png.

Measures (steps per trial, fewer is better; per seed, from ``agents.experiment.tan_metrics``):
the early mean (first `window` training trials), the late mean (last `window`), the training
mean (all training trials: what Tan's tables give for training) and the test mean.

Comparisons are declared by the design, not chosen after looking: every condition against the
first (the baseline), on every measure, paired by seed (the same seeds and the same test trials
in every condition). Their p-values (paired t-test, scipy.stats.ttest_rel) are Holm-corrected
together. A difference whose interval includes zero reads "no difference shown", never "the
same": sameness is claimed only where the file declares an equivalence margin
(``[report] equivalence_margin``), by a paired TOST on the late and test means, Holm-corrected
as a family of its own. A mean that includes trials cut off at the limit counts them at the
limit: it is a lower bound, and the tables give how many it includes.

Where the file gives the reference's published numbers (``[conditions.reference]``), each
comparison says whether the reference's direction is shown here, only in the estimate, or
contradicted. Fewer than five seeds, quick mode and every declared deviation from the
reference setup are stated at the top of the summary, which also names the commit of the
code that wrote it and of the code that ran its cells.

Cost (coordination messages only; the environment's I/O is reported apart): per training step
the messages, body bytes, stanza bytes and information bits the agents told each other during
the training trials (the test trials' messages are left out), and per step saved against the
baseline (training steps of the baseline minus the condition's, per seed) the stanza bytes it
cost; where no steps were saved the cost per step saved is not given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from agents.experiment.report import band, cell_commits, load_cells, save_figure, write_csv, write_text_atomically
from agents.experiment.spec import ExperimentSpec
from agents.experiment.stats import holm, mean_interval, paired_difference, paired_equivalence
from agents.experiment.tan_metrics import crossover_trial
from agents.provenance import code_commit

MEASURES = ("early", "late", "training", "test")
#: Measures an equivalence margin applies to: where "the same asymptote" is claimed.
EQUIVALENCE_MEASURES = ("late", "test")
CENSORED = {"early": "early_censored", "late": "late_censored", "training": "training_censored",
            "test": "test_censored"}
MIN_SEEDS = 5
COST_KEYS = ("count", "body_bytes", "stanza_bytes", "bits")
CSV_COLUMNS = ["experiment", "condition", "seed", *MEASURES, *CENSORED.values(), "training_steps",
               "coordination_messages", "coordination_stanza_bytes", "environment_stanza_bytes", "elapsed_s",
               "commit"]


def measure(spec: ExperimentSpec, cell: dict[str, Any], name: str) -> float:
    """One cell's value of a measure (steps per trial)."""
    metrics = cell["tan"]["metrics"]
    if name == "training":
        return metrics["training_steps"] / spec.episodes
    return metrics[name]


def _training(cell: dict[str, Any], channel: str) -> dict[str, float]:
    """A channel's sent messages during the training trials (all minus the test trials')."""
    total, test = cell["tan"]["messages"][channel], cell["tan"]["test_messages"][channel]
    return {key: total[key] - test[key] for key in COST_KEYS}


def _kinds(group: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    kinds: dict[str, dict[str, float]] = {}
    for cell in group:
        for kind, cost in cell["tan"]["messages"]["by_kind"].items():
            into = kinds.setdefault(kind, {key: 0.0 for key in COST_KEYS})
            for key in into:
                into[key] += cost[key] / len(group)
    return kinds


def _verdict(diff: dict, p_holm: Optional[float]) -> str:
    if diff["low"] is None:
        return "one seed: no interval"
    if diff["low"] > 0 and p_holm is not None and p_holm < 0.05:
        return "more steps (slower)"
    if diff["high"] < 0 and p_holm is not None and p_holm < 0.05:
        return "fewer steps (faster)"
    return "no difference shown"


def _agreement(reference_difference: float, estimate: float, verdict: str) -> str:
    """How a comparison stands against the reference's direction (its published difference)."""
    if reference_difference == 0:
        return "reference shows no difference"
    fewer = reference_difference < 0
    if verdict.startswith("fewer") or verdict.startswith("more"):
        return "agrees" if verdict.startswith("fewer") == fewer else "disagrees (shown)"
    if estimate == 0:
        return "not shown"
    return "not shown; estimate agrees" if (estimate < 0) == fewer else "not shown; estimate disagrees"


def steps_bounds(cells: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """What steps per trial can be: from 1 to the cut-off (intervals are clipped to it)."""
    return 1.0, float(max(c["tan"]["metrics"]["cutoff"] for c in cells))


def _condition_entry(spec: ExperimentSpec, name: str, group: list[dict], baseline_cells: dict[int, dict]) -> dict:
    steps = [c["tan"]["metrics"]["training_steps"] for c in group]
    bounds = steps_bounds(group)
    curves = np.array([c["tan"]["metrics"]["blocks"] for c in group], dtype=float)
    condition = next(c for c in spec.conditions if c.name == name)
    entry: dict[str, Any] = {
        "seeds": [c["seed"] for c in group],
        "reference": condition.reference,
        "measures": {m: {**mean_interval([measure(spec, c, m) for c in group], bounds).as_dict(),
                         "censored_trials": sum(c["tan"]["metrics"][CENSORED[m]] for c in group)} for m in MEASURES},
        "blocks_mean": [float(v) for v in curves.mean(axis=0)],
        "block": group[0]["tan"]["metrics"]["block"],
        "cell_seconds": [c["elapsed_s"] for c in group],
        "per_step": {channel: {key: float(np.mean([_training(c, channel)[key] / s for c, s in zip(group, steps)]))
                               for key in COST_KEYS} for channel in ("coordination", "environment")},
        "by_kind": _kinds(group),
    }
    paired = [(c, baseline_cells[c["seed"]]) for c in group if c["seed"] in baseline_cells]
    if paired and name != spec.conditions[0].name:
        saved = [(b["tan"]["metrics"]["training_steps"] - c["tan"]["metrics"]["training_steps"]) / spec.episodes
                 for c, b in paired]
        cost = [_training(c, "coordination")["stanza_bytes"] for c, _ in paired]
        entry["steps_saved_per_trial"] = mean_interval(saved, _difference_bounds(bounds)).as_dict()
        total_saved = float(np.mean(saved)) * spec.episodes
        entry["stanza_bytes_per_step_saved"] = float(np.mean(cost)) / total_saved if total_saved > 0 else None
        baseline_curve = np.mean([b["tan"]["metrics"]["blocks"] for _, b in paired], axis=0)
        entry["crossover_trial"] = crossover_trial(entry["blocks_mean"], [float(v) for v in baseline_curve], entry["block"])
    return entry


def _difference_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    """What a difference of two steps-per-trial means can be."""
    return bounds[0] - bounds[1], bounds[1] - bounds[0]


def _comparisons(spec: ExperimentSpec, by_condition: dict[str, list[dict]]) -> list[dict]:
    baseline = spec.conditions[0]
    bounds = _difference_bounds(steps_bounds([c for group in by_condition.values() for c in group]))
    base_cells = {c["seed"]: c for c in by_condition[baseline.name]}
    comparisons: list[dict] = []
    for condition in spec.conditions[1:]:
        paired = [(c, base_cells[c["seed"]]) for c in by_condition[condition.name] if c["seed"] in base_cells]
        if not paired:
            continue
        for name in MEASURES:
            ours = [measure(spec, c, name) for c, _ in paired]
            theirs = [measure(spec, b, name) for _, b in paired]
            difference, p = paired_difference(ours, theirs, bounds)
            entry: dict[str, Any] = {"condition": condition.name, "baseline": baseline.name, "measure": name,
                                     "n_seeds": len(paired), "difference": difference.as_dict(), "p": p}
            if spec.equivalence_margin is not None and name in EQUIVALENCE_MEASURES:
                entry["equivalence"] = {"margin": spec.equivalence_margin,
                                        "p": paired_equivalence(ours, theirs, spec.equivalence_margin)}
            if name in condition.reference and name in baseline.reference:
                entry["reference_difference"] = condition.reference[name] - baseline.reference[name]
            comparisons.append(entry)
    for entry, adjusted in zip(comparisons, holm([c["p"] for c in comparisons])):
        entry["p_holm"] = adjusted
        entry["verdict"] = _verdict(entry["difference"], adjusted)
        if "reference_difference" in entry:
            entry["reference_agreement"] = _agreement(entry["reference_difference"], entry["difference"]["mean"],
                                                      entry["verdict"])
    tested = [c for c in comparisons if "equivalence" in c]
    for entry, adjusted in zip(tested, holm([c["equivalence"]["p"] for c in tested])):
        equivalence = entry["equivalence"]
        equivalence["p_holm"] = adjusted
        equivalence["verdict"] = (f"equivalent within ±{equivalence['margin']:g}" if adjusted is not None and adjusted < 0.05
                                  else "equivalence not shown")
    return comparisons


def _caveats(spec: ExperimentSpec, conditions: dict[str, dict], cells: Sequence[dict]) -> list[str]:
    caveats = []
    if spec.quick:
        caveats.append("Quick mode (the file's [quick] sizes): a check of direction with few seeds and trials, not a result.")
    seeds = min((len(c["seeds"]) for c in conditions.values()), default=0)
    if seeds < MIN_SEEDS:
        caveats.append(f"Only {seeds} seed(s) per condition: intervals are wide and the tests weak; "
                       "read the directions, not the sizes.")
    censored = sum(c["measures"]["training"]["censored_trials"] + c["measures"]["test"]["censored_trials"]
                   for c in conditions.values())
    if censored:
        caveats.append(f"{censored} trial(s) hit the cut-off and count as the cut-off: a mean that includes them is a "
                       "lower bound (the censored column says where).")
    commits = cell_commits(cells)
    if any(commit.endswith("+changes") or commit == "unknown" for commit in commits):
        caveats.append(f"Some cells ran on code that was not a commit ({', '.join(commits)}).")
    return caveats


def tan_summary(spec: ExperimentSpec, cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary as a JSON-ready dict (cells: the cell result files' contents)."""
    names = [c.name for c in spec.conditions]
    by_condition = {n: sorted((c for c in cells if c["condition"] == n), key=lambda c: c["seed"]) for n in names}
    baseline_cells = {c["seed"]: c for c in by_condition[names[0]]}
    conditions = {name: _condition_entry(spec, name, group, baseline_cells)
                  for name, group in by_condition.items() if group}
    return {
        "experiment": spec.name,
        "question": spec.question,
        "commit": code_commit(),
        "cell_commits": cell_commits(cells),
        "quick": spec.quick,
        "baseline": names[0],
        "training_trials": spec.episodes,
        "test_trials": spec.final_eval_episodes,
        "window": spec.threshold.window,
        "world": spec.env_kwargs,
        "jobs": spec.jobs,
        "equivalence_margin": spec.equivalence_margin,
        "reference_source": spec.reference_source,
        "deviations": spec.deviations,
        "caveats": _caveats(spec, conditions, cells),
        "conditions": conditions,
        "comparisons": _comparisons(spec, by_condition),
    }


# ------------------------------------------------------------------------ markdown

def _num(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ci(entry: dict) -> str:
    if entry["low"] is None:
        return _num(entry["mean"])
    return f"{_num(entry['mean'])} [{_num(entry['low'])}, {_num(entry['high'])}]"


def _sentence(comp: dict) -> str:
    d = comp["difference"]
    text = (f"- {comp['condition']} vs {comp['baseline']}, {comp['measure']}: {_num(d['mean'])} steps per trial "
            f"[{_num(d['low'])}, {_num(d['high'])}], {comp['verdict']} (Holm p = {_num(comp['p_holm'], 3)})")
    if "reference_agreement" in comp:
        ref = comp["reference_difference"]
        text += (f"; the reference has {'fewer' if ref < 0 else 'more'} steps ({ref:+.2f}): "
                 f"{comp['reference_agreement']}")
    if "equivalence" in comp:
        text += f"; {comp['equivalence']['verdict']} (TOST Holm p = {_num(comp['equivalence']['p_holm'], 3)})"
    return text + "."


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# {summary['experiment']}: Tan (1993) measures", ""]
    if summary["question"]:
        lines += [summary["question"], ""]
    lines += [f"Written by commit {summary['commit']}; cells run by {', '.join(summary['cell_commits'])}.", ""]
    for caveat in summary["caveats"]:
        lines.append(f"**Caution.** {caveat}")
    if summary["caveats"]:
        lines.append("")
    lines += [
        f"{summary['training_trials']} training trials then {summary['test_trials']} test trials per seed; steps per "
        f"trial, fewer is better; early/late: the first/last {summary['window']} training trials, training: all of "
        "them; 95% t intervals over seeds (the seed is the unit), clipped to what steps per trial can be (1 to the cut-off). Test trials: the learned tables, no learning, the "
        "same Boltzmann choice as in training (T = 0.4): a greedy hunter in the unseen state takes the same action "
        "for ever, into a wall.",
        "",
    ]
    has_reference = any(c["reference"] for c in summary["conditions"].values())
    head = "| condition | seeds | early | late | training | test | censored (train/test) | crossover trial |"
    rule = "|---|---|---|---|---|---|---|---|"
    if has_reference:
        head += " reference (training / late / test) |"
        rule += "---|"
    head += " coord. stanza B per training step | coord. bits per training step | env. stanza B per training step | coord. stanza B per step saved |"
    rule += "---|---|---|---|"
    lines += [head, rule]
    for name, c in summary["conditions"].items():
        m = c["measures"]
        row = (f"| {name} | {len(c['seeds'])} | {' | '.join(_ci(m[k]) for k in MEASURES)} | "
               f"{m['training']['censored_trials']}/{m['test']['censored_trials']} | "
               f"{'baseline' if name == summary['baseline'] else _num(c.get('crossover_trial'), 0)} |")
        if has_reference:
            ref = c["reference"]
            row += f" {' / '.join(_num(ref.get(k), 2) for k in ('training', 'late', 'test'))} |"
        row += (f" {_num(c['per_step']['coordination']['stanza_bytes'])} | {_num(c['per_step']['coordination']['bits'], 2)} | "
                f"{_num(c['per_step']['environment']['stanza_bytes'])} | {_num(c.get('stanza_bytes_per_step_saved'))} |")
        lines.append(row)
    if has_reference:
        lines += ["", f"Reference: {summary['reference_source'] or 'the values given in the experiment file'}."]
    comparisons = summary["comparisons"]
    lines += ["", f"Comparisons with {summary['baseline']} (condition minus baseline, paired by seed; p Holm-corrected "
              f"over all {len(comparisons)}"
              + (f"; equivalence by paired TOST within ±{summary['equivalence_margin']:g} steps per trial, "
                 f"Holm-corrected over its own family" if summary["equivalence_margin"] is not None else
                 "; no equivalence margin declared, so no comparison can conclude \"the same\"") + "):", ""]
    lines += ["| condition | measure | difference [95% CI] | p (Holm) | verdict | equivalence (TOST, Holm p) | reference direction |",
              "|---|---|---|---|---|---|---|"]
    for comp in comparisons:
        equivalence = comp.get("equivalence")
        eq = f"{equivalence['verdict']} ({_num(equivalence['p_holm'], 3)})" if equivalence else "-"
        lines.append(f"| {comp['condition']} | {comp['measure']} | {_ci(comp['difference'])} | {_num(comp['p_holm'], 4)} | "
                     f"{comp['verdict']} | {eq} | {comp.get('reference_agreement', '-')} |")
    lines += ["", "In sentences:", ""] + [_sentence(c) for c in comparisons]
    if summary["deviations"]:
        lines += ["", "Deviations from the reference setup:", ""] + [f"- {d}" for d in summary["deviations"]]
    lines += ["", "Messages per cell by kind, training and test trials (mean over seeds; coordination kinds: sensation, "
              "location, q_table, transitions; the rest is environment I/O):", ""]
    lines += ["| condition | kind | count | body bytes | stanza bytes | information bits |", "|---|---|---|---|---|---|"]
    for name, c in summary["conditions"].items():
        for kind, cost in sorted(c["by_kind"].items()):
            lines.append(f"| {name} | {kind} | {cost['count']:.0f} | {cost['body_bytes']:.0f} | {cost['stanza_bytes']:.0f} | {cost['bits']:.0f} |")
    lines += ["", "Plots: steps_per_trial.png (per-seed block means, their mean and 95% band, the baseline's mean for "
              "reference), cost_benefit.png (steps saved per trial against coordination bytes per step)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ csv and plots

def csv_rows(spec: ExperimentSpec, cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for cell in sorted(cells, key=lambda c: ([x.name for x in spec.conditions].index(c["condition"]), c["seed"])):
        metrics = cell["tan"]["metrics"]
        coordination, environment = _training(cell, "coordination"), _training(cell, "environment")
        rows.append({
            "experiment": cell["experiment"], "condition": cell["condition"], "seed": cell["seed"],
            **{name: round(measure(spec, cell, name), 4) for name in MEASURES},
            **{column: metrics[column] for column in CENSORED.values()},
            "training_steps": metrics["training_steps"],
            "coordination_messages": coordination["count"], "coordination_stanza_bytes": coordination["stanza_bytes"],
            "environment_stanza_bytes": environment["stanza_bytes"], "elapsed_s": cell["elapsed_s"],
            "commit": cell.get("commit", "unknown"),
        })
    return rows


def write_plots(spec: ExperimentSpec, summary: dict[str, Any], cells: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """steps_per_trial.png (one panel per condition: each seed's block means, their mean and 95%
    band, the baseline's mean dashed) and cost_benefit.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in summary["conditions"]]
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.4 * rows), squeeze=False, sharey=True)
    baseline = summary["conditions"][summary["baseline"]]
    block = baseline["block"]
    for axis, name in zip(axes.flat, names):
        curves = np.array([c["tan"]["metrics"]["blocks"] for c in cells if c["condition"] == name], dtype=float)
        x = (np.arange(curves.shape[1]) + 1) * block
        for seed_curve in curves:
            axis.plot(x, seed_curve, color="grey", linewidth=0.6, alpha=0.6)
        band(axis, x, curves, f"{name} (mean, 95% band)")
        if name != summary["baseline"]:
            axis.plot(x, baseline["blocks_mean"][:len(x)], color="black", linestyle="--", linewidth=1,
                      label=f"{summary['baseline']} (mean)")
        axis.set_title(name)
        axis.set_xlabel("training trial")
        axis.set_ylabel(f"steps per trial ({block}-trial blocks)")
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(names):]:
        axis.set_visible(False)
    figure.suptitle(f"{spec.name}: steps per trial, {len(baseline['seeds'])} seeds (grey: one seed each)")
    figure.tight_layout()
    steps_path = out_dir / "steps_per_trial.png"
    save_figure(figure, steps_path)

    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for name in names[1:]:
        c = summary["conditions"][name]
        saved = c.get("steps_saved_per_trial")
        if not saved:
            continue
        cost = c["per_step"]["coordination"]["stanza_bytes"]
        low = saved["mean"] - saved["low"] if saved["low"] is not None else 0
        high = saved["high"] - saved["mean"] if saved["high"] is not None else 0
        axis.errorbar([cost], [saved["mean"]], yerr=[[low], [high]], fmt="o", capsize=4)
        axis.annotate(name, (cost, saved["mean"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xlabel("coordination stanza bytes per training step")
    axis.set_ylabel(f"training steps saved per trial vs {summary['baseline']}")
    axis.set_title(f"{spec.name}: benefit against cost (mean, 95% CI over seeds)")
    figure.tight_layout()
    cost_path = out_dir / "cost_benefit.png"
    save_figure(figure, cost_path)
    return [steps_path, cost_path]


def write_tan_reports(spec: ExperimentSpec, out_dir: Path) -> list[Path]:
    """Write results.csv, summary.json, summary.md, steps_per_trial.png and cost_benefit.png from
    the finished cells in out_dir/cells; [] when there are none."""
    cells = [c for c in load_cells(spec, out_dir) if c.get("tan")]
    if not cells:
        return []
    summary = tan_summary(spec, cells)
    results = out_dir / "results.csv"
    write_csv(results, csv_rows(spec, cells), CSV_COLUMNS)
    json_path, md_path = out_dir / "summary.json", out_dir / "summary.md"
    json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_text_atomically(md_path, summary_markdown(summary))
    return [results, json_path, md_path, *write_plots(spec, summary, cells, out_dir)]
