"""The README's first screen stays true: its test command is exactly what CI runs."""

from __future__ import annotations

import re

from tests.harness import ROOT


def commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", readme)[:2]


def test_ci_runs_the_readme_test_command() -> None:
    _, test_command = commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == test_command
    script = (ROOT / test_command.split()[-1]).read_text()
    assert "pytest" in script and "requirements-dev.txt" in script


def test_readme_run_command_installs_and_starts_the_service() -> None:
    run_command, _ = commands()
    assert "pip install -r requirements.txt" in run_command
    assert run_command.endswith("uvicorn main:app")
