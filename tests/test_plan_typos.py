"""The last plan-file typos get clear messages: a failing test goal names the goal and the
closest belief, a context reading a belief nothing adds is a warning naming file and line, a
bad mode is one clean sentence that keeps the summary table readable."""

from __future__ import annotations

import logging

import pytest

from agents.actions import LEARNER_BELIEFS
from agents.asl_check import find_unknown_beliefs
from agents.bdi_agent import ASL_DIR, LearningAgent
from agents.progress import SummaryRow, summary_table
from tests.test_bdi_agent import config, plans, run


@pytest.mark.timeout(60)
async def test_a_failing_test_goal_names_the_goal_and_the_closest_belief(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, "!go.\n+!go <- .rl_reset;\n   ?episodez(E).\n")
    agent = LearningAgent(unique_jid("testgoal"), "pw", config("testgoal"), asl_path=asl, port=xmpp_server.client_port)
    result = await run(agent, timeout=20)
    message = str(result.error)
    assert f"{asl}:3" in message
    assert "test goal ?episodez/1 failed: the agent holds no belief episodez/1; did you mean episode/1?" in message


@pytest.mark.timeout(60)
async def test_a_bad_mode_is_one_clean_sentence_and_the_summary_stays_narrow(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, "!go.\n+!go <- .rl_reset;\n   .rl_choose(epsilom).\n")
    agent = LearningAgent(unique_jid("mode"), "pw", config("mode"), asl_path=asl, port=xmpp_server.client_port)
    result = await run(agent, timeout=20)
    message = str(result.error)
    assert "unknown mode epsilom: use one of explore, greedy, epsilon" in message
    assert "PlanError(" not in message
    row = SummaryRow(agent_id="mode", episodes=0, steps=0, greedy_success=None, mean_return=None,
                     steps_per_second=0.0, stop_reason=message, ok=False)
    table = summary_table([row])
    rule = table.splitlines()[1]
    assert len(rule.split()[-1]) <= 60, table   # the column, not the error, sets the width


def test_a_misspelt_belief_in_a_context_is_a_warning_naming_file_line_and_the_belief(tmp_path, caplog):
    asl = plans(tmp_path, "!learn.\n+!learn : sucess_rate(S) & S > 0.5\n    <- .rl_stop.\n"
                          "+!learn : seen(X) <- +seen(1).\n+!learn <- !learn.\n")
    warnings = find_unknown_beliefs(asl, LEARNER_BELIEFS)
    assert [str(w) for w in warnings] == [
        f"{asl}:2:11: the plan context reads belief 'sucess_rate', which nothing adds, so the plan never applies; "
        "did you mean success_rate?"]
    with caplog.at_level(logging.WARNING, logger="agents.asl_check"):
        LearningAgent("typo@localhost", "pw", config("typo"), asl_path=asl)
    assert any("sucess_rate" in r.getMessage() and f"{asl}:2" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["learner.asl", "learner_fast.asl"])
def test_the_shipped_learner_plans_read_only_known_beliefs(name):
    assert find_unknown_beliefs(ASL_DIR / name, LEARNER_BELIEFS) == []


@pytest.mark.timeout(60)
async def test_every_belief_a_learning_agent_keeps_is_in_its_catalogue(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, "!go.\n+!go <- .rl_run_episode(epsilon); .rl_run_episode(greedy); .rl_evaluate(3);\n"
                          "   .rl_reset; .rl_choose(epsilon); .rl_step; .rl_learn; .rl_stop.\n")
    agent = LearningAgent(unique_jid("catalogue"), "pw", config("catalogue"), asl_path=asl, port=xmpp_server.client_port)
    result = await run(agent, timeout=20)
    assert result.ok, result.error
    held = {functor for (functor, _arity), beliefs in agent.bdi_agent.beliefs.items() if beliefs}
    assert held and held <= LEARNER_BELIEFS, held - LEARNER_BELIEFS
