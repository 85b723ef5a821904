"""`python -m agents.worker` as a caller runs it: JSON on stdin, one agent, telemetry
to a real daemon or JSON lines on stdout, its own embedded XMPP server when none answers, and
exit code 2 with a clear message for bad input. Ports come from `extra`, so nothing here touches
5222 or 50055."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.demo import stored_counts
from agents.xmpp_server import free_port
from telemetry.generated import trainer_pb2 as pb
from tests.fixtures_daemon import PROJECT_ROOT, run_env

GUIDE = {"run_id": "test_run", "env_id": "FrozenLake-v1", "agent_id": "test_agent", "episodes": 10, "extra": {"use_grpc_telemetry": True}}


def guide_json(**extra) -> str:
    """The guide's exact JSON, with test-only ports and addresses added to `extra`."""
    return json.dumps({**GUIDE, "extra": {**GUIDE["extra"], **extra}})


async def run_worker(stdin: str, tmp_path: Path, timeout: float = 90) -> tuple[int, str, str]:
    """The worker as a subprocess (asyncio, so an in-process daemon keeps serving meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agents.worker",
        cwd=tmp_path, env={**run_env(), "XDG_DATA_HOME": str(tmp_path)},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin.encode()), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.timeout(120)
async def test_the_guides_json_streams_one_agent_to_the_daemon(daemon, tmp_path):
    xmpp_port = free_port()
    code, stdout, stderr = await run_worker(guide_json(telemetry_target=daemon.address, xmpp_port=xmpp_port), tmp_path)

    assert code == 0, stderr
    assert stdout == ""  # everything for people goes to stderr
    assert f"no XMPP server answered at localhost:{xmpp_port}; started an embedded XMPP server at localhost:{xmpp_port}" in stderr
    assert f"delivered to the daemon at {daemon.address}" in stderr
    steps, episodes = stored_counts(daemon.store, "test_run", ["test_agent"])["test_agent"]
    assert episodes == 10
    stored = daemon.store.read_episodes("test_run", agent_id="test_agent")
    assert [e.episode_index for e in stored] == list(range(10))
    assert steps == sum(e.steps for e in stored) > 0
    assert daemon.store.agent_ids("test_run") == ["test_agent"]


@pytest.mark.timeout(120)
async def test_without_grpc_every_step_and_episode_is_a_json_line_on_stdout(tmp_path):
    code, stdout, stderr = await run_worker(guide_json(use_grpc_telemetry=False, xmpp_port=free_port()), tmp_path)

    assert code == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    steps = [line for line in lines if line["type"] == "step"]
    episodes = [line for line in lines if line["type"] == "episode"]
    assert len(steps) + len(episodes) == len(lines)
    assert [e["episode_index"] for e in episodes] == list(range(10))
    assert len(steps) == sum(e["steps"] for e in episodes)
    assert {line["agent_id"] for line in lines} == {"test_agent"} and {line["run_id"] for line in lines} == {"test_run"}
    # The same fields as the proto messages (seq_id is assigned by the daemon only).
    assert set(steps[0]) - {"type"} == {f.name for f in pb.RunStep.DESCRIPTOR.fields} - {"seq_id"}
    assert set(episodes[0]) - {"type"} == {f.name for f in pb.RunEpisode.DESCRIPTOR.fields} - {"seq_id"}
    assert "written as JSON lines to stdout" in stderr


@pytest.mark.timeout(120)
async def test_a_running_xmpp_server_is_used_rather_than_an_embedded_one(agents_xmpp, tmp_path):
    code, stdout, stderr = await run_worker(guide_json(use_grpc_telemetry=False, xmpp_port=agents_xmpp.client_port), tmp_path)
    assert code == 0, stderr
    assert "started an embedded XMPP server" not in stderr
    assert sum(1 for line in stdout.splitlines() if json.loads(line)["type"] == "episode") == 10


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ('{"run_id": "test_run", "env_id": ', "the worker config is not valid JSON"),
        (json.dumps({k: v for k, v in GUIDE.items() if k != "agent_id"}), "agent_id is required"),
        (json.dumps({**GUIDE, "env_id": "NoSuchEnv-v0"}), "NoSuchEnv-v0"),
    ],
    ids=["malformed-json", "missing-field", "unknown-env"],
)
def test_bad_input_exits_2_with_a_clear_message(stdin, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "agents.worker"],
        input=stdin, cwd=PROJECT_ROOT, env=run_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("python -m agents.worker: error: ") and message in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
