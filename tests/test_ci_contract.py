"""The README's test command and .ci/run must stay the same command."""

from __future__ import annotations

import re

from conftest import REPO


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.+?)\n```", readme, flags=re.S)
    commands = [line for block in blocks for line in block.splitlines() if "pytest" in line]
    assert len(commands) == 1, "the README must show exactly one test command"
    assert commands[0] in (REPO / ".ci" / "run").read_text().splitlines()
