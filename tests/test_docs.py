"""README stays true: its set-up commands are the ones CI runs, and every command it shows exists."""

from __future__ import annotations

import re

from conftest import REPO, run_cli


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/test.sh" in ci
    assert "bash scripts/demo.sh" in readme
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert "examples/harbour.jpg" in demo and (REPO / "examples" / "harbour.jpg").is_file()


def test_every_subcommand_in_the_readme_exists():
    from stillmotion.cli import SUBCOMMANDS

    readme = (REPO / "README.md").read_text()
    used = set(re.findall(r"^\s*stillmotion ([a-z][a-z-]*)", readme, flags=re.M))
    assert used, "README shows no stillmotion command"
    assert used <= set(SUBCOMMANDS), used - set(SUBCOMMANDS)
    for name in used:
        code, out, err = run_cli(name, "--help")
        assert code == 0, (name, err)
