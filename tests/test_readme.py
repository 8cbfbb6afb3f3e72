"""The README opens with the two commands, and CI runs the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)[:2]


def test_readme_opens_with_two_commands() -> None:
    first, second = _commands()
    assert "torch==2.13.0" in first and first.index("torch==2.13.0") < first.index("-e .")
    assert "nnsight-rnn demo" in first
    assert "pytest" in second and "HF_HUB_OFFLINE=1" in second


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci
