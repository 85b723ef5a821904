"""Tan (1993)'s measures across seeds, and the cost of coordination: `tan_summary.json` and
`tan_summary.md` for an experiment of Tan conditions (kind ``tan``).

The first condition of the experiment is the baseline (alone / independent hunters); every
other condition is compared with it, paired by seed (the same agents' seeds and the same test
trials in every condition of a seed), on Tan's three measures: the early mean (first `window`
training trials), the late mean (last `window`) and the test mean (steps per trial, fewer is
better). These comparisons are declared by the design, not chosen after looking: their p-values
(paired t-test, scipy.stats.ttest_rel) are Holm-corrected together. A difference whose
interval includes zero is reported as "no difference shown", never as "the same". A mean that
includes trials cut off at the limit counts them at the limit: it is a lower bound, and says
how many it includes.

Cost (coordination messages only; the environment's I/O is reported apart): per training step
the messages, body bytes, stanza bytes and information bits the agents told each other during
the training trials (the test trials' messages are counted apart and left out), and per step
saved against the baseline (training steps of the baseline minus the condition's, per
seed) the stanza bytes it cost; where no steps were saved the cost per step saved is not given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from agents.experiment.spec import ExperimentSpec
from agents.experiment.stats import holm, mean_interval, paired_difference
from agents.experiment.tan_metrics import crossover_trial

MEASURES = ("early", "late", "test")
CENSORED = {"early": "early_censored", "late": "late_censored", "test": "test_censored"}
SUMMARY_JSON = "tan_summary.json"
SUMMARY_MD = "tan_summary.md"


def interval(values: Sequence[float]) -> dict[str, Optional[float]]:
    """Mean and t-based 95% interval over seeds (no interval below two seeds)."""
    return mean_interval(values).as_dict()


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[dict, Optional[float]]:
    difference, p = paired_difference(a, b)
    return difference.as_dict(), p


def tan_summary(spec: ExperimentSpec, cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary as a JSON-ready dict (cells: the cell result files' contents)."""
    names = [c.name for c in spec.conditions]
    by_condition = {n: sorted((c for c in cells if c["condition"] == n), key=lambda c: c["seed"]) for n in names}
    baseline = names[0]
    base_seeds = {c["seed"]: c for c in by_condition[baseline]}
    conditions = {}
    for name in names:
        group = by_condition[name]
        if not group:
            continue
        metrics = [c["tan"]["metrics"] for c in group]
        steps = [m["training_steps"] for m in metrics]
        coordination = [_training(c, "coordination") for c in group]
        environment = [_training(c, "environment") for c in group]
        curves = np.array([m["blocks"] for m in metrics], dtype=float)
        entry: dict[str, Any] = {
            "seeds": [c["seed"] for c in group],
            "measures": {m: {**interval([x[m] for x in metrics]), "censored_trials": sum(x[CENSORED[m]] for x in metrics)} for m in MEASURES},
            "blocks_mean": [float(v) for v in curves.mean(axis=0)],
            "block": metrics[0]["block"],
            "training_censored": sum(m["training_censored"] for m in metrics),
            "cell_seconds": [c["elapsed_s"] for c in group],
            "per_step": {
                channel: {key: float(np.mean([t[key] / s for t, s in zip(totals, steps)])) for key in ("count", "body_bytes", "stanza_bytes", "bits")}
                for channel, totals in (("coordination", coordination), ("environment", environment))
            },
            "by_kind": _kinds(group),
        }
        if name != baseline:
            paired = [(c, base_seeds[c["seed"]]) for c in group if c["seed"] in base_seeds]
            saved = [b["tan"]["metrics"]["training_steps"] - c["tan"]["metrics"]["training_steps"] for c, b in paired]
            cost = [_training(c, "coordination")["stanza_bytes"] for c, _ in paired]
            entry["steps_saved"] = interval(saved) if saved else None
            mean_saved = float(np.mean(saved)) if saved else 0.0
            entry["stanza_bytes_per_step_saved"] = float(np.mean(cost)) / mean_saved if mean_saved > 0 else None
            entry["crossover_trial"] = crossover_trial(entry["blocks_mean"], [float(v) for v in np.mean([b["tan"]["metrics"]["blocks"] for _, b in paired], axis=0)], entry["block"]) if paired else None
        conditions[name] = entry
    comparisons = []
    for name in names[1:]:
        paired = [(c, base_seeds[c["seed"]]) for c in by_condition[name] if c["seed"] in base_seeds]
        if len(paired) < 1:
            continue
        for measure in MEASURES:
            diff, p = _paired([c["tan"]["metrics"][measure] for c, _ in paired], [b["tan"]["metrics"][measure] for _, b in paired])
            comparisons.append({"condition": name, "baseline": baseline, "measure": measure, "difference": diff, "p": p})
    for comparison, adjusted in zip(comparisons, holm([c["p"] for c in comparisons])):
        comparison["p_holm"] = adjusted
        comparison["verdict"] = _verdict(comparison["difference"], adjusted)
    return {
        "experiment": spec.name,
        "question": spec.question,
        "baseline": baseline,
        "training_trials": spec.episodes,
        "test_trials": spec.final_eval_episodes,
        "world": spec.env_kwargs,
        "jobs": spec.jobs,
        "conditions": conditions,
        "comparisons": comparisons,
    }


def _training(cell: dict[str, Any], channel: str) -> dict[str, float]:
    """A channel's sent messages during the training trials (all minus the test trials')."""
    total, test = cell["tan"]["messages"][channel], cell["tan"]["test_messages"][channel]
    return {key: total[key] - test[key] for key in ("count", "body_bytes", "stanza_bytes", "bits")}


def _kinds(group: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    kinds: dict[str, dict[str, float]] = {}
    for cell in group:
        for kind, cost in cell["tan"]["messages"]["by_kind"].items():
            into = kinds.setdefault(kind, {"count": 0, "body_bytes": 0, "stanza_bytes": 0, "bits": 0.0})
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


def _num(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# {summary['experiment']}: Tan (1993) measures", ""]
    if summary["question"]:
        lines += [summary["question"], ""]
    lines += [
        f"{summary['training_trials']} training trials then {summary['test_trials']} test trials per seed; steps per trial, "
        "fewer is better; 95% intervals over seeds (t). Test trials: the learned tables, no learning, the same Boltzmann "
        "choice as in training (T = 0.4): a greedy hunter in the unseen state takes the same action for ever, into a wall.",
        "A mean with censored trials (cut off at the limit, counted as the limit) is a lower bound.",
        "",
        "| condition | early | late | test | censored (train/test) | crossover trial | coord. stanza B/training step | coord. bits/training step | env. stanza B/training step | coord. stanza B per training step saved |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in summary["conditions"].items():
        m = c["measures"]
        cells = [f"{_num(m[k]['mean'])} [{_num(m[k]['low'])}, {_num(m[k]['high'])}]" for k in MEASURES]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {c['training_censored']}/{m['test']['censored_trials']} | "
            f"{_num(c.get('crossover_trial'), 0) if name != summary['baseline'] else 'baseline'} | "
            f"{_num(c['per_step']['coordination']['stanza_bytes'])} | {_num(c['per_step']['coordination']['bits'], 2)} | "
            f"{_num(c['per_step']['environment']['stanza_bytes'])} | {_num(c.get('stanza_bytes_per_step_saved'))} |"
        )
    lines += ["", f"Comparisons with {summary['baseline']} (condition minus baseline, paired by seed; p Holm-corrected over all {len(summary['comparisons'])}):", ""]
    lines += ["| condition | measure | difference [95% CI] | p (Holm) | verdict |", "|---|---|---|---|---|"]
    for comp in summary["comparisons"]:
        d = comp["difference"]
        lines.append(f"| {comp['condition']} | {comp['measure']} | {_num(d['mean'])} [{_num(d['low'])}, {_num(d['high'])}] | {_num(comp['p_holm'], 4)} | {comp['verdict']} |")
    lines += ["", "Messages per cell by kind, training and test trials (mean over seeds; coordination kinds: sensation, location, q_table, transitions; the rest is environment I/O):", ""]
    lines += ["| condition | kind | count | body bytes | stanza bytes | information bits |", "|---|---|---|---|---|---|"]
    for name, c in summary["conditions"].items():
        for kind, cost in sorted(c["by_kind"].items()):
            lines.append(f"| {name} | {kind} | {cost['count']:.0f} | {cost['body_bytes']:.0f} | {cost['stanza_bytes']:.0f} | {cost['bits']:.0f} |")
    return "\n".join(lines) + "\n"


def write_tan_summary(spec: ExperimentSpec, out_dir: Path) -> list[Path]:
    """Write tan_summary.json and tan_summary.md from the finished cells in out_dir/cells."""
    cells = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out_dir / "cells").glob("*.json"))]
    cells = [c for c in cells if c.get("digest") == spec.digest() and c.get("tan")]
    if not cells:
        return []
    summary = tan_summary(spec, cells)
    json_path, md_path = out_dir / SUMMARY_JSON, out_dir / SUMMARY_MD
    json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(summary_markdown(summary), encoding="utf-8")
    return [json_path, md_path]
