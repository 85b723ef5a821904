"""The dashboard's HTTP side without a browser: where it listens, what unknown runs get,
replay lookups, resuming the event stream, and a slow viewer that must not slow ingest."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from telemetry.daemon import serve
from telemetry.dashboard import DEFAULT_HOST, DashboardStartError, live, start_dashboard
from telemetry.dashboard.replay import episode_steps
from tests.fixtures_browser import AgentPublisher, DashboardDaemon, TabularTrainer
from tests.fixtures_daemon import episodes as make_episodes
from tests.fixtures_daemon import steps as make_steps
from tests.fixtures_daemon import stub_for

pytestmark = pytest.mark.timeout(120)


async def _publisher(env: DashboardDaemon, run_id: str, agent_id: str) -> tuple:
    channel, stub = stub_for(env.daemon)
    publisher = AgentPublisher(stub, run_id, agent_id)
    await publisher.register()
    return channel, publisher


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str, dict]]:
    """(id, event, data) of each server-sent event on ``response``."""
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "event" in fields:
                yield fields.get("id", ""), fields["event"], json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = value


def test_the_dashboard_defaults_to_loopback() -> None:
    assert ipaddress.ip_address(DEFAULT_HOST).is_loopback


async def test_dashboard_listens_on_loopback_only(dashboard_daemon: DashboardDaemon) -> None:
    addresses = dashboard_daemon.dashboard.bound_addresses
    assert addresses
    assert all(ipaddress.ip_address(host).is_loopback for host, _ in addresses)


async def test_a_busy_port_is_a_clear_error(dashboard_daemon: DashboardDaemon) -> None:
    busy = dashboard_daemon.dashboard.port
    with pytest.raises(DashboardStartError, match=r"cannot listen on 127\.0\.0\.1:\d+ .*--dashboard-port"):
        await start_dashboard(dashboard_daemon.daemon.store, dashboard_daemon.daemon.hub, port=busy)


async def test_unknown_run_is_404_for_pages_and_api(dashboard_daemon: DashboardDaemon) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{dashboard_daemon.url}/runs/nope") as page:
            assert page.status == 404
            assert page.content_type == "text/html"
            assert "No run named “nope”" in await page.text()
        for path in ("", "/events", "/replay?agent_id=a&episode=0", "/export?format=csv"):
            async with http.get(f"{dashboard_daemon.url}/api/runs/nope{path}") as api:
                assert api.status == 404, path
                assert "nope" in (await api.json())["error"]
        async with http.get(f"{dashboard_daemon.url}/no/such/page") as other:
            assert other.status == 404
            assert "Nothing here" in await other.text()


async def test_export_refuses_an_unknown_format_clearly(dashboard_daemon: DashboardDaemon) -> None:
    channel, alice = await _publisher(dashboard_daemon, "run-fmt", "alice")
    try:
        await alice.publish(steps=make_steps("run-fmt", "alice", 3))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{dashboard_daemon.url}/api/runs/run-fmt/export?format=xml") as api:
                assert api.status == 400
                assert "unknown format 'xml'" in (await api.json())["error"]
    finally:
        await channel.close()


async def test_replay_finds_each_episode_among_interleaved_agents(dashboard_daemon: DashboardDaemon) -> None:
    env = dashboard_daemon
    channel, alice = await _publisher(env, "run-interleaved", "alice")
    bob = AgentPublisher(alice.stub, "run-interleaved", "bob")
    try:
        trainers = {"alice": TabularTrainer("FrozenLake-v1", "run-interleaved", "alice"),
                    "bob": TabularTrainer("CliffWalking-v1", "run-interleaved", "bob", max_steps=30)}
        published: dict[tuple[str, int], list] = {}
        for _ in range(12):
            for publisher in (alice, bob):
                steps, episode = trainers[publisher.agent_id].run_episode()
                await publisher.publish(steps=steps, episodes=[episode])
                published[(publisher.agent_id, episode.episode_index)] = steps
        store = env.daemon.store
        for (agent_id, episode), steps in published.items():
            found = await asyncio.to_thread(episode_steps, store, "run-interleaved", agent_id, episode)
            assert [(s.episode_index, s.step_index, s.observation_json) for s in found] == \
                   [(s.episode_index, s.step_index, s.observation_json) for s in steps]
        assert await asyncio.to_thread(episode_steps, store, "run-interleaved", "alice", 99) == []
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{env.url}/api/runs/run-interleaved/replay",
                                params={"agent_id": "bob", "episode": "3"}) as api:
                body = await api.json()
        assert [row["step"] for row in body["steps"]] == list(range(len(published[("bob", 3)])))
        assert body["render_hint"]["kind"] == "grid"
        assert isinstance(body["steps"][0]["observation"], int)
    finally:
        await channel.close()


async def test_the_live_table_gets_the_hint_of_an_episode_that_began_before_its_window(
        dashboard_daemon: DashboardDaemon) -> None:
    """Agents send the render hint on each episode's first step only; a viewer connecting when
    the newest TAIL_WINDOW steps are all later than that still gets the agent's hint."""
    env = dashboard_daemon
    channel, alice = await _publisher(env, "run-long", "alice")
    try:
        steps = make_steps("run-long", "alice", live.TAIL_WINDOW + 500, per_episode=10**6)
        steps[0].render_hint_json = '{"kind":"grid","rows":4,"cols":4}'
        await alice.publish(steps=steps)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{env.url}/api/runs/run-long/events") as stream:
                async for _, event, data in _events(stream):
                    if event == "steps":
                        entry = data["agents"]["alice"]
                        break
        assert entry["rows"][0]["step"] > 0   # the window does not reach step 0
        assert entry["render_hint"] == {"kind": "grid", "rows": 4, "cols": 4}
    finally:
        await channel.close()


async def test_event_stream_resumes_after_last_event_id(dashboard_daemon: DashboardDaemon) -> None:
    env = dashboard_daemon
    channel, alice = await _publisher(env, "run-resume", "alice")
    try:
        await alice.publish(episodes=make_episodes("run-resume", "alice", 30))
        url = f"{env.url}/api/runs/run-resume/events"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as first:
                async for event_id, event, data in _events(first):
                    if event == "episodes":
                        seen = [row["episode"] for row in data["rows"]]
                        resume_from = event_id
                        break
            assert seen == list(range(30))
            assert resume_from == "30.0"
            await alice.publish(episodes=make_episodes("run-resume", "alice", 5, first=30))
            async with http.get(url, headers={"Last-Event-ID": resume_from}) as second:
                async for event_id, event, data in _events(second):
                    if event == "episodes":
                        assert [row["episode"] for row in data["rows"]] == list(range(30, 35))
                        assert [row["seq"] for row in data["rows"]] == list(range(31, 36))
                        break
    finally:
        await channel.close()


@pytest.mark.slow
async def test_a_stalled_viewer_neither_slows_ingest_nor_loses_episodes(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A viewer that stops reading: publishing completes regardless, the viewer's live
    subscription overflows (hub bound) instead of holding anything up, and once it reads
    again it gets every episode exactly once, in order, and a thinned stream of steps."""
    monkeypatch.setattr(live, "OUTBOX_RECORDS", 50)  # small buffers so the overflow path runs
    daemon = await serve("127.0.0.1:0", tmp_path / "telemetry.db", live_queue_records=200, dashboard_port=0)
    catch_up_reads: list[int] = []  # store reads of episodes after the stream went live
    read_episodes = daemon.store.read_episodes

    def recording_read_episodes(run_id, since_seq=0, agent_id=None, limit=1000, max_bytes=None):  # type: ignore[no-untyped-def]
        if since_seq > 0:
            catch_up_reads.append(since_seq)
        return read_episodes(run_id, since_seq, agent_id, limit, max_bytes)

    monkeypatch.setattr(daemon.store, "read_episodes", recording_read_episodes)
    channel, stub = stub_for(daemon)
    alice = AgentPublisher(stub, "run-slow", "alice")
    await alice.publish(steps=make_steps("run-slow", "alice", 1))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", daemon.dashboard.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    try:
        writer.write(b"GET /api/runs/run-slow/events HTTP/1.0\r\nHost: dashboard\r\n\r\n")
        await writer.drain()
        assert b"200" in await reader.readline()
        overflows_before = daemon.hub.overflows

        # Chunks well under the hub's bound: only a viewer that stopped reading can overflow.
        total_episodes, steps_per_episode, chunk = 3000, 2, 50
        for first in range(0, total_episodes, chunk):  # the viewer reads nothing meanwhile
            await alice.publish(
                steps=make_steps("run-slow", "alice", chunk * steps_per_episode, first=1 + first * steps_per_episode,
                                 per_episode=steps_per_episode),
                episodes=make_episodes("run-slow", "alice", chunk, first=first, steps_each=steps_per_episode))
        assert (await asyncio.to_thread(daemon.store.counts, "run-slow")).episodes == total_episodes
        assert daemon.hub.overflows > overflows_before, "the stalled viewer should have been cut off from live"

        episodes_seen: list[int] = []
        skipped = 0
        buffered = b""
        while len(episodes_seen) < total_episodes:
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            assert chunk, "the stream ended early"
            *frames, buffered = (buffered + chunk).split(b"\n\n")
            for frame in frames:
                fields = dict(line.split(": ", 1) for line in frame.decode().splitlines() if ": " in line)
                if fields.get("event") == "episodes":
                    episodes_seen += [row["episode"] for row in json.loads(fields["data"])["rows"]]
                elif fields.get("event") == "steps":
                    skipped += sum(agent["skipped"] for agent in json.loads(fields["data"])["agents"].values())
        assert episodes_seen == list(range(total_episodes))
        assert catch_up_reads, "the viewer should have caught up on episodes from the store"
        assert skipped > 0, "steps should arrive thinned"
    finally:
        writer.close()
        await channel.close()
        await daemon.stop(grace=None)


async def test_non_finite_rewards_reach_the_pages_by_name(dashboard_daemon: DashboardDaemon) -> None:
    env = dashboard_daemon
    channel, publisher = await _publisher(env, "run-nan", "alice")
    try:
        steps = make_steps("run-nan", "alice", 3)
        for step, reward in zip(steps, (float("nan"), float("inf"), float("-inf"))):
            step.reward = reward
        episode = make_episodes("run-nan", "alice", 1)[0]
        episode.total_reward = float("nan")
        await publisher.publish(steps=steps, episodes=[episode])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{env.url}/api/runs/run-nan/replay",
                                params={"agent_id": "alice", "episode": "0"}) as api:
                body = json.loads(await api.text(), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
        assert [row["reward"] for row in body["steps"]] == ["nan", "inf", "-inf"]
    finally:
        await channel.close()
