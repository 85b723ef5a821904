"""``python -m telemetry runs|tail|export|control`` as subprocesses against a real daemon."""
import asyncio
import csv
import json
import signal
import subprocess
import sys

import pytest

from telemetry.generated import trainer_pb2 as pb
from tests.fixtures_daemon import PROJECT_ROOT, episodes, iterate, register, steps, stub_for, wait_until


async def cli(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run the CLI in a thread, so the event loop the daemon runs in keeps serving it.
    (Not asyncio's subprocesses: they depend on the process's event-loop policy, which
    SPADE replaces.)"""
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "telemetry", *args], cwd=PROJECT_ROOT,
                                   capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


async def seed(daemon) -> None:
    """Run "alpha": 2 agents x 150 steps and 3 episodes each; run "beta": INIT."""
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "alpha")
        for agent in ("a1", "a2"):
            batch = pb.TelemetryBatch(run_id="alpha", steps=steps("alpha", agent, 150, per_episode=50),
                                      episodes=episodes("alpha", agent, 3, steps_each=50))
            await stub.PublishTelemetryBatch(iterate(batch), metadata=auth)
        await stub.SubmitRun(pb.SubmitRunRequest(run_id="beta", config_json="{}"))


@pytest.mark.timeout(120)
async def test_runs_lists_status_through_the_daemon_and_from_the_file(daemon) -> None:
    await seed(daemon)
    code, out, err = await cli("runs", "--target", daemon.address)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["RUN_ID", "STATUS"]
    assert [line.split()[:2] for line in lines[1:]] == [["alpha", "EXEC"], ["beta", "INIT"]]

    code, out, err = await cli("runs", "--target", daemon.address, "--status", "init")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == ["beta"]

    code, out, err = await cli("runs", "--db", daemon.store.path)
    assert code == 0, err
    header, alpha = out.splitlines()[:2]
    assert header.split()[-4:] == ["AGENTS", "STEPS", "EPISODES", "REASON"]
    assert alpha.split()[:2] == ["alpha", "EXEC"] and alpha.split()[-3:] == ["2", "300", "6"]


@pytest.mark.timeout(120)
async def test_export_writes_csv_and_jsonl_in_store_order(daemon, tmp_path) -> None:
    await seed(daemon)
    out_csv, out_jsonl = tmp_path / "alpha.csv", tmp_path / "alpha.jsonl"
    code, _, err = await cli("export", "alpha", "--format", "csv", "--out", str(out_csv), "--db", daemon.store.path)
    assert code == 0, err
    assert "wrote 300 steps" in err
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["seq_id"]) for r in rows] == list(range(1, 301))
    assert [r["agent_id"] for r in rows] == ["a1"] * 150 + ["a2"] * 150
    assert (rows[49]["episode_index"], rows[49]["step_index"], rows[49]["terminated"]) == ("0", "49", "True")
    assert rows[0]["policy_label"] == "eps-greedy" and float(rows[7]["reward"]) == 1.0

    code, _, err = await cli("export", "alpha", "--format", "jsonl", "--kind", "episodes", "--agent", "a2",
                             "--out", str(out_jsonl), "--db", daemon.store.path)
    assert code == 0, err
    records = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert [(r["seq_id"], r["agent_id"], r["episode_index"]) for r in records] == [(4, "a2", 0), (5, "a2", 1), (6, "a2", 2)]
    assert records[0]["terminated"] is True and records[0]["metadata_json"] == '{"epsilon": 0.5}'

    code, out, err = await cli("export", "alpha", "--format", "jsonl", "--out", "-", "--db", daemon.store.path)
    assert code == 0 and len(out.splitlines()) == 300


@pytest.mark.timeout(120)
async def test_control_reaches_the_run_s_producers(daemon) -> None:
    await seed(daemon)
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, "alpha", worker_id="producer")
        producer = stub.ControlStream(iterate(pb.ControlEvent(run_id="alpha", subscribe=True)), metadata=auth)
        await wait_until(lambda: daemon.relay.subscribers("alpha") == 1, what="the producer's subscription")
        for args, field, value in ((("--pause",), "pause", True), (("--grant", "7", "--agent", "a1"), "grant_steps", 7),
                                   (("--rate", "20"), "max_rate_hz", 20), (("--resume",), "resume", True)):
            code, out, err = await cli("control", "alpha", *args, "--target", daemon.address)
            assert code == 0, err
            assert out.startswith("run alpha: ")
            event = await asyncio.wait_for(producer.read(), 10)
            assert (event.WhichOneof("event"), getattr(event, field)) == (field, value)
            if field == "pause":
                assert daemon.registry.get("alpha").status.name == "PAUSE"
        producer.cancel()
        assert daemon.registry.get("alpha").status.name == "EXEC"

    code, _, err = await cli("control", "beta", "--pause", "--target", daemon.address)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "INIT" in err
    code, _, err = await cli("control", "nobody", "--pause", "--target", daemon.address)
    assert code == 1 and "no run 'nobody'" in err


@pytest.mark.timeout(120)
async def test_tail_follows_steps_and_episodes_live(daemon) -> None:
    await seed(daemon)
    process = subprocess.Popen(
        [sys.executable, "-m", "telemetry", "tail", "alpha", "--since", "145", "--episodes-since", "4",
         "--target", daemon.address], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []

        async def read_until(predicate) -> None:
            while not predicate():
                line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
                assert line, process.stderr.read()
                lines.append(line)

        def count(kind: str, agent: str) -> int:
            return sum(1 for line in lines if line.startswith(kind) and f"agent={agent} " in line)

        # Replay from step seq 145: 5 steps of a1, 150 of a2; episodes from --episodes-since 4.
        await read_until(lambda: count("step", "a2") == 150 and count("step", "a1") == 5
                         and count("episode", "a2") == 2)
        assert count("episode", "a1") == 0
        channel, stub = stub_for(daemon)
        async with channel:
            auth = await register(stub, "alpha")
            batch = pb.TelemetryBatch(run_id="alpha", steps=steps("alpha", "a3", 2),
                                      episodes=episodes("alpha", "a3", 146)[-1:])
            await stub.PublishTelemetryBatch(iterate(batch), metadata=auth)
        await read_until(lambda: count("step", "a3") == 2 and count("episode", "a3") == 1)
        live_step = [line for line in lines if "agent=a3" in line and line.startswith("step")][0]
        assert "#301" in live_step and "ep=0" in live_step
        episode = [line for line in lines if line.startswith("episode") and "agent=a3" in line][0]
        assert "#7" in episode and "ep=145" in episode and "return=" in episode
    finally:
        process.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(process.wait, 30)
    assert code == 0
    assert "Traceback" not in process.stderr.read()
    process.stdout.close()
    process.stderr.close()


@pytest.mark.timeout(60)
async def test_cli_errors_are_one_line(tmp_path) -> None:
    code, _, err = await cli("runs", "--target", "127.0.0.1:1")
    assert code == 1 and "cannot reach the telemetry daemon" in err and len(err.strip().splitlines()) == 1
    code, _, err = await cli("export", "x", "--format", "csv", "--out", str(tmp_path / "x.csv"),
                             "--db", str(tmp_path / "none.db"))
    assert code == 1 and "cannot open database" in err and not (tmp_path / "none.db").exists()
    code, _, err = await cli("export", "x", "--format", "xml", "--out", "-")
    assert code == 2 and "invalid choice" in err and "Traceback" not in err



async def finished_run(daemon, run_id: str) -> tuple:
    """A run of two agents (30 steps, 3 episodes each) that its producer finished; the
    producer's token (a late flush or spool replay may still use it)."""
    channel, stub = stub_for(daemon)
    async with channel:
        auth = await register(stub, run_id)
        for agent in ("a1", "a2"):
            await stub.PublishRunSteps(iterate(*steps(run_id, agent, 30, per_episode=10)), metadata=auth)
            await stub.PublishRunEpisodes(iterate(*episodes(run_id, agent, 3, steps_each=10)), metadata=auth)
        await stub.FinishRun(pb.FinishRunRequest(run_id=run_id), metadata=auth)
    return auth


@pytest.mark.timeout(120)
async def test_tail_of_a_finished_run_prints_everything_then_how_it_ended_and_exits_0(daemon) -> None:
    await finished_run(daemon, "ended")
    for extra, agents in (((), {"a1", "a2"}), (("--agent", "a2"), {"a2"})):
        code, out, err = await cli("tail", "ended", "--target", daemon.address, *extra)
        assert code == 0, err
        *records, last = out.splitlines()
        assert sum(line.startswith("step") for line in records) == 30 * len(agents)
        assert sum(line.startswith("episode") for line in records) == 3 * len(agents)
        assert {line.split("agent=")[1].split()[0] for line in records} == agents
        assert last == "run ended ended TERM: 60 steps, 6 episodes"


@pytest.mark.timeout(120)
async def test_tail_follow_keeps_following_after_the_run_ended(daemon) -> None:
    auth = await finished_run(daemon, "followed")
    process = subprocess.Popen(
        [sys.executable, "-m", "telemetry", "tail", "followed", "--follow", "--kind", "steps", "--target", daemon.address],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30) for _ in range(60)]
        assert all(line.startswith("step") for line in lines)
        # A late record (e.g. a spool replay) reaches the finished run: --follow prints it too.
        channel, stub = stub_for(daemon)
        async with channel:
            await stub.PublishRunSteps(iterate(*steps("followed", "a3", 1)), metadata=auth)
        late = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
        assert "agent=a3 " in late and process.poll() is None
    finally:
        process.kill()
        await asyncio.to_thread(process.wait, 30)
