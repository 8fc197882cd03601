"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _command(marker: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", text, re.S)
    assert match, f"README has no {marker} block"
    return match.group(1).strip()


def test_readme_has_exactly_two_setup_commands():
    assert "\n" not in _command("main-command")
    assert "\n" not in _command("test-command")


def test_ci_runs_the_readme_install_steps_and_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    main = _command("main-command")
    install_steps = [step.strip() for step in main.split("&&")][:-1]  # the last step is the main job
    for step in install_steps:
        assert step in ci, f".ci/run lacks the README step: {step}"
    assert _command("test-command") in ci
    assert "SRCLI_REQUIRE_SHARED=1" in ci
    assert '"$rc" -eq 5' in ci  # "no tests collected" is a failure
