"""LearningAgent on a real XMPP server: plans decide, agents learn, records match, failures report."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from agents.bdi_agent import ASL_DIR, AgentFailedError, AgentStartError, LearningAgent
from agents.config import AgentConfig
from agents.qlearning import Hyperparameters
from agents.records import EpisodeRecord, RecordBuffer, StepRecord
from agents.xmpp_server import free_port

# Non-slippery FrozenLake 4x4 is learned in a few hundred episodes with a fast epsilon decay.
QUICK = Hyperparameters(alpha=0.5, gamma=0.95, epsilon_start=1.0, epsilon_min=0.05, epsilon_decay=0.98)


def config(agent_id: str, *, episodes: int = 300, seed: int = 1, slippery: bool = False, **kw) -> AgentConfig:
    return AgentConfig(
        agent_id=agent_id,
        run_id="bdi-test",
        env_id="FrozenLake-v1",
        env_kwargs={"is_slippery": slippery},
        episodes=episodes,
        hyperparameters=QUICK,
        seed=seed,
        **kw,
    )


def plans(tmp_path, text: str, name: str = "plans.asl"):
    path = tmp_path / name
    path.write_text(text)
    return path


async def run(agent: LearningAgent, timeout: float = 120.0):
    """Start, wait for the result, stop; always stops the agent."""
    try:
        await agent.start()
        return await agent.finished(timeout)
    finally:
        await agent.stop()


def steps_and_episodes(records: RecordBuffer) -> tuple[list[StepRecord], list[EpisodeRecord]]:
    drained = records.drain().records()
    return [r for r in drained if isinstance(r, StepRecord)], [r for r in drained if isinstance(r, EpisodeRecord)]


@pytest.mark.timeout(180)
async def test_two_agents_learn_frozenlake_and_records_match(xmpp_server, unique_jid):
    # One agent per granularity: step by step through the reasoning cycle, and whole episodes.
    buffers = {"stepper": RecordBuffer(100_000), "sprinter": RecordBuffer(100_000)}
    agents = [
        LearningAgent(unique_jid("stepper"), "pw", config("stepper", seed=1), asl_path=ASL_DIR / "learner.asl",
                      records=buffers["stepper"], port=xmpp_server.client_port),
        LearningAgent(unique_jid("sprinter"), "pw", config("sprinter", seed=2), asl_path=ASL_DIR / "learner_fast.asl",
                      records=buffers["sprinter"], port=xmpp_server.client_port),
    ]
    deepest = 0

    async def watch_intention_stacks():  # trap 6: `!g` recursion grows one frame per episode
        nonlocal deepest
        while True:
            for a in agents:
                if a.bdi_agent is not None:
                    deepest = max(deepest, sum(len(stack) for stack in a.bdi_agent.intentions))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch_intention_stacks())
    try:
        results = await asyncio.gather(*(run(a) for a in agents))
    finally:
        watcher.cancel()
    assert 0 < deepest <= 4

    for agent, result in zip(agents, results):
        assert result.ok, result.error
        assert result.stop_reason == "episodes target reached"
        assert result.episodes == 300
        assert result.greedy_success_rate == 1.0
        steps, episodes = steps_and_episodes(buffers[agent.agent_id])
        assert len(steps) == result.steps > 0
        assert len(episodes) == result.episodes
        assert {r.agent_id for r in steps + episodes} == {agent.agent_id}
        assert {r.run_id for r in steps + episodes} == {"bdi-test"}
        assert {r.backend for r in steps} == {"spade-bdi"}
        assert [e.episode_index for e in episodes] == list(range(300))
        assert sum(e.steps for e in episodes) == len(steps)
        # Step indices restart at 0 in each episode and the last step of each episode ends it.
        assert [s.step_index for s in steps if s.episode_index == 5] == list(range(episodes[5].steps))
        assert all(s.terminated or s.truncated for s in steps if s.step_index == episodes[s.episode_index].steps - 1)
        assert json.loads(steps[0].render_hint_json)["kind"] == "grid"
        # The hint is per environment: it travels with each episode's first step only.
        assert [s.step_index for s in steps if s.render_hint_json] == [0] * result.episodes
        assert steps[0].episode_seed == agent.config.seed
        assert {s.policy_label for s in steps} == {"explore", "greedy"}


@pytest.mark.timeout(60)
async def test_a_plan_that_stops_after_three_episodes_stops_after_three(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, """
        !learn.
        +!learn : episodes_done(N) & N >= 3 <- .rl_stop("three episodes").
        +!learn <- .rl_run_episode(epsilon); !!learn.
    """)
    records = RecordBuffer()
    agent = LearningAgent(unique_jid("three"), "pw", config("three", episodes=500), asl_path=asl, records=records,
                          port=xmpp_server.client_port)
    result = await run(agent)
    assert result.stop_reason == "three episodes"
    assert result.episodes == 3
    steps, episodes = steps_and_episodes(records)
    assert len(episodes) == 3 and len(steps) == result.steps


@pytest.mark.timeout(60)
async def test_a_plan_that_never_explores_takes_only_greedy_actions(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, """
        !learn.
        +!learn : episodes_done(N) & N >= 5 <- .rl_stop("five").
        +!learn <- .rl_reset; while (not done) { .rl_choose(greedy); .rl_step; .rl_learn }; .rl_end_episode; !!learn.
    """)
    records = RecordBuffer()
    agent = LearningAgent(unique_jid("greedy"), "pw", config("greedy"), asl_path=asl, records=records,
                          port=xmpp_server.client_port)
    result = await run(agent)
    steps, _ = steps_and_episodes(records)
    assert result.ok and len(steps) == result.steps > 0
    assert {s.policy_label for s in steps} == {"greedy"}
    # With an all-zero Q-table and no reward on the way, the greedy action is always the first
    # (LEFT): the agent never leaves the start and every episode runs into the time limit.
    assert {s.action_json for s in steps} == {"0"}
    assert {s.observation_json for s in steps} == {"0"}
    assert result.steps == 5 * 100


@pytest.mark.timeout(60)
async def test_a_plan_reacting_to_the_goal_fires_when_the_goal_is_reached(xmpp_server, unique_jid, tmp_path):
    # Random exploration forever, unless a reaction to +goal_reached stops it: the result can only
    # say "goal" if that plan fired, and the last step must be the rewarded one.
    asl = plans(tmp_path, """
        !learn.
        +!learn <- .rl_reset; while (not done) { .rl_choose(explore); .rl_step; .rl_learn }; .rl_end_episode; !!learn.
        +goal_reached : episode(E) <- +celebrated(E); .rl_stop("goal").
    """)
    records = RecordBuffer(100_000)
    agent = LearningAgent(unique_jid("goal"), "pw", config("goal", episodes=10_000), asl_path=asl, records=records,
                          port=xmpp_server.client_port)
    result = await run(agent)
    assert result.stop_reason == "goal"
    steps, episodes = steps_and_episodes(records)
    assert steps[-1].reward == 1.0 and steps[-1].terminated
    assert episodes[-1].metadata["success"] is True
    assert sum(e.metadata["success"] for e in episodes) == 1
    celebrated = agent.bdi_agent.beliefs[("celebrated", 1)]
    assert [b.args[0] for b in celebrated] == [steps[-1].episode_index]


@pytest.mark.timeout(60)
async def test_a_hole_reaction_can_change_the_plan(xmpp_server, unique_jid, tmp_path):
    # Count holes with a mental note; stop after the second.
    asl = plans(tmp_path, """
        holes(0).
        !learn.
        +!learn <- .rl_run_episode(explore); !!learn.
        +fell_in_hole : holes(H) & H >= 1 <- .rl_stop("second hole").
        +fell_in_hole : holes(H) <- -+holes(H + 1).
    """)
    records = RecordBuffer(100_000)
    agent = LearningAgent(unique_jid("holes"), "pw", config("holes", episodes=10_000), asl_path=asl, records=records,
                          port=xmpp_server.client_port)
    result = await run(agent)
    assert result.stop_reason == "second hole"
    _, episodes = steps_and_episodes(records)
    assert [e.metadata["outcome"] for e in episodes].count("hole") == 2


@pytest.mark.timeout(60)
async def test_plans_ending_without_stop_still_finish(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, "!go.\n+!go <- .rl_run_episode(epsilon); .rl_run_episode(epsilon).\n")
    agent = LearningAgent(unique_jid("ends"), "pw", config("ends"), asl_path=asl, port=xmpp_server.client_port)
    result = await run(agent, timeout=30)
    assert result.ok
    assert result.episodes == 2
    assert result.stop_reason == "plans ended without .rl_stop"


@pytest.mark.timeout(60)
async def test_an_action_that_raises_is_reported_and_finishes_the_agent(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, "!go.\n+!go <- .rl_reset;\n  .rl_step(7).\n")  # FrozenLake has 4 actions
    agent = LearningAgent(unique_jid("broken"), "pw", config("broken"), asl_path=asl, port=xmpp_server.client_port)
    try:
        await agent.start()
        with pytest.raises(AgentFailedError) as caught:
            await agent.finished(timeout=20, raise_on_error=True)
    finally:
        await agent.stop()
    failure = caught.value.failure
    assert failure.agent == agent.name
    assert failure.action == ".rl_step/1"
    assert isinstance(failure.error, ValueError) and "outside range(4)" in str(failure.error)
    assert failure.location == f"{asl}:3"
    assert agent.result.stop_reason == "error" and not agent.result.ok
    assert agent.bdi.is_killed()


class AgentWithBrokenAction(LearningAgent):
    def add_custom_actions(self, actions) -> None:
        super().add_custom_actions(actions)

        @actions.add(".explode", 0)
        def _explode(agent, term, intention):
            raise RuntimeError("boom")
            yield


@pytest.mark.timeout(60)
async def test_a_custom_action_that_raises_is_named(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, "!go.\n+!go <- .rl_run_episode(epsilon); .explode; .rl_stop.\n")
    agent = AgentWithBrokenAction(unique_jid("boom"), "pw", config("boom"), asl_path=asl, port=xmpp_server.client_port)
    result = await run(agent, timeout=20)
    assert result.error is not None
    assert (result.error.agent, result.error.action, str(result.error.error)) == (agent.name, ".explode/0", "boom")
    assert result.episodes == 1  # what happened before the failure is still counted
    assert "action .explode/0" in str(result.error) and "boom" in str(result.error)


@pytest.mark.timeout(60)
async def test_a_plan_failure_is_reported_with_its_location(xmpp_server, unique_jid, tmp_path):
    # .rl_learn before any step is a plan error, not a Python bug: the message says what to do.
    asl = plans(tmp_path, "!go.\n+!go <- .rl_reset;\n   .rl_learn.\n")
    agent = LearningAgent(unique_jid("misuse"), "pw", config("misuse"), asl_path=asl, port=xmpp_server.client_port)
    result = await run(agent, timeout=20)
    assert result.error.action == ".rl_learn/0"
    assert "call .rl_step first" in str(result.error.error)
    assert result.error.location == f"{asl}:3"


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_an_idle_agent_does_not_spin(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, "!go.\n+!go <- .rl_run_episode(epsilon).\n")
    agent = LearningAgent(unique_jid("idle"), "pw", config("idle"), asl_path=asl, port=xmpp_server.client_port,
                          finish_when_idle=False)
    await agent.start()
    try:
        deadline = time.monotonic() + 20
        while agent.episodes_done < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert agent.episodes_done == 1
        wall0, cpu0 = time.monotonic(), time.process_time()
        await asyncio.sleep(2.0)  # the measurement window itself, not a wait for a condition
        share = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        assert agent.is_alive() and not agent.bdi.is_killed()
        assert share < 0.25, f"an idle agent used {share:.0%} of a core"
    finally:
        await agent.stop()


@pytest.mark.timeout(30)
async def test_start_without_a_server_is_a_clear_error():
    port = free_port()
    agent = LearningAgent("lonely@localhost", "pw", config("lonely"), port=port, start_timeout=3)
    started = time.monotonic()
    with pytest.raises(AgentStartError) as caught:
        await agent.start()
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert f"localhost:{port}" in message and "spade run" in message
    await agent.stop()


@pytest.mark.slow
@pytest.mark.timeout(30)
async def test_start_against_a_silent_server_is_bounded():
    # Something accepts the connection but never speaks XMPP: without the bound, start() waits forever.
    async def silent(reader, writer):
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    agent = LearningAgent("patient@localhost", "pw", config("patient"), port=port, start_timeout=2)
    try:
        with pytest.raises(AgentStartError, match=r"no XMPP session within 2s"):
            await agent.start()
    finally:
        await agent.stop()
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(60)
async def test_the_gate_is_awaited_before_every_step_and_can_pause(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, """
        !learn.
        +!learn : episodes_done(N) & N >= 40 <- .rl_stop("forty").
        +!learn : episodes_done(N) & N >= 20 <- .rl_run_episode(epsilon); !!learn.
        +!learn <- .rl_reset; while (not done) { .rl_choose(epsilon); .rl_step; .rl_learn }; .rl_end_episode; !!learn.
    """)
    open_ = asyncio.Event()
    open_.set()
    calls: list[str] = []

    async def gate(agent_id: str) -> None:
        calls.append(agent_id)
        await asyncio.sleep(0)  # like a real gate, let the test's own task run
        await open_.wait()

    records = RecordBuffer()
    agent = LearningAgent(unique_jid("gated"), "pw", config("gated"), asl_path=asl, records=records,
                          port=xmpp_server.client_port, gate=gate)
    await agent.start()
    try:
        deadline = time.monotonic() + 20
        while agent.total_steps < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        open_.clear()  # pause: the agent must stop stepping
        paused_at = agent.total_steps
        while len(calls) <= paused_at and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert agent.total_steps == paused_at and not agent._finished.is_set()
        open_.set()
        result = await agent.finished(30)
    finally:
        await agent.stop()
    assert result.stop_reason == "forty"
    # One gate call per step: both in step-by-step episodes and in whole-episode actions.
    assert calls == ["gated"] * result.steps


@pytest.mark.timeout(60)
async def test_a_full_buffer_pauses_the_agent_and_loses_nothing(xmpp_server, unique_jid, tmp_path):
    records = RecordBuffer(capacity=8)
    agent = LearningAgent(unique_jid("squeezed"), "pw", config("squeezed", episodes=20), records=records,
                          port=xmpp_server.client_port)
    received: list = []
    peak = 0

    async def slow_consumer():
        nonlocal peak
        while True:
            peak = max(peak, len(records))
            received.extend(records.drain(3).records())
            await asyncio.sleep(0.001)

    consumer = asyncio.create_task(slow_consumer())
    try:
        result = await run(agent, timeout=60)
        deadline = time.monotonic() + 10
        while len(received) < result.steps + result.episodes and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        consumer.cancel()
    steps = [r for r in received if isinstance(r, StepRecord)]
    episodes = [r for r in received if isinstance(r, EpisodeRecord)]
    assert (len(steps), len(episodes)) == (result.steps, result.episodes) == (records.steps_put, records.episodes_put)
    assert [(s.episode_index, s.step_index) for s in steps] == sorted((s.episode_index, s.step_index) for s in steps)
    # The agent waits whenever the buffer is full: it overshoots by at most the episode record
    # that closes the step that filled it.
    assert 8 <= peak <= 9


@pytest.mark.timeout(60)
async def test_beliefs_are_numbers_and_current(xmpp_server, unique_jid, tmp_path):
    # A plan reads the beliefs an action just wrote, in the same plan body, and checks their types.
    asl = plans(tmp_path, """
        !go.
        +!go <- .rl_reset; .rl_choose(greedy, A); .rl_step;
                ?state(S); ?step(K); ?last_reward(R); ?epsilon(E); ?action(A2); ?episode(I);
                .number(S); .number(K); .number(R); .number(E);
                +seen(S, K, R, A, A2, I);
                .rl_stop("checked").
    """)
    agent = LearningAgent(unique_jid("beliefs"), "pw", config("beliefs"), asl_path=asl, port=xmpp_server.client_port)
    result = await run(agent, timeout=20)
    assert result.ok, result.error
    (seen,) = agent.bdi_agent.beliefs[("seen", 6)]
    state, step, reward, action, action_belief, episode = seen.args
    assert (step, reward, action, action_belief, episode) == (1, 0.0, 0, 0, 0)
    assert state == 0  # LEFT from the start stays at the start


@pytest.mark.timeout(60)
async def test_a_message_wakes_an_idle_agent(xmpp_server, unique_jid, tmp_path):
    listener_jid, speaker_jid = unique_jid("listener"), unique_jid("speaker")
    listener_asl = plans(tmp_path, '+hello(Name)[source(S)] <- +greeted_by(Name); .rl_stop("greeted").\n', "listener.asl")
    speaker_asl = plans(
        tmp_path,
        f'!greet.\n+!greet <- .my_name(Me); .send("{listener_jid}", tell, hello(Me)); .rl_stop("sent").\n',
        "speaker.asl",
    )
    listener = LearningAgent(listener_jid, "pw", config("listener"), asl_path=listener_asl,
                             port=xmpp_server.client_port, finish_when_idle=False, eval_episodes=0)
    speaker = LearningAgent(speaker_jid, "pw", config("speaker"), asl_path=speaker_asl,
                            port=xmpp_server.client_port, eval_episodes=0)
    await listener.start()
    try:
        speaker_result = await run(speaker, timeout=20)
        listener_result = await listener.finished(timeout=20)
    finally:
        await listener.stop()
    assert speaker_result.stop_reason == "sent"
    assert listener_result.stop_reason == "greeted"
    (greeted,) = listener.bdi_agent.beliefs[("greeted_by", 1)]
    # .my_name gives plans the JID as a string (spade-bdi's transport turns it into an atom).
    assert str(greeted.args[0]) == speaker_jid


@pytest.mark.timeout(60)
async def test_no_applicable_plan_at_run_time_is_reported(xmpp_server, unique_jid, tmp_path):
    asl = plans(tmp_path, "!go.\n+!go <- .rl_run_episode(epsilon);\n  !celebrate.\n+!celebrate : trophy(_) <- true.\n")
    agent = LearningAgent(unique_jid("noplan"), "pw", config("noplan"), asl_path=asl, port=xmpp_server.client_port)
    result = await run(agent, timeout=20)
    assert result.error is not None and result.error.action is None
    assert "no applicable plan for +!celebrate/0" in str(result.error)
    assert result.error.location == f"{asl}:3"


async def test_an_initial_goal_without_applicable_plan_is_an_asl_error(tmp_path):
    from agents.asl_check import AslError

    asl = plans(tmp_path, "!go.\n+!go : false <- true.\n")
    with pytest.raises(AslError, match="no applicable plan for \\+!go/0"):
        LearningAgent("nogo@localhost", "pw", config("nogo"), asl_path=asl)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("plan_file", ["learner.asl", "learner_fast.asl"])
async def test_plans_learn_exactly_what_the_plain_loop_learns(xmpp_server, unique_jid, plan_file):
    """Same config, same seed: the plan-driven agent's Q-table is the plain loop's, bit for bit.

    This is what makes the agent's numbers trustworthy: the plans decide *when* to act, the
    learner's own epsilon-greedy rule (random tie-breaking included) decides *what*.
    """
    from agents.training import train_from_config

    cfg = config("twin", episodes=150, seed=7, slippery=True)
    agent = LearningAgent(unique_jid("twin"), "pw", cfg, asl_path=ASL_DIR / plan_file,
                          records=RecordBuffer(1_000_000), port=xmpp_server.client_port)
    result = await run(agent)
    assert result.ok and result.episodes == 150
    plain = train_from_config(cfg)
    assert result.steps == sum(plain.lengths)
    assert (agent.learner.q == plain.learner.q).all()


@pytest.mark.timeout(60)
async def test_stop_while_learning_takes_the_result_after_the_last_plan_step(xmpp_server, unique_jid, tmp_path):
    # Endless step-by-step learning; the gate yields like a real one, so a step is always pending.
    asl = plans(tmp_path, """
        !learn.
        +!learn <- .rl_reset; while (not done) { .rl_choose(epsilon); .rl_step; .rl_learn }; .rl_end_episode; !!learn.
    """)

    async def gate(agent_id: str) -> None:
        await asyncio.sleep(0)

    records = RecordBuffer(capacity=1_000_000)
    agent = LearningAgent(unique_jid("stopped"), "pw", config("stopped", episodes=10**6), asl_path=asl,
                          records=records, port=xmpp_server.client_port, gate=gate)
    await agent.start()
    try:
        deadline = time.monotonic() + 20
        while agent.total_steps < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        await agent.stop()
    result = agent.result
    assert result.stop_reason == "agent stopped before its plans finished"
    assert agent.bdi.is_killed()
    for _ in range(20):  # give a stray reasoning turn every chance to run
        await asyncio.sleep(0)
    assert (agent.total_steps, agent.episodes_done) == (result.steps, result.episodes)
    steps, episodes = steps_and_episodes(records)
    assert (len(steps), len(episodes)) == (result.steps, result.episodes)
