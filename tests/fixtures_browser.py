"""Fixtures for the dashboard tests: a real headless Chromium, a daemon serving its
dashboard, and agents streaming into it through the real gRPC API.

The browser is Debian's /usr/bin/chromium (Playwright's own browser download cannot work on
machines without internet), driven by Playwright's async API, started once per test session
with a fresh profile; every test gets its own page. Override the binary with CHROMIUM=/path.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from telemetry.daemon import Daemon, serve
from telemetry.dashboard import DashboardServer
from telemetry.generated import trainer_pb2 as pb
from telemetry.generated import trainer_pb2_grpc
from telemetry.proxy import TelemetrySession
from tests.fixtures_daemon import register

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# Quiet, offline, reproducible: no GPU, no sandbox (root in CI), nothing phoning home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
async def browser_context(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    """A Playwright BrowserContext on Debian's Chromium with a fresh user-data-dir."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: `pip install playwright` (make test installs it)")
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (make test installs it)")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            accept_downloads=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def page(browser_context) -> AsyncIterator[object]:  # type: ignore[no-untyped-def]
    """A fresh tab, closed after the test."""
    tab = await browser_context.new_page()
    try:
        yield tab
    finally:
        await tab.close()


# ---------------------------------------------------------------------------------------
# A daemon with its dashboard, and agents that stream into it through the real gRPC API.
# ---------------------------------------------------------------------------------------

@dataclass
class DashboardDaemon:
    """A running daemon whose dashboard listens on a free loopback port."""
    daemon: Daemon
    dashboard: DashboardServer
    url: str


@pytest.fixture
async def dashboard_daemon(tmp_path: Path) -> AsyncIterator[DashboardDaemon]:
    """The real daemon on port 0 with a fresh SQLite store, serving its dashboard on a free port."""
    daemon = await serve("127.0.0.1:0", tmp_path / "telemetry.db", dashboard_port=0)
    try:
        yield DashboardDaemon(daemon, daemon.dashboard, daemon.dashboard.url.rstrip("/"))
    finally:
        await daemon.stop(grace=None)


class AgentPublisher:
    """Publishes one agent's records the way a producer does: RegisterWorker, then
    PublishTelemetryBatch with the session token (generated stubs, no shortcuts)."""

    def __init__(self, stub: trainer_pb2_grpc.TrainerServiceStub, run_id: str, agent_id: str) -> None:
        self.stub = stub
        self.run_id = run_id
        self.agent_id = agent_id
        self._metadata: tuple | None = None

    async def register(self) -> None:
        self._metadata = await register(self.stub, self.run_id, worker_id=f"worker-{self.agent_id}",
                                        worker_kind="spade-bdi")

    async def publish(self, steps: Sequence[pb.RunStep] = (), episodes: Sequence[pb.RunEpisode] = (),
                      messages: Sequence[pb.CoordinationMessage] = ()) -> pb.PublishTelemetryResponse:
        if self._metadata is None:
            await self.register()

        async def one_batch() -> AsyncIterator[pb.TelemetryBatch]:
            yield pb.TelemetryBatch(run_id=self.run_id, steps=steps, episodes=episodes, messages=messages)

        return await self.stub.PublishTelemetryBatch(one_batch(), metadata=self._metadata)


def _grid_hint(env: gym.Env) -> dict:
    """The render hint an agent sends for FrozenLake and CliffWalking (rows, cols, desc)."""
    core = env.unwrapped
    if hasattr(core, "desc"):
        desc = [b"".join(row).decode() for row in core.desc]
        return {"kind": "grid", "rows": len(desc), "cols": len(desc[0]), "desc": desc}
    rows, cols = core.shape
    desc = ["." * cols] * (rows - 1) + ["S" + "C" * (cols - 2) + "G"]
    return {"kind": "grid", "rows": rows, "cols": cols, "desc": desc}


class TabularTrainer:
    """A small epsilon-greedy Q-learner on a Gymnasium grid world that turns each episode
    into the RunStep/RunEpisode records an agent streams (observation after the step,
    render hint, success in the episode metadata)."""

    def __init__(self, env_id: str, run_id: str, agent_id: str, *, seed: int = 0, max_steps: int = 100,
                 initial_q: float = 0.0, **env_kwargs: object) -> None:
        self.env = gym.make(env_id, **env_kwargs)
        self.run_id = run_id
        self.agent_id = agent_id
        self.max_steps = max_steps
        self.hint_json = json.dumps(_grid_hint(self.env))
        # Optimistic initial values make a sparse-reward world (FrozenLake) explore systematically.
        self.q = np.full((self.env.observation_space.n, self.env.action_space.n), initial_q)
        self.rng = np.random.default_rng(seed)
        self.epsilon = 1.0
        self.episode_index = 0
        self.seed = seed

    def run_episode(self) -> tuple[list[pb.RunStep], pb.RunEpisode]:
        state, _ = self.env.reset(seed=self.seed if self.episode_index == 0 else None)
        steps: list[pb.RunStep] = []
        total = 0.0
        terminated = truncated = False
        reward = 0.0
        while not (terminated or truncated):
            if self.rng.random() < self.epsilon:
                action = int(self.rng.integers(self.env.action_space.n))
            else:
                best = np.flatnonzero(self.q[state] == self.q[state].max())
                action = int(self.rng.choice(best))
            nxt, reward, terminated, truncated, _ = self.env.step(action)
            truncated = truncated or len(steps) + 1 >= self.max_steps
            target = reward + (0.0 if terminated else 0.95 * self.q[nxt].max())
            self.q[state, action] += 0.5 * (target - self.q[state, action])
            steps.append(pb.RunStep(
                run_id=self.run_id, agent_id=self.agent_id, episode_index=self.episode_index,
                step_index=len(steps), action_json=str(action), observation_json=str(int(nxt)),
                reward=float(reward), terminated=bool(terminated), truncated=bool(truncated),
                timestamp=_now(), policy_label="epsilon-greedy", backend="tabular-q",
                render_hint_json=self.hint_json if not steps else "", payload_version=1))  # as agents send it
            total += float(reward)
            state = nxt
        success = bool(terminated and (reward > 0 or self.env.spec.id.startswith("CliffWalking")))
        episode = pb.RunEpisode(
            run_id=self.run_id, agent_id=self.agent_id, episode_index=self.episode_index, total_reward=total,
            steps=len(steps), terminated=bool(terminated), truncated=bool(truncated), timestamp=_now(),
            metadata_json=json.dumps({"success": success, "epsilon": round(self.epsilon, 4)}))
        self.episode_index += 1
        self.epsilon = max(0.05, self.epsilon * 0.96)
        return steps, episode


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


def coordination_message(run_id: str, agent_id: str, index: int, direction: str, peer: str,
                         episode: int) -> pb.CoordinationMessage:
    """One XMPP message an agent reports having sent or received (a shared Q-table)."""
    return pb.CoordinationMessage(run_id=run_id, agent_id=agent_id, message_index=index, direction=direction,
                                  peer=peer, kind="q_table", bytes=1024 + 16 * index, episode_index=episode,
                                  timestamp=_now())


async def emit_through_proxy(session: TelemetrySession, steps: Sequence[pb.RunStep], episode: pb.RunEpisode,
                             messages: Sequence[pb.CoordinationMessage] = ()) -> None:
    """Hand one trained episode to a proxy session with exactly the producer's emit_* calls."""
    for s in steps:
        await session.emit_step(
            run_id=s.run_id, episode_index=s.episode_index, step_index=s.step_index, action_json=s.action_json,
            observation_json=s.observation_json, reward=s.reward, terminated=s.terminated, truncated=s.truncated,
            policy_label=s.policy_label, backend=s.backend, agent_id=s.agent_id,
            render_hint_json=s.render_hint_json or None, payload_version=s.payload_version,
            timestamp_ns=s.timestamp.ToNanoseconds())
    await session.emit_episode(
        run_id=episode.run_id, episode_index=episode.episode_index, total_reward=episode.total_reward,
        steps=episode.steps, terminated=episode.terminated, truncated=episode.truncated,
        metadata=json.loads(episode.metadata_json), agent_id=episode.agent_id,
        timestamp_ns=episode.timestamp.ToNanoseconds())
    for m in messages:
        await session.emit_message(m.run_id, m.agent_id, m.message_index, m.direction, m.peer, m.kind, m.bytes,
                                   m.episode_index, m.timestamp.ToNanoseconds())
