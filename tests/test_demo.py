"""`python -m agents demo` end to end, as a process with a hard time limit, on its own ports."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from telemetry.store import TelemetryStore
from tests.fixtures_daemon import PROJECT_ROOT, run_env


@pytest.mark.timeout(200)
def test_the_demo_runs_three_agents_and_says_where_their_telemetry_is(tmp_path):
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "agents", "demo", "--runs-dir", str(runs), "--listen", "127.0.0.1:0", "--dashboard-port", "0"],
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
    assert f"python -m telemetry runs --db {runs / 'telemetry.db'}" in out
    assert f"python -m telemetry export {run_id} --db {runs / 'telemetry.db'}" in out
