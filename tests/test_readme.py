"""The README says what the code does: the environments it lists are the ones the code tests
and names in its error messages, and every block of commands or code meant to run runs as
written."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from envs.ids import TESTED_ENV_IDS
from telemetry.runs import RunStatus
from tests.fixtures_daemon import PROJECT_ROOT, run_env

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_lists_exactly_the_tested_environments():
    sentence = README[README.index("Environments tested here"):]
    sentence = sentence[: sentence.index("work too")]
    listed = set(re.findall(r"\b[A-Z][A-Za-z0-9]*-v\d+\b", sentence))
    assert listed == set(TESTED_ENV_IDS)


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.timeout(60)
async def test_the_readmes_python_snippet_runs_as_written_and_ends_its_run(daemon, tmp_path):
    """The snippet as a script, run by a fresh interpreter; only the daemon's address differs
    (the test's daemon listens on a free port, not on the default one)."""
    [snippet] = _python_blocks()
    assert '"127.0.0.1:50055"' in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace('"127.0.0.1:50055"', f'"{daemon.address}"'))
    done = await asyncio.to_thread(subprocess.run, [sys.executable, str(script)], cwd=tmp_path, env={
        **run_env(), "XDG_DATA_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert daemon.store.counts("r1").steps == 1 and daemon.store.counts("r1").episodes == 1
    assert daemon.registry.get("r1").status is RunStatus.TERM


# -- every block meant to run, run as written ------------------------------------------------

MARKER = re.compile(r"<!-- readme-test: (\w+)(?: \((.*?)\))? -->\n```(\w+)\n(.*?)```", re.S)
FENCE = re.compile(r"^```(sh|python)$", re.M)
#: What a README placeholder stands for when the blocks run (the worker block's run).
PLACEHOLDERS = {"RUN_ID": "test_run"}
#: The port each kind of server a "terminals" block starts listens on once it is ready.
READY_PORTS = {"spade run": 5222, "python -m telemetry.daemon": 50055}
DEFAULT_PORTS = (5222, 5269, 9090, 50055, 50056)


def readme_blocks() -> list[tuple[str, str, str]]:
    """(marker, language, text) of every fenced sh/python block, in order."""
    return [(marker, language, text) for marker, _why, language, text in MARKER.findall(README)]


def test_every_fenced_block_says_whether_it_runs():
    assert len(readme_blocks()) == len(FENCE.findall(README)), (
        "put <!-- readme-test: run | terminals | skip (why) --> on the line before each ```sh / ```python block")
    assert {marker for marker, _, _ in readme_blocks()} <= {"run", "terminals", "skip"}


def _command(line: str) -> str:
    """A README line as the shell runs it: placeholders filled, [optional] parts left out."""
    line = re.sub(r"\s\[[^\]]*\]", "", line)
    for placeholder, value in PLACEHOLDERS.items():
        line = line.replace(placeholder, value)
    return line


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_every_readme_block_meant_to_run_runs_as_written(tmp_path):
    """In a fresh folder, with the virtualenv's commands first on PATH (as after `source
    .venv/bin/activate`): terminals blocks leave all but their last line running as servers;
    every other line must exit 0. The README's default ports must be free."""
    busy = [port for port in DEFAULT_PORTS if _port_open(port)]
    assert not busy, f"the README's default ports {busy} are in use: stop what listens there and run again"
    (tmp_path / "examples").symlink_to(PROJECT_ROOT / "examples")
    env = {**run_env(), "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           "XDG_DATA_HOME": str(tmp_path / "data")}
    servers: list[subprocess.Popen] = []

    def run(command: str, timeout: float = 180) -> None:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"

    try:
        for marker, language, text in readme_blocks():
            if marker == "skip":
                continue
            if language == "python":
                script = tmp_path / "snippet.py"
                script.write_text(text)
                run(f"python {script}")
                continue
            lines = [_command(line) for line in text.splitlines() if line.strip()]
            if marker == "terminals":
                background, lines = lines[:-1], lines[-1:]
                for line in background:
                    port = next(p for prefix, p in READY_PORTS.items() if line.startswith(prefix))
                    servers.append(subprocess.Popen(["bash", "-c", line], cwd=tmp_path, env=env, start_new_session=True,
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    deadline = time.monotonic() + 30
                    while not _port_open(port):
                        assert servers[-1].poll() is None, f"`{line}` exited {servers[-1].returncode}"
                        assert time.monotonic() < deadline, f"`{line}` did not listen on port {port} within 30 s"
                        time.sleep(0.1)
            for line in lines:
                run(line)
        # What the blocks did is really there: the exported run has the worker's steps.
        assert (tmp_path / "run.csv").read_text().count(",test_run,test_agent,") > 10
    finally:
        for server in servers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGINT)
        for server in servers:
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(5)
