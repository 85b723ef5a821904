"""`python -m agents demo` end to end, as a process with a hard time limit, on its own ports."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from telemetry.store import TelemetryStore
from tests.fixtures_daemon import PROJECT_ROOT, run_env


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_the_demo_runs_three_agents_and_says_where_their_telemetry_is(tmp_path):
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "agents", "demo", "--runs-dir", str(runs), "--listen", "127.0.0.1:0", "--dashboard-port", "0",
         "--exit-when-done"],
        cwd=PROJECT_ROOT, env={**run_env(), "XDG_DATA_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "started an embedded XMPP server" in done.stderr and "Traceback" not in done.stderr
    assert "WARNING" not in done.stderr, "the first command anyone runs should run clean"
    run_id = re.search(r"demo run (demo-\S+):", out).group(1)
    assert re.search(r"watch live at http://127\.0\.0\.1:\d+/", out)

    table = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["stepper"], ["sprinter"], ["slippery"]) and "episodes target reached" in line}
    assert set(table) == {"stepper", "sprinter", "slippery"}
    assert table["stepper"][3] == "100%" and table["sprinter"][3] == "100%"  # greedy success on the non-slippery lake

    store = TelemetryStore(runs / "telemetry.db", create=False)
    try:
        assert sorted(store.agent_ids(run_id)) == ["slippery", "sprinter", "stepper"]
        counts = store.counts(run_id)
    finally:
        store.close()
    assert counts.steps == sum(int(row[2]) for row in table.values())
    assert counts.episodes == sum(int(row[1]) for row in table.values())
    # The commands printed name the interpreter that ran the demo, so they work as printed.
    python = str(Path(sys.executable).relative_to(PROJECT_ROOT)) if Path(sys.executable).is_relative_to(PROJECT_ROOT) else sys.executable
    assert f"{python} -m telemetry runs --db {runs / 'telemetry.db'}" in out
    assert f"{python} -m telemetry export {run_id} --db {runs / 'telemetry.db'}" in out
    listed = subprocess.run(f"{python} -m telemetry runs --db {runs / 'telemetry.db'}".split(), cwd=PROJECT_ROOT,
                            env=run_env(), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and run_id in listed.stdout and "TERM" in listed.stdout, listed.stderr


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_by_default_the_demo_keeps_its_dashboard_up_until_ctrl_c(tmp_path):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agents", "demo", "--runs-dir", str(tmp_path / "runs"), "--listen", "127.0.0.1:0",
        "--dashboard-port", "0", cwd=PROJECT_ROOT, env={**run_env(), "XDG_DATA_HOME": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        lines = []
        while not lines or "keep running until Ctrl-C" not in lines[-1]:
            line = await asyncio.wait_for(process.stdout.readline(), 200)
            assert line, "the demo ended without keeping its daemon: " + (await process.stderr.read()).decode()
            lines.append(line.decode())
        url = next(re.search(r"the dashboard: (\S+)", l).group(1) for l in lines if "the dashboard:" in l)
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "api/runs") as answer:
                assert answer.status == 200
                assert any(run["status"] == "TERM" for run in (await answer.json())["runs"])
        assert process.returncode is None, "still serving"
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "Traceback" not in (await process.stderr.read()).decode()
