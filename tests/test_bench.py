"""The benchmark suite runs end to end on tiny sizes and writes what it promises.

It checks the pipeline (every figure measured against the real components, in the agreed
format), never a speed: on this shared machine timings are not something a test can assert.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import DEFAULT_OUT, PARTIAL_OUT, default_out
from bench.container_scaling import half_rate_point

PROJECT_ROOT = Path(__file__).resolve().parent.parent

REQUIRED = {
    "ingest.batched.steps_per_s",
    "ingest.batched.1_session.steps_per_s",
    "ingest.batched_run_steps.steps_per_s",
    "ingest.per_step.steps_per_s",
    "ingest.per_step.1_session.steps_per_s",
    "latency.emit_to_viewer.p50_ms",
    "latency.emit_to_viewer.p99_ms",
    "daemon.rss_mb.after_1m_steps",
    "agent.asl_step.steps_per_s",
    "agent.episode_action.steps_per_s",
    "agent.stock_bdi_step.steps_per_s",
    "agent.telemetry_on_off.ratio",
    "agent.idle_cpu_percent",
    "container.agents_at_half_rate",
}
KEYS = {"name", "value", "unit", "baseline_name", "baseline_value", "ratio", "notes"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_run_writes_every_figure_with_consistent_ratios(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--scale", "0.1", "--out", str(out)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert isinstance(figures, list)
    names = [f["name"] for f in figures]
    assert len(names) == len(set(names)), names
    assert REQUIRED <= set(names), REQUIRED - set(names)
    for figure in figures:
        assert set(figure) == KEYS, figure
        assert isinstance(figure["unit"], str) and figure["unit"]
        assert isinstance(figure["baseline_name"], str) and figure["baseline_name"]
        assert isinstance(figure["notes"], str) and figure["notes"]
        for key in ("value", "baseline_value", "ratio"):
            assert math.isfinite(figure[key]) and figure[key] > 0, figure
        assert math.isclose(figure["ratio"], figure["value"] / figure["baseline_value"], rel_tol=1e-12), figure
    machine = json.loads((tmp_path / "results.machine.json").read_text())
    assert machine["nproc"] >= 1 and machine["load_average"] and machine["command"].startswith("python -m bench")
    assert "| figure" in done.stdout  # the table


def test_unknown_only_name_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "no.such.figure", "--out", str(tmp_path / "r.json")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no.such.figure" in done.stderr and "ingest" in done.stderr
    assert not (tmp_path / "r.json").exists()


def test_half_rate_point_interpolates_between_the_measured_counts() -> None:
    assert half_rate_point({1: 100.0, 2: 60.0, 4: 40.0}) == (3.0, True)
    assert half_rate_point({1: 100.0, 2: 50.0}) == (2.0, True)
    assert half_rate_point({1: 100.0, 2: 80.0, 4: 70.0}) == (4.0, False)


def test_only_a_full_run_writes_the_tracked_reference_by_default() -> None:
    assert default_out(quick=False, only=None, scale=1.0) == DEFAULT_OUT
    for partial in ({"quick": True, "only": None, "scale": 1.0}, {"quick": False, "only": ["ingest"], "scale": 1.0},
                    {"quick": False, "only": None, "scale": 0.5}):
        assert default_out(**partial) == PARTIAL_OUT != DEFAULT_OUT, partial
