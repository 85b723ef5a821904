"""Experiment files are checked completely before anything runs; errors name the key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from agents.experiment.spec import ExperimentError, load_experiment, parse_experiment
from agents.experiment.stats import censored_median, holm, mean_interval, paired_censored, paired_difference

PROJECT_ROOT = Path(__file__).resolve().parent.parent

GOOD = {
    "name": "spec-test",
    "seeds": 3,
    "learners": 2,
    "env_id": "FrozenLake-v1",
    "env_kwargs": {"is_slippery": False},
    "episodes": 100,
    "threshold": {"value": "registered", "measure": "greedy_evaluation", "eval_every": 50},
    "hyperparameters": {"alpha": 0.5},
    "conditions": [
        {"name": "independent", "kind": "independent"},
        {"name": "policy", "kind": "policy_sharing", "settings": {"share_every": 10, "merge_rule": "average"}},
    ],
}


def with_change(path: str, value=None, *, delete: bool = False) -> dict:
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if delete:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


def test_the_shipped_experiments_and_a_good_file_are_accepted(tmp_path):
    spec = parse_experiment(GOOD, base_dir=tmp_path)
    assert spec.seeds == [1, 2, 3] and spec.threshold.value == 0.70  # FrozenLake-v1's registration
    assert [c.kind for c in spec.conditions] == ["independent", "policy_sharing"]
    assert len(spec.cells()) == 6
    for name in ("frozenlake8x8_sharing", "pursuit_joint"):
        shipped = load_experiment(PROJECT_ROOT / "experiments" / f"{name}.toml")
        assert len(shipped.seeds) >= 5
    assert load_experiment(PROJECT_ROOT / "experiments" / "frozenlake8x8_sharing.toml").threshold.value == 0.85


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(path="conditions.1.kind", value="policy_shareing"), "conditions[1].kind"),
        (dict(path="conditions.1.settings.share_every", delete=True), "conditions[1].settings.share_every"),
        (dict(path="episodes", delete=True), "episodes"),
        (dict(path="conditions", delete=True), "conditions"),
        (dict(path="seeds", value=0), "seeds"),
        (dict(path="seeds", value=[1, 1]), "seeds"),
        (dict(path="episodes", value=-5), "episodes"),
        (dict(path="threshold.value", value=1.5), "threshold.value"),
        (dict(path="threshold.eval_every", value=1000), "threshold.eval_every"),
        (dict(path="threshold.measure", value="vibes"), "threshold.measure"),
        (dict(path="hyperparameters.alpha", value=2.0), "hyperparameters.alpha"),
        (dict(path="env_kwargs.is_slippery", value="no"), "env_kwargs.is_slippery"),
        (dict(path="env_id", value="FrozenLake-v9"), "env_id"),
        (dict(path="learners", value=1), "learners"),
        (dict(path="conditions.1.settings.merge_rule", value="max"), "conditions[1].settings.merge_rule"),
        (dict(path="conditions.1.name", value="independent"), "conditions[1].name"),
        (dict(path="conditions.0.plan", value="missing.asl"), "conditions[0].plan"),
        (dict(path="budget", value=3), "budget"),
    ],
)
def test_bad_files_are_rejected_naming_the_key(tmp_path, change, key):
    with pytest.raises(ExperimentError) as error:
        parse_experiment(with_change(**change), base_dir=tmp_path)
    assert error.value.key == key
    assert key in str(error.value)


def test_hunting_conditions_need_the_pursuit_world(tmp_path):
    data = with_change("conditions.1", {"name": "hunters", "kind": "joint_hunters"})
    with pytest.raises(ExperimentError, match="MosaicPursuit-v0") as error:
        parse_experiment(data, base_dir=tmp_path)
    assert error.value.key == "conditions[1].kind"


def test_a_plan_with_an_unknown_action_is_rejected_with_file_and_line(tmp_path):
    plan = tmp_path / "typo.asl"
    plan.write_text("!learn.\n+!learn <- .share_q_tabel.\n")
    with pytest.raises(ExperimentError, match=r"typo.asl:2.*share_q_tabel") as error:
        parse_experiment(with_change("conditions.0.plan", "typo.asl"), base_dir=tmp_path)
    assert error.value.key == "conditions[0].plan"


@pytest.mark.timeout(60)
def test_the_command_rejects_a_bad_file_before_running_anything(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nseeds = 2\nenv_id = "FrozenLake-v1"\nepisodes = 10\n[threshold]\nvalue = 0.5\n'
                   '[[conditions]]\nname = "a"\nkind = "telepathy"\n')
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "agents.experiment", str(bad), "--out", str(out)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "conditions[0].kind" in done.stderr and "telepathy" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_statistics_against_known_values():
    interval = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (interval.low, interval.high) == pytest.approx((3 - 2.776445 * 1.5811 / 5**0.5, 3 + 2.776445 * 1.5811 / 5**0.5), abs=1e-3)
    # A rate's interval never leaves [0, 1].
    rate = mean_interval([0.0, 0.0, 1.0], (0.0, 1.0))
    assert rate.low == 0.0 and rate.high == 1.0
    # Paired t-test on differences 1, 1, 2, 3: t = 3.656, df = 3.
    difference, p = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 1.0, 1.0])
    assert difference.mean == 1.75 and p == pytest.approx(0.0354, abs=1e-3)
    assert holm([0.01, 0.04, None, 0.03]) == [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06)]


def test_censored_first_passages_are_compared_by_order_never_by_a_mean():
    # 10 beats "never"; never vs never has no order; 30 loses to 20.
    compared = paired_censored([10, None, 30], [None, None, 20])
    assert (compared.first_a, compared.first_b, compared.ties, compared.p) == (1, 1, 1, 1.0)
    assert paired_censored([None, None], [None, None]).p is None
    assert censored_median([10, 20, None, None], budget=100) == 20
    assert censored_median([10, None, None], budget=100) is None


def test_the_digest_follows_the_plans_text_not_where_the_checkout_lives(tmp_path):
    """Cells resume in a moved or second checkout of the same code, and never across a plan edit."""
    plan_text = (PROJECT_ROOT / "asl" / "coord_independent.asl").read_text()
    digests = []
    for place in ("one", "two"):
        folder = tmp_path / place
        folder.mkdir()
        (folder / "coord_mine.asl").write_text(plan_text)
        data = copy.deepcopy(GOOD)
        data["conditions"][0]["plan"] = "coord_mine.asl"
        digests.append(parse_experiment(data, base_dir=folder).digest())
    assert digests[0] == digests[1]
    (tmp_path / "two" / "coord_mine.asl").write_text(plan_text + "\n// edited\n")
    edited = copy.deepcopy(GOOD)
    edited["conditions"][0]["plan"] = "coord_mine.asl"
    assert parse_experiment(edited, base_dir=tmp_path / "two").digest() != digests[0]
