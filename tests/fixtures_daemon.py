"""Fixtures that run the real telemetry daemon: in-process on port 0, or as a subprocess.

* ``daemon``: a daemon in the test's event loop with a fresh SQLite file in tmp_path.
* ``start_daemon``: a factory, ``await start_daemon(db_path=..., fault_after_s=...)``, for
  tests that need options or a restart on the same file; everything started is stopped.
* ``daemon_process``: a factory of ``DaemonProcess`` (``python -m telemetry.daemon`` on a
  free port), for signal tests; every process left running is killed.
* helpers: ``free_port()``, ``stub_for(daemon_or_address)``, ``register(stub, run_id)``
  returning auth metadata, ``steps(...)``/``episodes(...)`` to build records,
  ``iterate(*messages)`` as a request stream, ``wait_until(condition)`` to poll.
"""
from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from telemetry.auth import bearer_metadata
from telemetry.daemon import PROTO_VERSION, Daemon, TrainerService, serve
from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DaemonProcess:
    """``python -m telemetry.daemon`` in a subprocess; its log goes to ``log_path``."""

    def __init__(self, db_path: Path, *, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.db_path = Path(db_path)
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = self.db_path.with_name(f"daemon-{self.port}-{time.monotonic_ns()}.log")
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None

    def _dashboard_args(self) -> tuple[str, ...]:
        """No dashboard unless the test asks for one: its default port is shared by every daemon."""
        asks_for_dashboard = any(arg.startswith("--dashboard") for arg in self.extra_args)
        return () if asks_for_dashboard else ("--no-dashboard",)

    def start(self, timeout: float = 30.0) -> "DaemonProcess":
        """Start and wait for the "listening on" line."""
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "telemetry.daemon", "--listen", self.address, "--db", str(self.db_path),
                 "--log-level", "INFO", *self._dashboard_args(), *self.extra_args],
                cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                if line.startswith("listening on"):
                    return self
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}: {self.log()}")
        self.kill()
        raise RuntimeError(f"daemon did not start within {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        self.signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> int:
        """SIGKILL and wait; the exit code."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait(30)


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator:
    """Factory: ``await start_daemon(**serve_options)`` (db defaults to tmp_path/telemetry.db)."""
    started: list[Daemon] = []

    async def start(**options) -> Daemon:
        options.setdefault("db_path", tmp_path / "telemetry.db")
        daemon = await serve("127.0.0.1:0", **options)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        await daemon.stop(grace=None)


@pytest.fixture
async def daemon(start_daemon) -> Daemon:
    """A running in-process daemon on a free port with a fresh store."""
    return await start_daemon()


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator:
    """Factory: ``daemon_process(db_path=None, **kwargs).start()``; killed at teardown."""
    processes: list[DaemonProcess] = []

    def make(db_path: Path | None = None, **kwargs) -> DaemonProcess:
        process = DaemonProcess(db_path or tmp_path / "telemetry.db", **kwargs)
        processes.append(process)
        return process

    yield make
    for process in processes:
        if process.process is not None and process.process.poll() is None:
            process.kill()


def without_extension(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Make daemons started after this answer `method` (one of the contract's extensions) with
    UNIMPLEMENTED, as a MOSAIC/1.0 daemon such as the reference one does."""
    async def unimplemented(self, request, context) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    monkeypatch.setattr(TrainerService, method, unimplemented)


def stub_for(target: Daemon | str) -> tuple[grpc.aio.Channel, trainer_pb2_grpc.TrainerServiceStub]:
    """An insecure channel (close it) and a stub for a daemon or an address."""
    address = target if isinstance(target, str) else target.address
    channel = grpc.aio.insecure_channel(address)
    return channel, trainer_pb2_grpc.TrainerServiceStub(channel)


async def register(stub: trainer_pb2_grpc.TrainerServiceStub, run_id: str, *, worker_id: str = "test-worker",
                   worker_kind: str = "test") -> tuple[tuple[str, str], ...]:
    """RegisterWorker; the auth metadata for publish and control streams."""
    response = await stub.RegisterWorker(pb.RegisterWorkerRequest(
        run_id=run_id, worker_id=worker_id, worker_kind=worker_kind, proto_version=PROTO_VERSION))
    return bearer_metadata(response.session_token)


def steps(run_id: str, agent_id: str, count: int, *, first: int = 0, per_episode: int = 100) -> list[pb.RunStep]:
    """``count`` steps of one agent, numbered from ``first`` across episodes of ``per_episode``."""
    return [pb.RunStep(run_id=run_id, agent_id=agent_id, episode_index=i // per_episode,
                       step_index=i % per_episode, action_json=str(i % 4), observation_json=str(i % 16),
                       reward=float(i % 7 == 0), terminated=(i % per_episode == per_episode - 1),
                       policy_label="eps-greedy", backend="qlearning", payload_version=1)
            for i in range(first, first + count)]


def episodes(run_id: str, agent_id: str, count: int, *, first: int = 0, steps_each: int = 100) -> list[pb.RunEpisode]:
    """``count`` episode summaries of one agent."""
    return [pb.RunEpisode(run_id=run_id, agent_id=agent_id, episode_index=i, total_reward=float(i % 3),
                          steps=steps_each, terminated=True, metadata_json='{"epsilon": 0.5}')
            for i in range(first, first + count)]


async def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition()`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def iterate(*messages):
    """An async request stream of ``messages``."""
    for message in messages:
        yield message


def run_env() -> dict[str, str]:
    """Environment for running project modules in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env
