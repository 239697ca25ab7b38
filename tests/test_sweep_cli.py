"""`radiogen sweep` on the command line: the same flags as `python -m ray_jobs.sweep`, and a sweep file with a
search-space error exits 2 naming the problem before any trial, MLflow run or sweep folder exists."""

from __future__ import annotations


import pytest
import yaml

from ray_jobs.cli import build_parser, main

from .helpers import REPO
from .test_search_space import ERRORS, write


def test_sweep_has_its_flags_and_the_cli_knows_the_sweep_modes():
    """The parity of `python -m ray_jobs.sweep` with `radiogen sweep` is tests/test_cli.py's."""
    from radiogen.search_space import SWEEP_MODES
    from ray_jobs import cli

    sweep = next(a for a in build_parser()._actions if a.dest == "command").choices["sweep"]
    flags = {s for a in sweep._actions for s in a.option_strings}
    assert {"--config", "--data", "--trials", "--resume", "--max-concurrent", "--set"} <= flags
    assert cli.SWEEP_MODES == SWEEP_MODES


@pytest.mark.parametrize("case", ["unknown parameter", "empty choice list", "reversed bounds",
                                  "condition on a value the parent never takes", "value the config rejects"])
def test_search_space_error_exits_2_before_anything_runs(tmp_path, capsys, case):
    fields, message = ERRORS[case]
    runs = tmp_path / "runs"
    code = main(["sweep", "--config", write(tmp_path, **fields), "--data", str(tmp_path / "data"),
                 "--runs-dir", str(runs), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not runs.exists() and not (tmp_path / "mlflow.db").exists()


def test_resume_of_an_unknown_sweep_exits_2(tmp_path, capsys):
    assert main(["sweep", "--resume", "nothing-here", "--runs-dir", str(tmp_path)]) == 2
    assert "--resume: no sweep at" in capsys.readouterr().err
