"""One run_id is one run, against a real daemon and real agents: a second container for a
finished run is refused and leaves the first run's records exactly as they were; resuming on
purpose continues the episode numbering; templates give fresh ids; a run that cannot start
ends FAULT at once with the real reason."""

from __future__ import annotations

import dataclasses
import re
import textwrap

import pytest

from agents.bdi_agent import ASL_DIR
from agents.config import parse_container_config
from agents.container import EXIT_BAD_INPUT, ContainerError, run_agents
from agents.demo import stored_counts
from telemetry.runs import RunStatus
from telemetry.store import TelemetryStore
from tests.test_container import container, run_cli

FAST = {"episodes": 40, "asl": str(ASL_DIR / "learner_fast.asl")}


@pytest.mark.timeout(180)
async def test_a_finished_run_id_is_refused_and_its_records_stay_exact(agents_xmpp, daemon, tmp_path):
    first = container("one-run", [{"agent_id": "a", "seed": 1, **FAST}], xmpp_port=agents_xmpp.client_port,
                      target=daemon.address)
    done = await run_agents(first, spool_dir=tmp_path / "spool")
    assert done.ok
    before = stored_counts(daemon.store, "one-run", ["a"])["a"]
    assert before == (done.outcomes[0].result.steps, 40)

    again = container("one-run", [{"agent_id": "a", "seed": 2, **FAST}], xmpp_port=agents_xmpp.client_port,
                      target=daemon.address)
    with pytest.raises(ContainerError) as refused:
        await run_agents(again, spool_dir=tmp_path / "spool")
    message = str(refused.value)
    assert refused.value.exit_code == EXIT_BAD_INPUT
    assert "'one-run' has already finished (TERM" in message and "--resume" in message
    assert stored_counts(daemon.store, "one-run", ["a"])["a"] == before
    assert daemon.store.get_run("one-run").status == RunStatus.TERM


@pytest.mark.timeout(180)
async def test_resuming_continues_the_episode_numbering(agents_xmpp, daemon, tmp_path):
    first = container("resumed", [{"agent_id": "a", "seed": 1, **FAST}], xmpp_port=agents_xmpp.client_port,
                      target=daemon.address)
    assert (await run_agents(first, spool_dir=tmp_path / "spool")).ok
    second = container("resumed", [{"agent_id": "a", "seed": 2, **FAST}], xmpp_port=agents_xmpp.client_port,
                       target=daemon.address)
    resumed = await run_agents(dataclasses.replace(second, resume=True), spool_dir=tmp_path / "spool")
    assert resumed.ok

    episodes = daemon.store.read_episodes("resumed", agent_id="a", limit=1000)
    assert [e.episode_index for e in episodes] == list(range(80))
    steps = daemon.store.read_steps("resumed", agent_id="a", limit=100_000)
    assert sorted({s.episode_index for s in steps}) == list(range(80))
    assert len(steps) == sum(e.steps for e in episodes)
    assert daemon.store.get_run("resumed").status == RunStatus.TERM


def test_run_id_templates_and_an_omitted_run_id_give_fresh_ids():
    agents = [{"agent_id": "a", "env_id": "FrozenLake-v1"}]
    templated = [parse_container_config({"run_id": "exp-{date}-{time}-{unique}", "agents": agents}).run_id
                 for _ in range(2)]
    assert all(re.fullmatch(r"exp-\d{8}-\d{6}-[0-9a-f]{6}", r) for r in templated), templated
    assert templated[0] != templated[1]
    omitted = parse_container_config({"agents": agents})
    assert re.fullmatch(r"run-\d{8}-\d{6}-[0-9a-f]{6}", omitted.run_id) and omitted.agents[0].run_id == omitted.run_id
    with pytest.raises(Exception, match="resume = true needs the run_id"):
        parse_container_config({"resume": True, "agents": agents})


def _config(tmp_path, name: str, run_id: str, target: str, asl: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""\
        run_id = "{run_id}"
        [telemetry]
        target = "{target}"
        [[agents]]
        agent_id = "solo"
        env_id = "FrozenLake-v1"
        episodes = 20
        asl = "{asl}"
        """))
    return str(path)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cli_refuses_a_finished_run_with_exit_2_and_resumes_it_on_purpose(daemon_process, tmp_path):
    daemon = daemon_process().start()
    config = _config(tmp_path, "twice", "cli-twice", daemon.address, str(ASL_DIR / "learner_fast.asl"))
    env_args = ("--embedded-xmpp", "--xmpp-port", "0")
    first = run_cli("run", config, *env_args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "run cli-twice" in first.stderr

    second = run_cli("run", config, *env_args, cwd=tmp_path)
    assert second.returncode == 2, second.stderr
    assert "'cli-twice' has already finished (TERM" in second.stderr and "--resume" in second.stderr
    assert "Traceback" not in second.stderr

    third = run_cli("run", config, *env_args, "--resume", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert "run cli-twice (resuming it)" in third.stderr


@pytest.mark.timeout(120)
def test_a_plan_error_finishes_the_run_fault_at_once_naming_file_and_line(daemon_process, tmp_path):
    daemon = daemon_process().start()
    (tmp_path / "typo.asl").write_text("!go.\n+!go <- .rl_reset;\n    .rl_stepp.\n")
    config = _config(tmp_path, "typo", "cli-plan-typo", daemon.address, "typo.asl")
    done = run_cli("run", config, "--embedded-xmpp", "--xmpp-port", "0", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    # No waiting for the FAULT watch (30 s by default): the run is over when the process is.
    store = TelemetryStore(daemon.db_path, create=False)
    try:
        run = store.get_run("cli-plan-typo")
    finally:
        store.close()
    assert run is not None and run.status == RunStatus.FAULT
    assert "typo.asl:3" in run.failure_reason and "no heartbeat" not in run.failure_reason
