"""Tan (1993)'s world (bounded grid, visual depth, single and joint capture), the agents' views,
the scout's reports, the plans' sharing (counted messages per condition), Tan's measures on a
hand-made trace, and the message accounting (channels, stanza bytes)."""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

import envs.multiagent  # noqa: F401 - registers MosaicTan-v0
from agents.coordination.learner import SharingQLearner
from agents.coordination.ledger import COORDINATION, ENVIRONMENT, SENT, MessageLedger, channel_of
from agents.coordination.stanza import StanzaSizer
from agents.experiment import separate
from agents.experiment.cell import CellTask
from agents.experiment.spec import ExperimentError, parse_experiment
from agents.experiment.stats import holm
from agents.experiment.tan_metrics import blocks, crossover_trial, trial_metrics, window_mean
from agents.experiment.tan_report import tan_summary
from agents.qlearning import Hyperparameters
from envs import make_env
from envs.multiagent import TAN_ENV_ID
from envs.multiagent.tan import Percept, TanOptions, TanWorld, offset_index, offset_states, reported_prey, view_state, view_states
from tests.test_multiagent import run_cells

REPO = Path(__file__).resolve().parent.parent
STAY, NORTH, EAST, SOUTH, WEST = range(5)


def world_at(cells, prey, **options) -> TanWorld:
    world = TanWorld(TanOptions(**{"size": 5, "hunters": len(cells), **options}))
    world.reset(seed=0)
    world.cells, world.prey = [tuple(c) for c in cells], tuple(prey)
    return world


# ------------------------------------------------------------------ the world's rules


def test_single_capture_needs_a_hunter_on_the_prey_cell():
    world = world_at([(2, 1)], (2, 2))
    assert not world.captured()  # next to the prey is not enough under the single rule
    result = world.step([EAST])
    assert result.terminated and result.captured and result.reward == 1.0


@pytest.mark.parametrize("second", [(2, 2), (1, 2), (3, 2), (2, 1), (2, 3)], ids=["on", "north", "south", "west", "east"])
def test_joint_capture_with_the_partner_on_or_next_to_the_prey(second):
    world = world_at([(1, 2), second], (2, 2), capture="joint")
    assert world.captured()


@pytest.mark.parametrize("second", [(1, 1), (3, 3), (0, 2), (2, 4)], ids=["diagonal-nw", "diagonal-se", "two-north", "two-east"])
def test_joint_capture_fails_when_the_partner_is_diagonal_or_farther(second):
    world = world_at([(1, 2), second], (2, 2), capture="joint")
    assert not world.captured()


def test_joint_capture_needs_two_hunters_and_a_known_rule():
    with pytest.raises(ValueError, match="joint capture rule needs hunters = 2"):
        TanOptions(hunters=1, capture="joint")
    with pytest.raises(ValueError, match="capture must be one of"):
        TanOptions(capture="both")


def test_moves_stay_inside_the_grid_unless_it_is_a_torus():
    world = world_at([(0, 0)], (4, 4))
    assert world.moved((0, 0), NORTH) == (0, 0) and world.moved((0, 0), WEST) == (0, 0)
    assert world.moved((4, 4), SOUTH) == (4, 4) and world.moved((4, 4), EAST) == (4, 4)
    assert world.moved((2, 2), NORTH) == (1, 2)
    torus = world_at([(0, 0)], (4, 4), torus=True)
    assert torus.moved((0, 0), NORTH) == (4, 0) and torus.moved((0, 0), WEST) == (0, 4)


def test_the_prey_stays_inside_and_moves_among_five_choices():
    world = TanWorld(TanOptions(size=3, max_steps=10_000))
    world.reset(seed=3)
    seen = set()
    for _ in range(2000):
        world.cells = [(0, 0)]
        before = world.prey
        if before == (0, 0):
            world.prey = before = (2, 2)
        world.step([STAY])
        after = world.prey
        assert 0 <= after[0] < 3 and 0 <= after[1] < 3
        assert abs(after[0] - before[0]) + abs(after[1] - before[1]) <= 1
        seen.add((after[0] - before[0], after[1] - before[1]))
    assert seen == {(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)}


def test_rewards_and_the_cut_off():
    world = TanWorld(TanOptions(size=10, max_steps=3))
    world.reset(seed=1)
    world.cells, world.prey = [(0, 0)], (9, 9)
    results = [world.step([STAY]) for _ in range(3)]
    assert [r.reward for r in results] == [-0.1, -0.1, -0.1]
    assert [r.truncated for r in results] == [False, False, True] and not results[-1].terminated


# ------------------------------------------------------------- perception and states


def test_visual_depth_and_the_unseen_state():
    world = world_at([(2, 2)], (0, 4), size=7, depth=2)
    assert world.percepts()[0].prey == (2, -2)  # (dx, dy): two columns east, two rows north
    world.prey = (2, 5)  # three columns east: beyond depth 2
    assert world.percepts()[0].prey is None
    assert offset_states(2) == 26  # Tan's 26 states at d = 2
    assert offset_index(None, 2) == 25 and offset_index((-2, -2), 2) == 0 and offset_index((2, 2), 2) == 24
    options = world.options
    assert view_state("own", options, Percept((2, 2), None, None)) == 25


def test_a_scout_sees_within_its_own_depth_and_never_captures():
    world = world_at([(0, 0), (2, 2)], (2, 2), size=7, hunters=1, scouts=1, depth=1, scout_depth=3)
    world.cells = [(0, 0), (2, 2)]  # the scout stands on the prey's cell
    assert not world.captured()
    world.prey = (5, 5)
    hunter, scout = world.percepts()
    assert hunter.prey is None and scout.prey == (3, 3)


def test_passive_observers_see_their_partner_within_depth():
    world = world_at([(0, 0), (1, 2)], (4, 4), capture="joint", depth=2)
    first, second = world.percepts()
    assert first.partner == (2, 1) and second.partner == (-2, -1)
    world.cells = [(0, 0), (4, 3)]
    assert world.percepts()[0].partner is None


def test_a_report_places_the_prey_relative_to_the_hunter():
    options = TanOptions(size=10, hunters=1, scouts=1, depth=2, scout_depth=2)
    # The scout at row 5 col 6 sees the prey one column west, two rows south: the prey is at (7, 5).
    prey = reported_prey(options, (1, 1), (5, 6), (-1, 2))
    assert prey == (4, 6)
    hunter_blind = Percept((1, 1), None, None)
    scouted = view_state("scouted", options, hunter_blind, prey)
    assert scouted == offset_index((4, 6), 9) != view_state("scouted", options, hunter_blind, None)
    # What the hunter sees itself wins over the report.
    seeing = Percept((1, 1), (1, 1), None)
    assert view_state("scouted", options, seeing, prey) == offset_index((1, 1), 9)
    assert view_states("scouted", options) == 19 * 19 + 1
    assert reported_prey(options, (1, 1), (5, 6), None) is None


def test_views_need_what_they_combine():
    with pytest.raises(ValueError, match="needs a partner hunter"):
        make_env(TAN_ENV_ID, view="passive")
    with pytest.raises(ValueError, match="needs scouts = 1"):
        make_env(TAN_ENV_ID, role="scout")
    env = make_env(TAN_ENV_ID, size=10, hunters=2, capture="joint", view="mutual")
    assert env.n_states == 362 * 26 and env.n_actions == 5


def test_boltzmann_choice_follows_the_q_values():
    learner = SharingQLearner(1, 5, Hyperparameters(seed=4))
    learner.q[0] = [0.0, 0.4, 0.0, 0.0, 0.0]
    draws = np.bincount([learner.choose_boltzmann(0, 0.4) for _ in range(20_000)], minlength=5) / 20_000
    expected = np.exp(learner.q[0] / 0.4) / np.exp(learner.q[0] / 0.4).sum()
    assert np.allclose(draws, expected, atol=0.015)
    assert {learner.choose_boltzmann(0, 0.001) for _ in range(200)} == {1}


# ------------------------------------------------------------------------- measures


def test_tan_measures_on_a_hand_made_trace():
    # 4 training trials (one cut off at 10), then 2 test trials (one cut off).
    trials = [(10, False), (6, True), (4, True), (2, True), (3, True), (10, False)]
    metrics = trial_metrics(trials, training=4, cutoff=10, window=2, block=2)
    assert metrics["blocks"] == [8.0, 3.0]
    assert metrics["early"] == 8.0 and metrics["late"] == 3.0
    assert metrics["early_censored"] == 1 and metrics["late_censored"] == 0
    assert metrics["test"] == 6.5 and metrics["test_censored"] == 1 and metrics["test_trials"] == 2
    assert metrics["training_steps"] == 22 and metrics["training_censored"] == 1
    assert blocks([1, 2, 3, 4, 5], 2) == [1.5, 3.5]  # a partial last block is left out
    assert window_mean([1, 2, 3, 4], 3, last=True) == 3.0
    with pytest.raises(ValueError, match="fewer than the 5 training trials"):
        trial_metrics(trials[:4], training=5, cutoff=10, window=2)


def test_holm_correction():
    assert holm([0.01, 0.04, None, 0.03]) == [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06)]


def test_crossover_is_where_cooperative_stays_below():
    independent = [100, 100, 100, 100, 100]
    assert crossover_trial([120, 90, 110, 95, 80], independent, block=50) == 150
    assert crossover_trial([90, 90, 90, 90, 90], independent, block=50) == 0
    assert crossover_trial([90, 90, 90, 90, 101], independent, block=50) is None


# ---------------------------------------------------------------- message accounting


def test_stanza_bytes_agree_with_the_serialized_stanza():
    sizer = StanzaSizer()
    metadata = {"performative": "coordination", "kind": "sensation"}
    for body in ['{"kind":"sensation","cell":[1,2],"prey":null}', 'quotes " & <tags> and é', "x"]:
        assert sizer.size("hunter-1@localhost", "scout@localhost", body, metadata) == sizer.serialized("hunter-1@localhost", "scout@localhost", body, metadata)
    assert sizer.size("a@localhost", "b@localhost", "", metadata) == sizer.serialized("a@localhost", "b@localhost", "", metadata)


def test_ledger_keeps_coordination_apart_from_the_environment():
    ledger = MessageLedger("run", "hunter-1")
    ledger.record(SENT, "world", "world_action", 40, 400, math.log2(5))
    ledger.record(SENT, "scout", "sensation", 60, 500, 12.0)
    ledger.record(SENT, "scout", "sensation", 60, 500, 12.0)
    totals = ledger.totals()
    assert channel_of("world_observation") == ENVIRONMENT and channel_of("q_table") == COORDINATION
    coordination = totals.channel_cost(COORDINATION)
    assert (coordination.count, coordination.body_bytes, coordination.stanza_bytes, coordination.bits) == (2, 120, 1000, 24.0)
    environment = totals.channel_cost(ENVIRONMENT)
    assert (environment.count, environment.stanza_bytes) == (1, 400)


# ----------------------------------------------------------- the plans, really run


def tan_spec(tmp_path: Path, conditions: list[dict], **world):
    return parse_experiment(
        {
            "name": "tan-test",
            "seeds": [1],
            "env_id": TAN_ENV_ID,
            "env_kwargs": {"size": 5, "hunters": 2, "depth": 1, "scout_depth": 1, "capture": "single", "max_steps": 30, **world},
            "episodes": 12,
            "threshold": {"value": 0.5, "measure": "training_window", "window": 4},
            "final_evaluation": {"episodes": 3, "seed": 7},
            "hyperparameters": {"alpha": 0.8, "alpha_decay": 1.0, "alpha_min": 0.8, "gamma": 0.9, "epsilon_start": 0.0, "epsilon_min": 0.0},
            "telemetry": {"steps": False},
            "conditions": [{"kind": "tan", **c} for c in conditions],
        },
        base_dir=REPO,
    )


def coordination_sent(agent: dict) -> dict:
    return {k: n for k, n in agent["sent_by_kind"].items() if channel_of(k) == COORDINATION}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_each_condition_plan_changes_what_is_shared(tmp_path):
    scout = {"scouts": 1, "view": "scouted"}
    spec = tan_spec(
        tmp_path,
        [
            {"name": "alone", "plan": "asl/coord_tan_independent.asl", "settings": {"hunters": 1}},
            {"name": "scout", "plan": "asl/coord_tan_scout.asl", "settings": {"hunters": 1, **scout}},
            {"name": "location", "plan": "asl/coord_tan_scout_location.asl", "settings": {"hunters": 1, **scout}},
            {"name": "mutual", "plan": "asl/coord_tan_mutual.asl", "settings": {"view": "mutual"}},
            {"name": "shared", "plan": "asl/coord_tan_shared_policy.asl"},
            {"name": "averaging", "plan": "asl/coord_tan_policy_averaging.asl", "settings": {"share_every": 7}},
            {"name": "episodes", "plan": "asl/coord_tan_episode_sharing.asl"},
        ],
    )
    cells = {cell["condition"]: cell for cell in run_cells([CellTask(spec, c, 1, None, None) for c in spec.conditions], tmp_path)}
    training, trials = spec.episodes, spec.episodes + spec.final_eval_episodes
    for cell in cells.values():
        assert len(cell["tan"]["trials"]) == trials  # training then test trials, all in the world's record
    agents = {name: {a["agent_id"]: a for a in cell["agents"]} for name, cell in cells.items()}

    assert coordination_sent(agents["alone"]["hunter-1"]) == {}
    assert cells["alone"]["tan"]["messages"][COORDINATION]["count"] == 0
    # The scout reports once per observation (every trial's start and every step); the hunter tells nothing.
    for name, kind in (("scout", "sensation"), ("location", "location")):
        scout_row, hunter_row = agents[name]["scout"], agents[name]["hunter-1"]
        assert coordination_sent(scout_row) == {kind: trials + scout_row["steps"]}
        assert coordination_sent(hunter_row) == {}
    bits = cells["scout"]["tan"]["messages"]["by_kind"]["sensation"]["bits"] / agents["scout"]["scout"]["sent_by_kind"]["sensation"]
    assert bits == pytest.approx(math.log2(25) + math.log2(offset_states(1)))
    assert cells["location"]["tan"]["messages"]["by_kind"]["location"]["bits"] == pytest.approx(math.log2(25) * (trials + agents["location"]["scout"]["steps"]))
    for hunter in agents["mutual"].values():
        assert coordination_sent(hunter) == {"sensation": trials + hunter["steps"]}
    train_steps = sum(s for s, _ in cells["shared"]["tan"]["trials"][:training])
    for hunter in agents["shared"].values():
        assert coordination_sent(hunter) == {"transitions": train_steps}  # one per training step, none in test
    averaging_steps = sum(s for s, _ in cells["averaging"]["tan"]["trials"][:training])
    for hunter in agents["averaging"].values():
        assert coordination_sent(hunter) == {"q_table": averaging_steps // 7}
        assert hunter["merges"] >= 1
    for hunter in agents["episodes"].values():
        assert coordination_sent(hunter) == {"transitions": training}
        assert hunter["shared_transitions_learned"] > 0
    # Test trials: reports go on (they are perception), sharing stops (nothing is learned).
    test_steps = {name: sum(s for s, _ in cell["tan"]["trials"][training:]) for name, cell in cells.items()}
    scout_test = cells["scout"]["tan"]["test_messages"]["by_kind"]
    assert scout_test["sensation"]["count"] == spec.final_eval_episodes + test_steps["scout"]
    for name in ("shared", "averaging", "episodes"):
        assert cells[name]["tan"]["test_messages"][COORDINATION]["count"] == 0
    summary = tan_summary(spec, list(cells.values()))
    shared = summary["conditions"]["shared"]
    assert shared["per_step"][COORDINATION]["count"] == pytest.approx(2 * train_steps / train_steps)  # both hunters, every step
    scout_summary = summary["conditions"]["scout"]["per_step"][COORDINATION]
    assert scout_summary["count"] == pytest.approx((training + cells["scout"]["tan"]["metrics"]["training_steps"]) / cells["scout"]["tan"]["metrics"]["training_steps"])
    assert [c["measure"] for c in summary["comparisons"][:4]] == ["early", "late", "training", "test"]
    # The stanza is what the message weighs on the wire: more than its body.
    sensation = cells["scout"]["tan"]["messages"]["by_kind"]["sensation"]
    assert sensation["stanza_bytes"] > sensation["body_bytes"] > 0


def test_tan_conditions_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(ExperimentError) as caught:
        tan_spec(tmp_path, [{"name": "x", "plan": "asl/coord_tan_mutual.asl", "settings": {"view": "mutual", "hunters": 1}}])
    assert caught.value.key == "conditions[0].settings" and "needs a partner hunter" in str(caught.value)
    with pytest.raises(ExperimentError) as caught:
        tan_spec(tmp_path, [{"name": "x"}])
    assert caught.value.key == "conditions[0].plan"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_movers_in_separate_processes_play_the_same_trials_over_the_server(tmp_path):
    # In one process the agents' messages never touch the XMPP server (SPADE's in-process
    # dispatch); with each agent in a process of its own every message crosses it. The world is
    # lockstep and every agent's randomness seeded: the trials and the messages must not change.
    spec = tan_spec(tmp_path, [{"name": "mutual", "plan": "asl/coord_tan_mutual.asl", "settings": {"view": "mutual"}}])
    task = CellTask(spec, spec.conditions[0], 1, None, None)
    (together,) = run_cells([task], tmp_path)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        apart = pool.submit(separate._separated_in_process, task).result(timeout=200)
    assert apart["trials"] == together["tan"]["trials"]
    assert apart["messages"] == together["tan"]["messages"]
    assert apart["messages"][COORDINATION]["count"] == sum(coordination_sent(a)["sensation"] for a in together["agents"]) > 0


class _Partner:
    """What HunterLink needs of its agent to receive reports (no XMPP: the parsing alone)."""

    def __init__(self, env):
        self.learning = type("Learning", (), {"env": type("Env", (), {"gym_env": env})()})()


@pytest.mark.parametrize(
    "report",
    [
        {"kind": "sensation", "episode": 0, "step": 0, "cell": [1, 99], "prey": None},
        {"kind": "sensation", "episode": 0, "step": 0, "cell": "x", "prey": None},
        {"kind": "sensation", "episode": 0, "step": 0, "cell": [1, 1], "prey": [0, 50]},
        {"kind": "location", "episode": "0", "step": 0, "cell": [1, 1]},
        {"kind": "location", "episode": 0, "step": True, "cell": [1, 1]},
    ],
    ids=["cell-off-grid", "cell-not-a-list", "prey-too-far", "episode-text", "step-bool"],
)
def test_a_hostile_report_is_refused_with_what_is_wrong(report):
    from agents.coordination import wire
    from agents.coordination.hunting import HunterLink

    env = make_env(TAN_ENV_ID, size=10, scouts=1, view="scouted").gym_env.unwrapped
    link = HunterLink(_Partner(env), "world@localhost", "scout")
    with pytest.raises(wire.PayloadError, match="from scout is not usable"):
        link.receive("scout", report)


async def test_a_second_report_for_the_same_step_is_refused():
    from agents.coordination import wire
    from agents.coordination.hunting import HunterLink

    env = make_env(TAN_ENV_ID, size=10, scouts=1, view="scouted").gym_env.unwrapped
    link = HunterLink(_Partner(env), "world@localhost", "scout")
    report = {"kind": "sensation", "episode": 0, "step": 0, "cell": [1, 1], "prey": [0, 1]}
    link.receive("scout", report)
    with pytest.raises(wire.PayloadError, match="a second sensation from scout for episode 0 step 0"):
        link.receive("scout", dict(report))
