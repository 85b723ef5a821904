"""The interpreter-level parts of the reasoning behaviour: instruction fusion keeps AgentSpeak's meaning."""

from __future__ import annotations

import agentspeak
import agentspeak.runtime
import agentspeak.stdlib
import pytest

from agents.reasoning import fuse_formula_instructions

PLANS = """
counter(0).
!go.
+!go
    <- X = 10;
       while (counter(C) & C < 6) {
           -+counter(C + 1);
           if (C mod 2 == 0) { +even(C, X) } else { +odd(C) };
           for (.member(I, [a, b])) { +pair(C, I) };
           +inner(C, 0);
           while (inner(C, K) & K < 2) { -inner(C, K); +inner(C, K + 1) };
       };
       Y = X * 2;
       +result(Y);
       !sub(Y, Z);
       +back(Z).
+!sub(A, B) <- B = A + 1.
"""


def _run(text: str, fuse: bool) -> set[str]:
    env = agentspeak.runtime.Environment()
    agent = env.build_agent(agentspeak.StringSource("plans.asl", text), agentspeak.stdlib.actions)
    fused = fuse_formula_instructions(agent) if fuse else 0
    steps = 0
    while agent.step():
        steps += 1
    assert not fuse or fused > 0
    return {str(b) for group in agent.beliefs.values() for b in group}, steps


def test_fused_plans_compute_the_same_beliefs_in_fewer_steps():
    plain, plain_steps = _run(PLANS, fuse=False)
    fused, fused_steps = _run(PLANS, fuse=True)
    assert fused == plain
    assert {"result(20)", "back(21)", "counter(6)", "even(4, 10)", "odd(5)", "pair(3, b)", "inner(5, 2)"} <= plain
    assert "inner(5, 1)" not in plain
    assert fused_steps < plain_steps * 0.75


def test_a_failing_formula_still_fails_the_plan():
    for fuse in (False, True):
        with pytest.raises(agentspeak.AggregatedError):
            _run("!go.\n+!go <- X = 1; X > 2; +unreachable.\n", fuse)
