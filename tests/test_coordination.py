"""Coordination between learning agents: payloads, merge rules, and real agents on a real XMPP
server exchanging and using Q-tables and transitions, with every message accounted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.config import AgentConfig
from agents.coordination import wire
from agents.coordination.agent import CoordinatingAgent
from agents.coordination.ledger import RECEIVED, SENT
from agents.coordination.merge import merge_q_tables
from agents.qlearning import Hyperparameters

QUICK = Hyperparameters(alpha=0.5, gamma=0.95, epsilon_start=1.0, epsilon_min=0.05, epsilon_decay=0.98)


def config(agent_id: str, *, episodes: int = 20, seed: int = 1) -> AgentConfig:
    return AgentConfig(
        agent_id=agent_id, run_id="coordination-test", env_id="FrozenLake-v1", env_kwargs={"is_slippery": False},
        episodes=episodes, hyperparameters=QUICK, seed=seed,
    )


def plans(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def pair(tmp_path, xmpp_server, unique_jid, teacher_plan: str, student_plan: str, episodes: int = 20, **student_settings):
    jids = {"teacher": unique_jid("teacher"), "student": unique_jid("student")}
    make = lambda agent_id, other, plan, settings: CoordinatingAgent(  # noqa: E731
        jids[agent_id], "pw", config(agent_id, episodes=episodes, seed=len(agent_id)), peers={other: jids[other]},
        asl_path=plans(tmp_path, f"{agent_id}.asl", plan), port=xmpp_server.client_port, eval_episodes=0,
        settings=settings,
    )
    return make("teacher", "student", teacher_plan, {}), make("student", "teacher", student_plan, student_settings)


async def run_all(*agents, timeout: float = 60.0):
    try:
        for agent in agents:
            await agent.start()
        return [await agent.finished(timeout, raise_on_error=True) for agent in agents]
    finally:
        for agent in agents:
            await agent.stop()


def test_q_table_payload_round_trip_is_compact():
    rng = np.random.default_rng(3)
    q, visits = rng.normal(size=(64, 4)), rng.integers(0, 500, size=(64, 4))
    body = wire.encode_q_table(q, visits, episode=7)
    payload = wire.decode(body)
    assert payload["episode"] == 7
    np.testing.assert_allclose(payload["q"], q, rtol=1e-6)  # float32 on the wire
    np.testing.assert_array_equal(payload["visits"], visits)
    as_json_lists = json.dumps({"q": q.tolist(), "visits": visits.tolist()})
    assert len(body) < 0.5 * len(as_json_lists)  # base64 float32/uint32, not JSON lists of float64


def test_transitions_payload_round_trip():
    data = np.array([(1, 2, 0.0, 5, 0), (5, 1, 1.0, 15, 1)], dtype=wire.TRANSITION_DTYPE)
    payload = wire.decode(wire.encode_transitions(data, episode=3))
    assert payload["data"].tolist() == data.tolist()


@pytest.mark.parametrize("body", ["not json", '{"kind": "gossip"}', '{"kind": "q_table", "shape": [2, 2], "q": "AAAA", "visits": "AAAA"}'])
def test_unknown_or_broken_payloads_are_refused(body):
    with pytest.raises(wire.PayloadError):
        wire.decode(body)


def test_merge_rules():
    own, own_visits = np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[3, 0], [0, 0]])
    peer, peer_visits = np.array([[3.0, 2.0], [0.0, 0.0]]), np.array([[1, 4], [0, 0]])
    np.testing.assert_allclose(merge_q_tables("average", own, own_visits, [(peer, peer_visits)]), [[2.0, 1.0], [0.0, 0.0]])
    # visits: weighted by who updated each entry; the own value stays where nobody did.
    np.testing.assert_allclose(merge_q_tables("visits", own, own_visits, [(peer, peer_visits)]), [[1.5, 2.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="unknown merge rule"):
        merge_q_tables("max", own, own_visits, [(peer, peer_visits)])
    with pytest.raises(ValueError, match="different environments"):
        merge_q_tables("average", own, own_visits, [(np.zeros((3, 2)), np.zeros((3, 2)))])


@pytest.mark.timeout(90)
async def test_policy_sharing_pair_exchanges_and_merges_q_tables(tmp_path, xmpp_server, unique_jid):
    # The teacher sends its table; the student waits for it, merges it with the rule its
    # settings name, and stops: its (all-zero) table must become the average of the two.
    teacher, student = pair(
        tmp_path, xmpp_server, unique_jid,
        teacher_plan="""
            !share.
            +!share <- .share_q_table; .rl_stop("shared").
        """,
        student_plan="""
            !wait_for_table.
            +!wait_for_table : q_tables_pending(N) & N >= 1 & merge_rule(R) <- .merge_q_tables(R); .rl_stop("merged").
            +!wait_for_table <- .wait(20); !!wait_for_table.
        """,
        merge_rule="average",
    )
    teacher.learner.q[:] = np.random.default_rng(5).uniform(size=teacher.learner.q.shape)
    await run_all(teacher, student)
    np.testing.assert_allclose(student.learner.q, teacher.learner.q / 2.0, rtol=1e-6)  # (0 + teacher) / 2, float32 wire
    assert student.coordination.merges_done == 1 and student.coordination.q_tables_received == 1
    sent, received = teacher.ledger.totals(), student.ledger.totals()
    assert sent.sent_by_kind == {"q_table": 1} and received.received == 1
    assert sent.sent_bytes == received.received_bytes > 0
    records = teacher.ledger.drain() + student.ledger.drain()
    assert [(r.agent_id, r.direction, r.peer, r.kind) for r in records] == [
        ("teacher", SENT, "student", "q_table"), ("student", RECEIVED, "teacher", "q_table")]


@pytest.mark.timeout(90)
async def test_experience_sharing_student_learns_from_teacher_transitions(tmp_path, xmpp_server, unique_jid):
    teacher, student = pair(
        tmp_path, xmpp_server, unique_jid,
        teacher_plan="""
            !learn.
            +!learn : episodes_done(N) & episodes_target(T) & N >= T <- .rl_stop("done").
            +!learn <- .rl_run_episode(explore); .share_transitions; !!learn.
        """,
        student_plan="""
            !listen.
            +!listen : shared_transitions_learned(N) & N >= 1 & transitions_pending(0) & .my_name(_) <- !check.
            +!listen <- .learn_shared_transitions; .wait(20); !!listen.
            +!check : shared_transitions_learned(N) & expected(E) & N >= E <- .rl_stop("learned").
            +!check <- .wait(20); !!listen.
        """,
        episodes=100,  # random walks: with these seeds some reach the goal
    )
    await teacher.start()
    await teacher.finished(60, raise_on_error=True)
    assert teacher.learner.q.any(), "the teacher's walks reached the goal at least once"
    expected = teacher.total_steps
    student.learning.beliefs.set("expected", expected)
    await run_all(student)
    await teacher.stop()
    assert student.coordination.shared_transitions_learned == expected
    assert student.learner.replayed == expected and student.total_steps == 0  # learned without acting
    assert student.ledger.totals().received == teacher.ledger.totals().sent == 100
    assert student.learner.q.any(), "the goal rewards reached the student through the shared transitions"


@pytest.mark.timeout(60)
async def test_spade_bdi_send_is_accounted_on_both_sides(tmp_path, xmpp_server, unique_jid):
    teacher, student = pair(
        tmp_path, xmpp_server, unique_jid,
        teacher_plan="""
            !greet.
            +!greet : peer_jid(J) <- .send(J, tell, hello(42)); .rl_stop("greeted").
            +!greet <- .wait(20); !!greet.
        """,
        student_plan="""
            !listen.
            +!listen : hello(X) <- .rl_stop("heard").
            +!listen <- .wait(20); !!listen.
        """,
    )
    teacher.learning.beliefs.set("peer_jid", str(student.jid))
    await run_all(student, teacher)
    assert teacher.ledger.totals().sent_by_kind == {"bdi_tell": 1}
    assert student.ledger.totals().received == 1
    assert teacher.ledger.totals().sent_bytes == student.ledger.totals().received_bytes == len("hello(42)")
