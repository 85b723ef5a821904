"""The experiment runner end to end, as users run it (`python -m agents experiment`, in a
subprocess): the files it writes agree with each other and with the daemon's telemetry, and a
runner killed half way resumes without redoing finished cells."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.experiment.report import stored_message_totals
from telemetry.store import TelemetryStore

PROJECT_ROOT = Path(__file__).resolve().parent.parent

EXPERIMENT = """
name = "runner-test"
seeds = {seeds}
learners = 2
env_id = "FrozenLake-v1"
env_kwargs = {{ is_slippery = false }}
episodes = 60
jobs = {jobs}
[threshold]
value = 0.5
measure = "greedy_evaluation"
eval_every = 20
eval_episodes = 10
[hyperparameters]
alpha = 0.5
gamma = 0.95
epsilon_decay = 0.95
epsilon_min = 0.05
[[conditions]]
name = "independent"
kind = "independent"
[[conditions]]
name = "policy"
kind = "policy_sharing"
[conditions.settings]
share_every = 10
merge_rule = "average"
{more}
"""

EXPERIENCE = """
[[conditions]]
name = "experience"
kind = "experience_sharing"
"""


def experiment_file(tmp_path: Path, *, seeds: int, jobs: int, experience: bool) -> Path:
    path = tmp_path / "experiment.toml"
    path.write_text(EXPERIMENT.format(seeds=seeds, jobs=jobs, more=EXPERIENCE if experience else ""))
    return path


def command(path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "agents", "experiment", str(path), "--out", str(out)]


def run(path: Path, out: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command(path, out), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_runner_writes_results_that_agree_with_each_other_and_with_telemetry(tmp_path):
    path, out = experiment_file(tmp_path, seeds=2, jobs=2, experience=True), tmp_path / "out"
    done = run(path, out)
    assert "[6/6]" in done.stderr  # progress, one line per finished cell

    cells = {p.name: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    assert len(cells) == 6  # 3 conditions x 2 seeds
    with open(out / "results.csv", newline="") as source:
        rows = list(csv.DictReader(source))
    assert len(rows) == 12  # one per condition, seed and agent
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (out / "summary.md").read_text()
    for condition in ("independent", "policy", "experience"):
        assert f"| {condition} |" in summary
    assert "Holm-corrected together" in summary and "Telemetry check: the daemon's store" in summary
    declared = json.loads((out / "summary.json").read_text())["comparisons"]
    # FrozenLake publishes its transition model: success is scored exactly, and its area is declared too.
    assert [(c["condition"], c["measure"]) for c in declared] == [
        ("policy", "speed"), ("policy", "success"), ("policy", "success_auc"),
        ("experience", "speed"), ("experience", "success"), ("experience", "success_auc")]
    assert "exact success probability" in summary
    for cell in cells.values():
        for agent in cell["agents"]:
            exact = [point[4] for point in agent["evaluations"]]
            assert agent["scoring"] == "exact" and len(exact) == 3   # every 20 of 60 episodes
            assert all(value in (0.0, 1.0) for value in exact)       # a deterministic lake: 0 or 1
            assert agent["final_greedy_success"] == exact[-1]
            assert agent["success_auc"] == pytest.approx(sum(exact) / 3)

    store = TelemetryStore(out / "telemetry.db", create=False)
    try:
        for cell in cells.values():
            by_agent = {row["agent_id"]: row for row in rows if row["run_id"] == cell["run_id"]}
            stored = stored_message_totals(store, cell["run_id"])
            counts = store.counts(cell["run_id"])
            # Results rows carry exactly what the cell measured...
            for agent in cell["agents"]:
                row = by_agent[agent["agent_id"]]
                assert int(row["messages_sent"]) == agent["messages_sent"]
                assert int(row["bytes_sent"]) == agent["bytes_sent"]
                assert int(row["total_env_steps"]) == agent["steps"]
                reached = agent["episodes_to_threshold"]
                assert row["episodes_to_threshold"] == ("" if reached is None else str(reached))
                # ...and the daemon holds exactly the messages the results count, per agent.
                assert stored.get(agent["agent_id"], (0, 0, 0, 0)) == (
                    agent["messages_sent"], agent["bytes_sent"], agent["messages_received"], agent["bytes_received"])
                assert len(agent["returns"]) == agent["episodes"] == 60
            assert counts.messages == sum(a["messages_sent"] + a["messages_received"] for a in cell["agents"])
            assert counts.episodes == sum(a["episodes"] for a in cell["agents"])
            assert counts.steps == sum(a["steps"] for a in cell["agents"])  # telemetry.steps defaults to true
            kind = cell["kind"]
            sent = sum(a["messages_sent"] for a in cell["agents"])
            if kind == "independent":
                assert sent == 0
            elif kind == "policy_sharing":  # every 10 episodes, to the one peer
                assert all(a["sent_by_kind"] == {"q_table": 6} for a in cell["agents"])
            else:  # every episode's transitions, to the one peer
                assert all(a["sent_by_kind"] == {"transitions": 60} for a in cell["agents"])
    finally:
        store.close()

    # Rerunning a finished experiment runs nothing and rewrites the same results.
    again = run(path, out)
    assert "skipping 6 finished cells" in again.stderr
    with open(out / "results.csv", newline="") as source:
        assert list(csv.DictReader(source)) == rows


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_runner_resumes_without_redoing_finished_cells(tmp_path):
    path, out = experiment_file(tmp_path, seeds=1, jobs=1, experience=True), tmp_path / "out"
    cells_dir = out / "cells"
    runner = subprocess.Popen(command(path, out), cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 200
        while not (cells_dir.exists() and any(cells_dir.glob("*.json"))):
            assert runner.poll() is None, "the runner ended before any cell finished"
            assert time.monotonic() < deadline, "no cell finished in time"
            time.sleep(0.05)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(30)
    finally:
        if runner.poll() is None:
            runner.kill()
    finished = {p.name: p.stat().st_mtime_ns for p in cells_dir.glob("*.json")}
    assert 1 <= len(finished) < 3, "killed half way"

    done = run(path, out)
    assert f"skipping {len(finished)} finished cells" in done.stderr
    after = {p.name: p.stat().st_mtime_ns for p in cells_dir.glob("*.json")}
    assert len(after) == 3
    assert all(after[name] == mtime for name, mtime in finished.items()), "finished cells were not redone"
    with open(out / "results.csv", newline="") as source:
        assert len(list(csv.DictReader(source))) == 6
    log = (out / "run.log").read_text()
    for name in finished:
        condition, seed = name.removesuffix(".json").split("__seed")
        assert log.count(f"cell {condition} seed {seed}: queued") == 1  # queued by the killed run only
