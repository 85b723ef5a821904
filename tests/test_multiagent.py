"""The pursuit world, the hunter's view as a Gymnasium environment, and hunters acting together
through the environment agent over XMPP: trained hunters capture more often than random ones."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

import envs.multiagent  # noqa: F401 - registers MosaicPursuit-v0
from agents.experiment.cell import CellTask
from agents.experiment.runner import run_cell_process
from agents.experiment.spec import parse_experiment
from envs import InvalidEnvKwargsError, make_env
from envs.multiagent import PURSUIT_ENV_ID, PursuitWorld, joint_state_index, sensation_index, wrap_offset


def world_at(hunters, prey, size=5, prey_moves=0.0) -> PursuitWorld:
    world = PursuitWorld(size=size, max_steps=10, prey_moves=prey_moves)
    world.reset(seed=0)
    world.hunters, world.prey = list(hunters), prey
    return world


def test_capture_needs_both_hunters_next_to_the_prey():
    # Prey at (2, 2); hunter 0 next to it (north), hunter 1 two cells east.
    world = world_at([(1, 2), (2, 4)], (2, 2))
    alone = world.step([0, 0])  # nobody moves: only one hunter is adjacent
    assert not alone.terminated and alone.reward == 0.0
    together = world.step([0, 4])  # hunter 1 steps west, next to the prey too
    assert together.terminated and together.reward == 1.0 and together.captured


def test_hunters_cannot_enter_the_prey_cell_and_the_grid_wraps():
    world = world_at([(1, 2), (0, 0)], (2, 2))
    world.step([3, 1])  # hunter 0 moves south into the prey: blocked; hunter 1 moves north: wraps to row 4
    assert world.hunters == [(1, 2), (4, 0)]
    assert wrap_offset(4, 5) == -1 and wrap_offset(-3, 5) == 2


def test_sensations_and_state_indices():
    world = world_at([(1, 2), (2, 4)], (2, 2))
    assert world.sensations() == ((0, 1), (-2, 0))  # (dx, dy) from each hunter to the prey
    own, partner = world.sensations()
    assert 0 <= sensation_index(own, 5) < 25
    # The partner's position relative to hunter 0 is recovered from the two sensations.
    assert joint_state_index(own, partner, 5) == sensation_index(own, 5) * 25 + sensation_index((2, 1), 5)


def test_world_is_reproducible_from_its_seed():
    def play(seed):
        world = PursuitWorld(size=7, max_steps=20, prey_moves=0.8)
        trace = [world.reset(seed).sensations]
        rng = np.random.default_rng(1)
        for _ in range(30):
            result = world.step(list(rng.integers(5, size=2)))
            trace.append((result.sensations, result.terminated, result.truncated))
            if result.terminated or result.truncated:
                trace.append(world.reset().sensations)
        return trace

    assert play(3) == play(3) and play(3) != play(4)


def test_hunter_view_is_a_tabular_gymnasium_environment():
    alone = make_env(PURSUIT_ENV_ID, size=7)
    joint = make_env(PURSUIT_ENV_ID, size=7, partner_sensation=True)
    assert (alone.n_states, alone.n_actions, joint.n_states) == (49, 5, 7**4)
    state, _ = alone.reset(seed=1)
    assert 0 <= state < 49
    for _ in range(60):  # standalone, the partner acts at random; the world truncates by itself
        state, reward, terminated, truncated, _ = alone.step(2)
        if terminated or truncated:
            break
    assert terminated or truncated
    with pytest.raises(InvalidEnvKwargsError):
        make_env(PURSUIT_ENV_ID, size=4)


def hunting_spec(tmp_path: Path, episodes: int = 120):
    return parse_experiment(
        {
            "name": "hunting-test",
            "seeds": [1],
            "learners": 2,
            "env_id": PURSUIT_ENV_ID,
            "env_kwargs": {"size": 7, "max_steps": 20, "prey_moves": 0.8},
            "episodes": episodes,
            "threshold": {"value": 0.8, "measure": "training_window", "window": 20},
            "final_evaluation": {"episodes": 200, "seed": 7},
            "hyperparameters": {"alpha": 0.2, "alpha_decay": 1.0, "alpha_min": 0.2, "gamma": 0.9, "epsilon_decay": 0.97, "epsilon_min": 0.05},
            "conditions": [
                {"name": "joint", "kind": "joint_hunters"},
                {"name": "independent", "kind": "independent_hunters"},
                {"name": "random", "kind": "random_hunters"},
            ],
        },
        base_dir=tmp_path,
    )


def run_cells(tasks: list[CellTask], out_dir: Path) -> list[dict]:
    """Run cells as the experiment runner does, each in a fresh spawned process.

    A cell starts its own embedded XMPP server, and pyjabber keeps its server in module globals:
    in this process it would clobber the session's server that other tests use.
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        paths = [pool.submit(run_cell_process, task, str(out_dir)).result(timeout=120) for task in tasks]
    return [json.loads(Path(path).read_text()) for path in paths]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_trained_hunters_capture_more_often_than_random_ones(tmp_path):
    spec = hunting_spec(tmp_path)
    by_name = {c.name: c for c in spec.conditions}
    trained, random = run_cells([CellTask(spec, by_name["independent"], 1, None, None),
                                 CellTask(spec, by_name["random"], 1, None, None)], tmp_path)
    trained_capture = trained["agents"][0]["final_greedy_success"]
    random_capture = random["agents"][0]["final_greedy_success"]
    # Both hunters of a cell share the one joint evaluation (200 episodes, the same seed).
    assert trained["agents"][1]["final_greedy_success"] == trained_capture
    assert trained_capture > random_capture
    for cell in (trained, random):
        hunters, world = cell["agents"], cell["world"]
        # Every step is an action from each hunter to the world and an answer back.
        for hunter in hunters:
            assert hunter["sent_by_kind"] == {"world_reset": spec.episodes, "world_action": hunter["steps"]}
            assert hunter["messages_received"] == spec.episodes + hunter["steps"]
        assert world["messages_received"] == sum(h["messages_sent"] for h in hunters)
        assert world["messages_sent"] == sum(h["messages_received"] for h in hunters)
        assert world["captures"] == sum(hunters[0]["successes"]) == sum(hunters[1]["successes"])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_joint_hunters_tell_each_other_what_they_see(tmp_path):
    spec = hunting_spec(tmp_path, episodes=30)
    joint = next(c for c in spec.conditions if c.kind == "joint_hunters")
    (cell,) = run_cells([CellTask(spec, joint, 2, None, None)], tmp_path)
    first, second = cell["agents"]
    assert first["steps"] == second["steps"]  # the world moves only with both hunters' actions
    for hunter in (first, second):
        # One sensation per observation (the start of each episode and every step), to the partner.
        assert hunter["sent_by_kind"]["sensation"] == spec.episodes + hunter["steps"]
        assert hunter["messages_received"] == 2 * (spec.episodes + hunter["steps"])
