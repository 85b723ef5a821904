"""Plan files are validated when they load: errors name the file and the line."""

from __future__ import annotations

import agentspeak
import agentspeak.stdlib
import pytest

from agents.asl_check import AslError, check_asl, find_problems
from agents.bdi_agent import ASL_DIR, LearningAgent
from agents.config import AgentConfig
from agents.records import RecordBuffer


def _write(tmp_path, text: str, name: str = "plans.asl"):
    path = tmp_path / name
    path.write_text(text)
    return path


# Tests that construct agents are async: SPADE's container adopts the event loop running when the
# first agent is created, which must be the session's loop.
def _config(tmp_path, asl) -> AgentConfig:
    return AgentConfig(agent_id="checker", run_id="asl-check", env_id="FrozenLake-v1", episodes=1, asl=asl)


async def test_shipped_learner_plan_libraries_are_valid(tmp_path):
    learner_plans = [p for p in sorted(ASL_DIR.glob("*.asl")) if not p.name.startswith("coord_")]
    assert learner_plans
    for path in learner_plans:
        # Constructing the agent validates with the real action registry (no server needed).
        agent = LearningAgent(f"ok-{path.stem}@localhost", "pw", _config(tmp_path, path), records=RecordBuffer())
        assert agent.bdi_agent is not None


def test_shipped_coordination_plan_libraries_are_valid_for_coordinating_agents():
    from agents.coordination.agent import plan_actions

    coordination_plans = sorted(ASL_DIR.glob("coord_*.asl"))
    assert coordination_plans
    actions = plan_actions()
    for path in coordination_plans:
        check_asl(path, actions)


async def test_syntax_error_names_file_and_line(tmp_path):
    path = _write(tmp_path, "!start.\n\n+!start <- .rl_reset\n+!other <- true.\n")
    with pytest.raises(AslError) as caught:
        LearningAgent("syntax@localhost", "pw", _config(tmp_path, path), records=RecordBuffer())
    error = caught.value
    assert error.path == str(path)
    assert error.line == 4
    assert f"{path}:4:" in str(error)
    assert "syntax error" in str(error)


async def test_unknown_action_names_file_line_and_a_suggestion(tmp_path):
    path = _write(tmp_path, "!start.\n+!start\n    <- .rl_reset;\n       .rl_stepp;\n       .rl_stop.\n")
    with pytest.raises(AslError) as caught:
        LearningAgent("typo@localhost", "pw", _config(tmp_path, path), records=RecordBuffer())
    assert caught.value.line == 4
    assert "unknown action .rl_stepp/0" in str(caught.value)
    assert "did you mean .rl_step/0" in str(caught.value)


async def test_wrong_arity_is_an_unknown_action(tmp_path):
    path = _write(tmp_path, "!start.\n+!start <- .rl_choose.\n")
    with pytest.raises(AslError, match=r":2:\d+: unknown action .rl_choose/0"):
        LearningAgent("arity@localhost", "pw", _config(tmp_path, path), records=RecordBuffer())


def test_unknown_action_in_a_context_is_found_too(tmp_path):
    path = _write(tmp_path, "!start.\n+!start : .nosuch(X) <- true.\n")
    problems = find_problems(path, agentspeak.stdlib.actions)
    assert [(p.line, "unknown action .nosuch/1" in p.message) for p in problems] == [(2, True)]


def test_goal_without_plan_is_an_error(tmp_path):
    path = _write(tmp_path, "!start.\n+!start <- !episode.\n")
    with pytest.raises(AslError, match=r":2:\d+: no plan handles goal !episode/0"):
        check_asl(path, agentspeak.stdlib.actions)


def test_every_problem_is_listed(tmp_path):
    path = _write(tmp_path, "!start.\n+!start <- .one; .two.\n+!x <- !y.\n")
    with pytest.raises(AslError) as caught:
        check_asl(path, agentspeak.stdlib.actions)
    assert [p.line for p in caught.value.problems] == [2, 2, 3]


def test_missing_file_is_an_asl_error(tmp_path):
    with pytest.raises(AslError, match="plan file not found"):
        check_asl(tmp_path / "nope.asl", agentspeak.Actions())
