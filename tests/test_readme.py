"""The README's two commands are what `.ci/run` runs and what a new user types."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _block(name):
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {name} -->\n```\n(.*?)\n```\n<!-- /{name} -->", text, re.S)
    assert match, f"README.md lost its marked {name} block"
    return match.group(1).strip()


def test_demo_command_installs_the_demo_extra_and_runs_the_demo():
    command = _block("demo-command")
    assert '".[demo]"' in command and command.endswith("cyconv demo")


def test_test_command_installs_plugins_and_runs_pytest():
    command = _block("test-command")
    assert '".[test]"' in command
    for plugin in ("plugins/cyconv-activations", "plugins/cyconv-gap"):
        assert plugin in command and (ROOT / plugin / "pyproject.toml").exists()
    assert command.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _block("test-command") + " || exit 1" in ci, \
        ".ci/run must run the README's test command verbatim"
    assert "export HYPOTHESIS_PROFILE=ci" in ci
