"""How cell measurements become numbers and sentences: episodes to threshold, censoring at the
budget, and summaries that say plainly what was (and was not) shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.coordination.actions import EvaluationPoint
from agents.experiment.cell import episodes_to_threshold
from agents.experiment.report import summary_json, summary_markdown
from agents.experiment.spec import parse_experiment


def spec(tmp_path: Path, measure: str = "greedy_evaluation"):
    return parse_experiment(
        {
            "name": "report-test", "seeds": 3, "learners": 2, "env_id": "FrozenLake-v1", "episodes": 100,
            "threshold": {"value": 0.7, "measure": measure, "eval_every": 25, "window": 4},
            "conditions": [{"name": "independent", "kind": "independent"},
                           {"name": "experience", "kind": "experience_sharing"}],
        },
        base_dir=tmp_path,
    )


def test_episodes_to_threshold_from_greedy_evaluations(tmp_path):
    points = [EvaluationPoint(25, 900, 0.2, 0.2), EvaluationPoint(50, 2000, 0.7, 0.7), EvaluationPoint(75, 3000, 0.9, 0.9)]
    assert episodes_to_threshold(spec(tmp_path), [], points) == 50
    assert episodes_to_threshold(spec(tmp_path), [], points[:1]) is None


def test_exact_success_counts_from_where_it_stays_above_the_threshold(tmp_path):
    # threshold 0.7 (the spec's); exact success crosses it, dips below, then stays above from 75 on
    points = [EvaluationPoint(25, 900, 0.9, 0.9, 0.8), EvaluationPoint(50, 2000, 0.9, 0.9, 0.4),
              EvaluationPoint(75, 3000, 0.9, 0.9, 0.7), EvaluationPoint(100, 4000, 0.2, 0.2, 0.8)]
    assert episodes_to_threshold(spec(tmp_path), [], points) == 75     # the sampled rates are ignored
    assert episodes_to_threshold(spec(tmp_path), [], points[:2]) is None  # below at the end: not reached
    mixed = points[:1] + [EvaluationPoint(50, 2000, 0.6, 0.6)]             # not all exact: sampled rule
    assert episodes_to_threshold(spec(tmp_path), [], mixed) == 25


def test_episodes_to_threshold_from_a_training_window(tmp_path):
    window_spec = spec(tmp_path, "training_window")  # window 4, threshold 0.7: 3 of the last 4
    assert episodes_to_threshold(window_spec, [0, 0, 1, 1, 0, 1, 1, 1], []) == 6  # episodes 3-6: 1, 1, 0, 1
    assert episodes_to_threshold(window_spec, [1, 1, 1], []) is None  # never a full window


def cell(condition: str, kind: str, seed: int, reached: list, success: float) -> dict:
    return {
        "experiment": "report-test", "condition": condition, "kind": kind, "seed": seed, "run_id": f"r{condition}{seed}",
        "elapsed_s": 1.0, "world": None,
        "agents": [
            {"agent_id": f"learner-{i}", "episodes": 100, "steps": 1000, "episodes_to_threshold": r,
             "final_greedy_success": success, "final_greedy_return": success, "messages_sent": 0 if kind == "independent" else 100,
             "bytes_sent": 0 if kind == "independent" else 9000, "messages_received": 0, "bytes_received": 0,
             "returns": [0.0] * 100, "successes": [0] * 100, "evaluations": []}
            for i, r in enumerate(reached, 1)
        ],
    }


def test_summary_never_averages_censored_seeds_and_corrects_its_comparisons(tmp_path):
    s = spec(tmp_path)
    cells = [cell("independent", "independent", k, [None, 100 - k], 0.5) for k in (1, 2, 3)]
    cells += [cell("experience", "experience_sharing", k, [20 + k, 30 + k], 0.9) for k in (1, 2, 3)]
    text = summary_markdown(s, cells, None)
    # Every independent seed has an agent that never got there: censored, no mean of them.
    assert "| independent | independent | 3 | 0/3 seeds | not reached by half the seeds |" in text
    assert "| experience | experience_sharing | 3 | 3/3 seeds | 32 |" in text   # Kaplan-Meier median of 31, 32, 33
    # Speed: experience first in all 3 paired seeds; a sign test on 3 pairs cannot show it.
    assert "experience reached the threshold first in 3 seed(s), independent in 0, 0 without an order; no difference shown" in text
    assert "this is not evidence that they are the same" in text
    # Success: +0.4 in every seed, significant even after Holm over the two comparisons.
    assert "a difference of +0.400 per seed" in text and "significant after Holm's correction" in text
    assert "**Caution:** 3 seed(s) per condition" in text
    assert "t-test" not in text.split("**Speed")[1].split("**Final")[0]


def test_summary_json_holds_what_the_summary_says(tmp_path):
    s = spec(tmp_path)
    cells = [cell("independent", "independent", k, [None, 100 - k], 0.5) for k in (1, 2, 3)]
    cells += [cell("experience", "experience_sharing", k, [20 + k, 30 + k], 0.9) for k in (1, 2, 3)]
    data = summary_json(s, cells)
    assert data["conditions"]["independent"]["reached_threshold"] == 0
    assert data["conditions"]["independent"]["median_episodes_to_threshold"] is None
    success = data["conditions"]["experience"]["final_greedy_success"]
    assert success["mean"] == 0.9 and success["low"] <= 1.0 and success["high"] <= 1.0
    [speed, better] = data["comparisons"]
    assert (speed["measure"], speed["first_condition"], speed["first_baseline"]) == ("speed", 3, 0)
    assert speed["p"] == 0.25 and speed["p_holm"] == 0.25
    assert better["difference"]["mean"] == pytest.approx(0.4) and better["p_holm"] == 0.0


def test_summary_says_when_nobody_reached_the_threshold(tmp_path):
    s = spec(tmp_path)
    cells = [cell(name, kind, k, [None, None], 0.1) for name, kind in (("independent", "independent"), ("experience", "experience_sharing")) for k in (1, 2, 3)]
    text = summary_markdown(s, cells, None)
    assert "this run cannot say which learns faster by that measure" in text
