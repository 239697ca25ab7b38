"""Every `radiogen` command the README prints parses with the real parser: no renamed flag or subcommand can
linger in the documentation. (The README's two set-up commands are checked in test_cli.py; the demo in
test_demo.py.)"""

from __future__ import annotations

import re
import shlex

import pytest

from ray_jobs.cli import build_parser

from .helpers import REPO


def readme_radiogen_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(".venv/bin/radiogen "):
                commands.append(line)
    return commands


def test_the_readme_prints_radiogen_commands_with_the_venv_prefix():
    assert len(readme_radiogen_commands()) >= 10
    text = (REPO / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():  # a job's `-- python ...` runs on the cluster
            assert not re.match(r"\s*(radiogen|mlflow|python) ", line), f"not runnable as printed: {line}"


@pytest.mark.parametrize("command", readme_radiogen_commands())
def test_readme_command_parses(command):
    command = re.sub(r"\[[^\]]*\]", "", command).replace("<run name>", "NAME")  # [optional] parts, placeholders
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as err:
        pytest.fail(f"README command does not parse ({err}): {command}")
