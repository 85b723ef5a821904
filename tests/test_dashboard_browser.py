"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright):
tabs appear by themselves as agents start streaming, live steps arrive within a second,
the curves have a point per episode, replay, exports, the 404 page, and a screenshot."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from telemetry.export import export_run
from telemetry.generated import trainer_pb2 as pb
from telemetry.proxy import TelemetryGrpcProxy
from tests.fixtures_browser import AgentPublisher, DashboardDaemon, TabularTrainer, coordination_message, emit_through_proxy
from tests.fixtures_daemon import stub_for

pytestmark = pytest.mark.timeout(120)

LIVE_DEADLINE_S = 1.0  # the promise: a step published after the page loaded shows within a second


async def _registered(env: DashboardDaemon, run_id: str, *agent_ids: str) -> tuple:
    channel, stub = stub_for(env.daemon)
    publishers = [AgentPublisher(stub, run_id, agent_id) for agent_id in agent_ids]
    for publisher in publishers:
        await publisher.register()
    return channel, publishers


async def _train(publisher: AgentPublisher, trainer: TabularTrainer, episodes: int) -> list[pb.RunEpisode]:
    published = []
    for _ in range(episodes):
        steps, episode = trainer.run_episode()
        await publisher.publish(steps=steps, episodes=[episode])
        published.append(episode)
    return published


async def test_tabs_appear_without_reload_and_live_steps_arrive_within_a_second(
        dashboard_daemon: DashboardDaemon, page) -> None:
    env = dashboard_daemon
    channel, (alice, bob) = await _registered(env, "run-live", "alice", "bob")
    try:
        await page.goto(f"{env.url}/runs/run-live")
        await page.wait_for_selector("#waiting")
        await page.evaluate("window.__loadedOnce = true")  # gone if the page reloads

        await _train(alice, TabularTrainer("FrozenLake-v1", "run-live", "alice", is_slippery=False), 3)
        await page.wait_for_selector('#tabs button[data-agent-id="alice"]', timeout=10_000)
        await _train(bob, TabularTrainer("CliffWalking-v1", "run-live", "bob"), 2)
        await page.wait_for_selector('#tabs button[data-agent-id="bob"]', timeout=10_000)
        assert await page.evaluate("window.__loadedOnce") is True
        assert await page.locator("#tabs button").count() == 2

        await page.wait_for_selector('section[data-agent-id="alice"] tbody[data-k="steps-body"] tr', timeout=10_000)
        marker = pb.RunStep(run_id="run-live", agent_id="alice", episode_index=999, step_index=7,
                            action_json="2", observation_json="5", reward=0.5, payload_version=1)
        await alice.publish(steps=[marker])
        published_at = time.monotonic()
        row = 'section[data-agent-id="alice"] tr[data-episode="999"][data-step="7"]'
        await page.wait_for_selector(row, timeout=LIVE_DEADLINE_S * 1000)
        arrival_s = time.monotonic() - published_at
        assert arrival_s <= LIVE_DEADLINE_S, f"the step took {arrival_s:.2f} s to show"
    finally:
        await channel.close()


async def test_curve_has_a_point_per_published_episode(dashboard_daemon: DashboardDaemon, page) -> None:
    env = dashboard_daemon
    channel, (alice, bob) = await _registered(env, "run-curve", "alice", "bob")
    try:
        await page.goto(f"{env.url}/runs/run-curve")
        published = {
            "alice": len(await _train(alice, TabularTrainer("FrozenLake-v1", "run-curve", "alice",
                                                            is_slippery=False), 25)),
            "bob": len(await _train(bob, TabularTrainer("CliffWalking-v1", "run-curve", "bob"), 12)),
        }
        for agent_id, count in published.items():
            await page.click(f'#tabs button[data-agent-id="{agent_id}"]')
            panel = f'section[data-agent-id="{agent_id}"]'
            for chart in ("return-chart", "length-chart"):
                await page.wait_for_selector(f'{panel} svg[data-k="{chart}"][data-points="{count}"]', timeout=10_000)
                points = await page.get_attribute(f'{panel} svg[data-k="{chart}"] polyline.series-raw', "points")
                assert len(points.split()) == count
            assert await page.text_content(f'{panel} [data-k="episodes"]') == str(count)
    finally:
        await channel.close()


async def test_replay_steps_through_an_episode_with_a_grid_picture(dashboard_daemon: DashboardDaemon, page) -> None:
    env = dashboard_daemon
    channel, (alice,) = await _registered(env, "run-replay", "alice")
    try:
        trainer = TabularTrainer("FrozenLake-v1", "run-replay", "alice", is_slippery=False)
        await _train(alice, trainer, 4)
        steps, episode = trainer.run_episode()
        await alice.publish(steps=steps, episodes=[episode])
        await page.goto(f"{env.url}/runs/run-replay")
        panel = 'section[data-agent-id="alice"]'
        select = f'{panel} select[data-k="episode-select"]'
        await page.wait_for_selector(f'{select} option[value="{episode.episode_index}"]', state="attached",
                                     timeout=10_000)
        await page.select_option(select, str(episode.episode_index))
        await page.wait_for_selector(f"{panel} svg.board circle.agent", timeout=10_000)
        assert await page.locator(f"{panel} svg.board rect.cell").count() == 16  # the 4x4 lake
        info = f'{panel} dl[data-k="replay-info"]'
        assert f"1 of {len(steps)}" in await page.text_content(info)
        assert f"{steps[0].observation_json}" in await page.text_content(info)
        if len(steps) > 1:
            await page.click(f'{panel} button[data-k="next"]')
            assert f"2 of {len(steps)}" in await page.text_content(info)
        await page.click(f'{panel} button[data-k="last"]')
        text = await page.text_content(info)
        assert f"{len(steps)} of {len(steps)}" in text
        assert ("terminated" in text) or ("truncated" in text)
    finally:
        await channel.close()


@pytest.mark.parametrize("kind", ["steps", "episodes"])
async def test_export_buttons_download_what_the_cli_exporter_writes(
        dashboard_daemon: DashboardDaemon, page, tmp_path: Path, kind: str) -> None:
    env = dashboard_daemon
    channel, (alice, bob) = await _registered(env, "run-export", "alice", "bob")
    try:
        await _train(alice, TabularTrainer("FrozenLake-v1", "run-export", "alice"), 5)
        await _train(bob, TabularTrainer("CliffWalking-v1", "run-export", "bob"), 2)
        await page.goto(f"{env.url}/runs/run-export")
        await page.select_option("#export-kind", kind)
        for fmt in ("csv", "jsonl"):
            async with page.expect_download() as info:
                await page.click(f"#export-{fmt}")
            download = await info.value
            downloaded = Path(await download.path()).read_bytes()
            expected_path = tmp_path / f"cli.{kind}.{fmt}"
            export_run(env.daemon.store, "run-export", fmt, expected_path, kind=kind)
            assert downloaded == expected_path.read_bytes()
            assert download.suggested_filename == f"run-export-{kind}.{fmt}"
    finally:
        await channel.close()


async def test_unknown_run_gets_a_clear_not_found_page(dashboard_daemon: DashboardDaemon, page) -> None:
    response = await page.goto(f"{dashboard_daemon.url}/runs/no-such-run")
    assert response.status == 404
    heading = await page.text_content("#not-found h1")
    assert "no-such-run" in heading
    assert "No run named" in heading
    await page.click("#not-found a")
    await page.wait_for_selector("#runs")


async def test_run_list_shows_runs_with_status(dashboard_daemon: DashboardDaemon, page) -> None:
    env = dashboard_daemon
    channel, (alice,) = await _registered(env, "run-listed", "alice")
    try:
        await _train(alice, TabularTrainer("FrozenLake-v1", "run-listed", "alice"), 2)
        await page.goto(f"{env.url}/")
        row = '#runs tr[data-run-id="run-listed"]'
        await page.wait_for_selector(row, timeout=10_000)
        assert await page.get_attribute(f"{row} .badge", "data-status") == "EXEC"
        await page.click(f"{row} a")
        await page.wait_for_selector('#tabs button[data-agent-id="alice"]', timeout=10_000)
    finally:
        await channel.close()


async def test_screenshot_of_two_agents_training(dashboard_daemon: DashboardDaemon, page, tmp_path: Path) -> None:
    """Two agents train and stream through the proxy, as real agents do; the test writes the
    dashboard to $DASHBOARD_SCREENSHOT (e.g. docs/dashboard.png), or to its tmp folder."""
    env = dashboard_daemon
    run_id = "frozenlake-cliff-demo"
    lake_id, cliff_id = "frozenlake-agent", "cliffwalking-agent"
    lake = TabularTrainer("FrozenLake-v1", run_id, lake_id, seed=3, is_slippery=False, initial_q=1.0)
    cliff = TabularTrainer("CliffWalking-v1", run_id, cliff_id, seed=4, max_steps=200)
    proxy = TelemetryGrpcProxy(target=env.daemon.address, worker_id="demo-container", spool_dir=tmp_path / "spool")
    async with proxy.session(run_id) as tx:
        await page.goto(f"{env.url}/runs/{run_id}")
        solved: list[int] = []
        message_index = 0
        for round_ in range(120):
            for trainer, peer in ((lake, cliff_id), (cliff, lake_id)):
                steps, episode = trainer.run_episode()
                messages = []
                if round_ % 10 == 9:  # the agents share their Q-tables every 10 episodes
                    messages = [coordination_message(run_id, trainer.agent_id, message_index + i, direction, peer,
                                                     episode.episode_index)
                                for i, direction in enumerate(("sent", "received"))]
                await emit_through_proxy(tx, steps, episode, messages)
                if trainer is lake and '"success": true' in episode.metadata_json:
                    solved.append(episode.episode_index)
            message_index += 2 if round_ % 10 == 9 else 0
        await tx.flush()
        assert solved, "the FrozenLake learner never reached the goal"
        await page.click(f'#tabs button[data-agent-id="{lake_id}"]')
        panel = f'section[data-agent-id="{lake_id}"]'
        await page.wait_for_selector(f'{panel} svg[data-k="return-chart"][data-points="120"]', timeout=15_000)
        await page.select_option(f'{panel} select[data-k="episode-select"]', str(solved[-1]))
        await page.wait_for_selector(f"{panel} svg.board circle.agent", timeout=10_000)
        await page.click(f'{panel} button[data-k="last"]')
        # One more live episode so the step table and steps/s show a run in motion.
        await emit_through_proxy(tx, *lake.run_episode())
        await tx.flush()
        await page.wait_for_selector(f'{panel} svg[data-k="return-chart"][data-points="121"]', timeout=10_000)
        await page.wait_for_selector(f"{panel} tr.fresh", state="detached", timeout=10_000)  # arrival flash over
        target = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 10_000


async def test_non_finite_rewards_are_shown_as_such_and_not_plotted(dashboard_daemon: DashboardDaemon, page) -> None:
    env = dashboard_daemon
    channel, (alice,) = await _registered(env, "run-nan", "alice")
    try:
        await page.goto(f"{env.url}/runs/run-nan")
        await _train(alice, TabularTrainer("FrozenLake-v1", "run-nan", "alice", is_slippery=False), 2)
        panel = 'section[data-agent-id="alice"]'
        await page.wait_for_selector(f'{panel} svg[data-k="return-chart"][data-points="2"]', timeout=10_000)
        odd = [pb.RunStep(run_id="run-nan", agent_id="alice", episode_index=500, step_index=i, action_json="0",
                          observation_json="0", reward=reward, payload_version=1)
               for i, reward in enumerate((float("nan"), float("-inf")))]
        episode = pb.RunEpisode(run_id="run-nan", agent_id="alice", episode_index=500, total_reward=float("nan"),
                                steps=2, terminated=True, metadata_json="{}")
        await alice.publish(steps=odd, episodes=[episode])
        await page.wait_for_selector(f'{panel} [data-k="episodes"]:text("3")', timeout=10_000)
        assert "NaN" in await page.text_content(f'{panel} tr[data-episode="500"][data-step="0"]')
        assert "-∞" in await page.text_content(f'{panel} tr[data-episode="500"][data-step="1"]')
        assert "NaN" in await page.text_content(f'{panel} [data-k="last-return"]')
        # Two measured returns plotted; the NaN one is in the numbers, not in the curve.
        assert await page.get_attribute(f'{panel} svg[data-k="return-chart"]', "data-points") == "2"
    finally:
        await channel.close()
