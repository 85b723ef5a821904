"""The README says what the code does: the environments it lists are the ones the code tests
and names in its error messages, and its Python snippet runs as written."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

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
