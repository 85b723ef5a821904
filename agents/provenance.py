"""Which code produced a result: the commit of the working tree, marked when it has changes.

Benchmarks and experiment summaries name it, so a figure can be traced to the code that made
it and a summary made by uncommitted code says so.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def code_commit() -> str:
    """The short commit hash of HEAD, "+changes" when tracked files differ from it; "unknown"
    outside a git checkout."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if commit != "unknown" and git("status", "--porcelain", "--untracked-files=no") else "")
