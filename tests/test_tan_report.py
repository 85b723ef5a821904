"""The Tan experiments' reports: quick mode, reporting-only keys, equivalence (TOST) against
known values, intervals that stay within what steps per trial can be, the caveats, the
reference's direction, and the files a run writes (on hand-made cells)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from agents.experiment.spec import ExperimentError, load_experiment, parse_experiment
from agents.experiment.stats import paired_equivalence
from agents.experiment.tan_metrics import trial_metrics
from agents.experiment.tan_report import tan_summary, write_tan_reports
from envs.multiagent import TAN_ENV_ID

REPO = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted((REPO / "experiments").glob("*.toml"))


def spec_data(**extra) -> dict:
    return {
        "name": "tan-report", "seeds": 3, "env_id": TAN_ENV_ID,
        "env_kwargs": {"size": 5, "hunters": 1, "depth": 1, "scout_depth": 1, "capture": "single", "max_steps": 30},
        "episodes": 8,
        "threshold": {"value": 0.5, "measure": "training_window", "window": 4},
        "final_evaluation": {"episodes": 2, "seed": 7},
        "conditions": [
            {"name": "alone", "kind": "tan", "plan": "asl/coord_tan_independent.asl",
             "reference": {"training": 47.14, "test": 49.49}},
            {"name": "helped", "kind": "tan", "plan": "asl/coord_tan_independent.asl",
             "reference": {"training": 39.78, "test": 32.08}},
        ],
        **extra,
    }


def test_paired_tost_against_known_values():
    # Differences 1, -1, 0.5, -0.5, 0: mean 0, sd 0.7906, se 0.35355; t = 5 / se = 14.142 on
    # 4 degrees of freedom for both one-sided tests. Student's t with 4 degrees of freedom has
    # a closed form, P(T > t) = 1/2 - 3/8 * t / sqrt(1 + t^2/4) * (1 - t^2 / (12 (1 + t^2/4))):
    # p = 7.2564e-5.
    a = [11.0, 9.0, 10.5, 9.5, 10.0]
    b = [10.0] * 5
    assert paired_equivalence(a, b, 5.0) == pytest.approx(7.2564e-5, rel=1e-3)
    # A margin of 1: t = (1 - 0) / se = 2.828, p = 0.0237.
    assert paired_equivalence(a, b, 1.0) == pytest.approx(0.023710, rel=1e-3)
    # Centred far from zero: the upper one-sided test fails.
    assert paired_equivalence([x + 4.5 for x in a], b, 5.0) > 0.05
    assert paired_equivalence([11.0, 11.0], [10.0, 10.0], 5.0) is None   # no variance: nothing to say
    assert paired_equivalence([11.0], [10.0], 5.0) is None
    with pytest.raises(ValueError):
        paired_equivalence(a, b, 0.0)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_shipped_experiment_has_a_quick_mode_of_the_same_conditions(path: Path):
    full, quick = load_experiment(path), load_experiment(path, quick=True)
    assert quick.quick and not full.quick
    assert [c.name for c in quick.conditions] == [c.name for c in full.conditions]
    assert len(quick.seeds) < len(full.seeds) and quick.episodes < full.episodes
    assert quick.final_eval_episodes <= full.final_eval_episodes
    assert quick.digest() != full.digest()          # their cells never mix in one folder
    if path.stem.startswith("tan_"):
        assert full.deviations                       # every Tan file states how it departs from the paper


def test_quick_needs_its_table_and_reporting_keys_do_not_change_the_cells():
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(spec_data(), base_dir=REPO, quick=True)
    assert caught.value.key == "quick"
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(spec_data(quick={"seeds": 2, "episode": 4}), base_dir=REPO, quick=True)
    assert caught.value.key == "quick.episode" and "episodes" in str(caught.value)
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(spec_data(quick={"episodes": 2}), base_dir=REPO, quick=True)
    assert caught.value.key == "quick.episodes"      # fewer than the early/late window
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(spec_data(report={"equivalence_margin": -1}), base_dir=REPO)
    assert caught.value.key == "report.equivalence_margin"
    plain = parse_experiment(spec_data(), base_dir=REPO)
    reported = parse_experiment(spec_data(report={"equivalence_margin": 3.0, "deviations": ["fewer trials"]}),
                                base_dir=REPO)
    assert plain.digest() == reported.digest()


def fake_cell(spec, condition: str, seed: int, training: list[int], test: list[int]) -> dict:
    """A cell result as the runner stores it, from hand-made trial lengths (cut-off 30)."""
    trials = [(s, s < 30) for s in training + test]
    zero = {"count": 0, "body_bytes": 0, "stanza_bytes": 0, "bits": 0}
    sent = {"count": 10, "body_bytes": 100, "stanza_bytes": 400, "bits": 20} if condition == "helped" else zero
    return {
        "experiment": spec.name, "digest": spec.digest(), "commit": "abc1234", "condition": condition,
        "kind": "tan", "seed": seed, "run_id": f"r-{condition}-{seed}", "elapsed_s": 1.0, "agents": [],
        "tan": {"metrics": trial_metrics(trials, len(training), 30, 4, block=4),
                "messages": {"coordination": sent, "environment": zero, "by_kind": {"sensation": sent}},
                "test_messages": {"coordination": zero, "environment": zero}},
    }


def test_summary_of_hand_made_cells(tmp_path: Path):
    spec = parse_experiment(spec_data(report={"equivalence_margin": 3.0, "deviations": ["fewer trials than Tan"],
                                              "reference": "Tan (1993)"}), base_dir=REPO)
    # "helped" is faster by 10 steps in training on every seed (varying a little), the same in test.
    cells = []
    for seed, jitter in zip((1, 2, 3), (0, 1, 2)):
        cells.append(fake_cell(spec, "alone", seed, [25, 25, 20, 20, 22, 24, 20, 20], [20 + jitter, 20]))
        cells.append(fake_cell(spec, "helped", seed, [15 - jitter, 15, 10, 10, 12, 14, 10, 10], [20, 20 + jitter]))
    summary = tan_summary(spec, cells)
    assert summary["cell_commits"] == ["abc1234"]
    assert any("Only 3 seed(s)" in c for c in summary["caveats"])
    assert not any("Quick mode" in c for c in summary["caveats"])
    by = {(c["measure"]): c for c in summary["comparisons"]}
    assert set(by) == {"early", "late", "training", "test"}
    assert by["training"]["difference"]["mean"] == pytest.approx(-10.0 - 1.0 / 8)
    assert by["training"]["reference_agreement"] in ("agrees", "not shown; estimate agrees")
    assert "equivalence" not in by["training"] and "equivalence" in by["late"]
    assert by["test"]["equivalence"]["verdict"] in ("equivalent within ±3", "equivalence not shown")
    assert by["test"]["verdict"] == "no difference shown"
    # Intervals of steps per trial stay within 1 .. cut-off, even from three seeds.
    for condition in summary["conditions"].values():
        for entry in condition["measures"].values():
            assert 1.0 <= entry["low"] <= entry["mean"] <= entry["high"] <= 30.0
    cells_dir = tmp_path / "cells"
    cells_dir.mkdir()
    for cell in cells:
        (cells_dir / f"{cell['condition']}__seed{cell['seed']}.json").write_text(json.dumps(cell))
    files = write_tan_reports(spec, tmp_path)
    assert [f.name for f in files] == ["results.csv", "summary.json", "summary.md", "steps_per_trial.png",
                                       "cost_benefit.png"]
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 6 and rows[0]["condition"] == "alone" and float(rows[0]["training"]) == pytest.approx(22.0)
    text = (tmp_path / "summary.md").read_text()
    assert "fewer trials than Tan" in text and "abc1234" in text and "TOST" in text
    assert json.loads((tmp_path / "summary.json").read_text())["equivalence_margin"] == 3.0
    assert (tmp_path / "steps_per_trial.png").read_bytes()[:4] == b"\x89PNG"
