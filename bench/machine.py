"""The machine a run happened on, recorded with its figures: on a shared machine the load
average is part of the result."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from agents.provenance import code_commit

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def describe() -> dict[str, str | int]:
    """nproc, CPU model, Python, kernel, commit, time and load average right now."""
    return {
        "nproc": os.cpu_count() or 0,
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": code_commit(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average": load_average(),
    }
