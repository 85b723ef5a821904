"""The README says what the code does: the environments it lists are the ones the code tests
and names in its error messages."""

from __future__ import annotations

import re

from envs.ids import TESTED_ENV_IDS
from tests.fixtures_daemon import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_lists_exactly_the_tested_environments():
    sentence = README[README.index("Environments tested here"):]
    sentence = sentence[: sentence.index("work too")]
    listed = set(re.findall(r"\b[A-Z][A-Za-z0-9]*-v\d+\b", sentence))
    assert listed == set(TESTED_ENV_IDS)
