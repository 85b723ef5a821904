"""The agent container on a real XMPP server and a real daemon: agents learn, the daemon holds
exactly what each agent did, failures end the run with the agent and action named, and the
command line gives clear errors and honest exit codes without hanging."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agents.bdi_agent import ASL_DIR
from agents.config import ContainerConfig, parse_container_config
from agents.container import ContainerError, ContainerRun, TelemetryOutcome, exit_code, run_agents, with_overrides
from agents.demo import stored_counts
from agents.progress import SummaryRow, describe_failures, describe_telemetry, summary_table
from agents.xmpp_server import free_port
from telemetry.daemon import serve
from telemetry.runs import RunStatus
from tests.fixtures_daemon import PROJECT_ROOT, run_env

QUICK = {"alpha": 0.5, "gamma": 0.95, "epsilon_start": 1.0, "epsilon_min": 0.05, "epsilon_decay": 0.98}


def container(run_id: str, agents: list[dict], *, xmpp_port: int, target: str, telemetry: dict | None = None) -> ContainerConfig:
    config = parse_container_config(
        {
            "run_id": run_id,
            "telemetry": {"target": target, **(telemetry or {})},
            "agent_defaults": {"env_id": "FrozenLake-v1", "env_kwargs": {"is_slippery": False}, "hyperparameters": QUICK},
            "agents": agents,
        }
    )
    return with_overrides(config, xmpp_port=xmpp_port)


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agents", *args],
        cwd=cwd,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(240)
async def test_two_agents_learn_and_the_daemon_holds_each_ones_records(agents_xmpp, daemon, tmp_path):
    config = container(
        "container-two",
        [
            {"agent_id": "stepper", "episodes": 300, "seed": 1, "asl": str(ASL_DIR / "learner.asl")},
            {"agent_id": "sprinter", "episodes": 300, "seed": 2, "asl": str(ASL_DIR / "learner_fast.asl")},
        ],
        xmpp_port=agents_xmpp.client_port,
        target=daemon.address,
    )
    run = await run_agents(config, spool_dir=tmp_path / "spool")

    assert run.ok, run.failures
    assert run.telemetry.mode == "grpc" and run.telemetry.pending_in_spool == 0
    stored = stored_counts(daemon.store, "container-two", ["stepper", "sprinter"])
    assert sorted(daemon.store.agent_ids("container-two")) == ["sprinter", "stepper"]
    for outcome in run.outcomes:
        result = outcome.result
        assert result.greedy_success_rate == 1.0, outcome.agent_id
        assert result.episodes == 300
        assert (outcome.steps_sent, outcome.episodes_sent) == (result.steps, result.episodes)
        assert stored[outcome.agent_id] == (result.steps, result.episodes)
    episodes = daemon.store.read_episodes("container-two", agent_id="sprinter", limit=1000)
    assert [e.episode_index for e in episodes] == list(range(300))
    assert sum(e.steps for e in episodes) == stored["sprinter"][0]
    # The container finished its run: TERM, not left in EXEC for the FAULT watch.
    finished = daemon.store.get_run("container-two")
    assert finished.status == RunStatus.TERM and not finished.failure_reason


@pytest.mark.timeout(120)
async def test_with_the_daemon_down_records_wait_in_the_spool_and_reach_it_later(agents_xmpp, tmp_path):
    port = free_port()
    target = f"127.0.0.1:{port}"
    spool = tmp_path / "spool"
    fast = {"episodes": 30, "asl": str(ASL_DIR / "learner_fast.asl")}
    offline = container("while-down", [{"agent_id": "early", **fast}], xmpp_port=agents_xmpp.client_port, target=target)
    run = await run_agents(offline, spool_dir=spool, close_timeout_s=2)

    result = run.outcomes[0].result
    assert run.ok and run.telemetry.delivered == 0
    assert run.telemetry.pending_in_spool == result.steps + result.episodes
    assert f"wait in the spool {spool / f'127.0.0.1_{port}'}" in describe_telemetry(run)

    daemon = await serve(target, tmp_path / "later.db")
    try:
        online = container("once-up", [{"agent_id": "late", **fast}], xmpp_port=agents_xmpp.client_port, target=target)
        later = await run_agents(online, spool_dir=spool)
        assert later.telemetry.pending_in_spool == 0
        assert stored_counts(daemon.store, "while-down", ["early"])["early"] == (result.steps, result.episodes)
        # The run's end travelled in the spool behind its records: TERM, as its producer ended it.
        ended = daemon.registry.get("while-down")
        assert ended.status is RunStatus.TERM and not ended.failure_reason
    finally:
        await daemon.stop()


@pytest.mark.timeout(120)
async def test_an_agent_whose_action_raises_fails_the_run_naming_agent_and_action(xmpp_server, tmp_path):
    bad = write_config(
        tmp_path / "bad.asl",
        """\
        !go.
        +!go <- .rl_reset; .rl_step(7).
        """,
    )
    config = container(
        "container-fails",
        [
            {"agent_id": "healthy", "episodes": 20, "asl": str(ASL_DIR / "learner_fast.asl")},
            {"agent_id": "broken", "episodes": 20, "asl": str(bad)},
        ],
        xmpp_port=xmpp_server.client_port,
        target="127.0.0.1:1",
        telemetry={"use_grpc_telemetry": False, "jsonl_stdout": False},
    )
    run = await asyncio.wait_for(run_agents(config), 60)

    assert [o.agent_id for o in run.failures] == ["broken"]
    error = run.failures[0].error
    assert "broken" in error and ".rl_step/1" in error and "bad.asl:2" in error
    healthy = next(o for o in run.outcomes if o.agent_id == "healthy")
    assert healthy.ok and healthy.result.episodes == 20


@pytest.mark.timeout(60)
async def test_no_xmpp_server_is_a_clear_error_within_seconds(tmp_path):
    config = container(
        "no-server",
        [{"agent_id": "lonely", "episodes": 5}],
        xmpp_port=free_port(),
        target="127.0.0.1:1",
        telemetry={"use_grpc_telemetry": False},
    )
    started = time.monotonic()
    with pytest.raises(ContainerError) as caught:
        await run_agents(config)
    assert time.monotonic() - started < 10
    assert "spade run" in str(caught.value) and "--embedded-xmpp" in str(caught.value)


def test_cli_without_an_xmpp_server_says_how_to_start_one(tmp_path):
    port = free_port()
    config = write_config(
        tmp_path / "one.toml",
        f"""\
        run_id = "cli-no-server"
        [xmpp]
        port = {port}
        [telemetry]
        use_grpc_telemetry = false
        [[agents]]
        agent_id = "a"
        env_id = "FrozenLake-v1"
        episodes = 5
        """,
    )
    done = run_cli("run", str(config), cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert f"no XMPP server answers at localhost:{port}" in done.stderr
    assert f"spade run --client_port {port}" in done.stderr and "--embedded-xmpp" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_bad_config_exits_2_with_the_key_named(tmp_path):
    config = write_config(
        tmp_path / "bad.toml",
        """\
        run_id = "bad"
        [[agents]]
        agent_id = "a"
        env_id = "FrozenLake-v1"
        [agents.hyperparameters]
        alpha = 1.5
        """,
    )
    done = run_cli("run", str(config), cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "agents[0].hyperparameters.alpha must be in (0, 1], got 1.5" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_invalid_plan_file_exits_2_naming_file_and_line(tmp_path):
    write_config(tmp_path / "typo.asl", "!go.\n+!go <- .rl_reset;\n    .rl_stepp.\n")
    config = write_config(
        tmp_path / "typo.toml",
        """\
        run_id = "cli-typo"
        [telemetry]
        use_grpc_telemetry = false
        [[agents]]
        agent_id = "typo"
        env_id = "FrozenLake-v1"
        asl = "typo.asl"
        """,
    )
    done = run_cli("run", str(config), "--embedded-xmpp", "--xmpp-port", "0", cwd=tmp_path, timeout=90)
    assert done.returncode == 2, done.stderr
    assert "invalid plan file" in done.stderr and "typo.asl:3" in done.stderr and ".rl_stepp" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_failing_action_exits_non_zero_naming_agent_and_action(tmp_path):
    write_config(tmp_path / "bad.asl", "!go.\n+!go <- .rl_reset; .rl_step(7).\n")
    config = write_config(
        tmp_path / "fails.toml",
        """\
        run_id = "cli-fails"
        [telemetry]
        use_grpc_telemetry = false
        jsonl_stdout = false
        [[agents]]
        agent_id = "broken"
        env_id = "FrozenLake-v1"
        asl = "bad.asl"
        """,
    )
    done = run_cli("run", str(config), "--embedded-xmpp", "--xmpp-port", "0", cwd=tmp_path, timeout=90)
    assert done.returncode == 1, done.stderr
    assert "error: agent broken: action .rl_step/1 at" in done.stderr
    assert "FAILED" in done.stdout and "broken" in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_task_that_ignores_cancellation_does_not_hang_the_finished_process(tmp_path):
    """asyncio.run waits for ever for a task that swallows its cancellation; run_process gives
    leftovers EXIT_GRACE_S, then exits with the container's code, naming them."""
    script = tmp_path / "stubborn.py"
    script.write_text(textwrap.dedent("""\
        import asyncio
        from agents.container import run_process

        async def stubborn():
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass

        async def main(stop):
            asyncio.get_running_loop().create_task(stubborn(), name="stubborn-task")
            await asyncio.sleep(0)
            return 3

        raise SystemExit(run_process(main))
        """))
    done = subprocess.run([sys.executable, str(script)], cwd=PROJECT_ROOT, env=run_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 3, done.stderr
    assert "did not end within" in done.stderr and "stubborn-task" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_cli_ctrl_c_stops_the_agents_flushes_telemetry_and_exits_130(daemon, tmp_path):
    config = write_config(
        tmp_path / "long.toml",
        f"""\
        run_id = "cli-interrupted"
        [telemetry]
        target = "{daemon.address}"
        [[agents]]
        agent_id = "marathon"
        env_id = "FrozenLake-v1"
        episodes = 10000000
        asl = "{ASL_DIR / 'learner_fast.asl'}"
        """,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agents", "run", str(config), "--embedded-xmpp", "--xmpp-port", "0",
        cwd=tmp_path, env={**run_env(), "XDG_DATA_HOME": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while stored_counts(daemon.store, "cli-interrupted", ["marathon"])["marathon"][0] < 1000:
            assert time.monotonic() < deadline, "the agent's steps never reached the daemon"
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130, stderr.decode()
    assert "interrupted" in stderr.decode() and "Traceback" not in stderr.decode()
    row = next(line for line in stdout.decode().splitlines() if line.startswith("marathon ") and "interrupted" in line)
    steps = int(row.split()[2])
    assert stored_counts(daemon.store, "cli-interrupted", ["marathon"])["marathon"][0] == steps
    # Interrupted is not a clean end: TERM, marked cancelled.
    run = daemon.registry.get("cli-interrupted")
    assert run.status is RunStatus.TERM and run.failure_reason.startswith("cancelled: interrupted"), run


def test_summary_table_lines_up_and_marks_failures():
    table = summary_table(
        [
            SummaryRow("a", 300, 3515, 1.0, 1.0, 9654.2, "episodes target reached", True),
            SummaryRow("broken-agent", 0, 1, None, None, 0.0, "agent broken-agent: action .rl_step/1 failed", False),
        ]
    )
    header, rule, first, second = table.splitlines()
    assert header.split()[:3] == ["agent", "episodes", "steps"]
    assert first.split()[:6] == ["a", "300", "3515", "100%", "1.000", "9,654"]
    assert "FAILED: agent broken-agent" in second and second.split()[3:6] == ["-", "-", "-"]
    assert len(rule) == max(len(line) for line in table.splitlines())


def test_python_m_agents_lists_its_commands():
    done = subprocess.run([sys.executable, "-m", "agents", "--help"], cwd=PROJECT_ROOT, env=run_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "run" in done.stdout and "demo" in done.stdout


def test_records_the_daemon_refused_fail_the_run_by_name() -> None:
    """The daemon refusing records (kept in the spool's rejected folder) leaves the run without
    them: the container must not exit 0 as if everything were stored."""
    delivered = TelemetryOutcome(mode="grpc", target="127.0.0.1:50055", accepted=10, delivered=10)
    refused = TelemetryOutcome(mode="grpc", target="127.0.0.1:50055", accepted=10, delivered=8, refused=2,
                               first_refusal="the daemon refused a telemetry batch of run 'r' (step 3: reward ...)")
    good = ContainerRun("r", [], delivered, "127.0.0.1:5222", True)
    bad = ContainerRun("r", [], refused, "127.0.0.1:5222", True)
    assert exit_code(good) == 0 and good.ok and describe_failures(good) == []
    assert exit_code(bad) == 1 and not bad.ok
    [line] = describe_failures(bad)
    assert "refused 2 record(s) of run r" in line and "step 3" in line
