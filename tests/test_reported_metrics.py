"""A sweep's objectives are checked by name against the metrics trials report, before Ray starts: the names
radiogen declares (losses.GANLoss.term_names, loop.validation_metric_names) are the names a step reports."""

from __future__ import annotations

import pytest
import torch

from radiogen.config import load_config
from radiogen.losses import GANLoss
from radiogen.train_step import build_training, train_step

from .helpers import REPO, random_batch, tiny


@pytest.mark.parametrize("cfg", [
    tiny(),
    tiny(loss={"aux_genes": 1.0, "r1_gamma": 1.0, "speckle": 1.0, "phi_group_lasso": 0.01, "lambda_l1": 0.0,
               "weight_IS": 0.0}),
    load_config(REPO / "ablations" / "mcgan_tiny.yaml"),
], ids=["tiny", "every-optional-term", "mcgan"])
def test_the_declared_loss_names_are_those_a_step_reports(cfg) -> None:
    torch.manual_seed(0)
    state = build_training(cfg, torch.device("cpu"))
    reported = {k for k in train_step(state, random_batch(cfg)) if k.startswith("loss/")}
    assert reported == GANLoss(cfg.loss).term_names(cfg.generator.arch)


def _sweep(prepared, tmp_path, capsys, text: str, *flags: str) -> str:
    from ray_jobs.cli import main

    path = tmp_path / "typo.yaml"
    path.write_text(text)
    assert main(["sweep", "--config", str(path), "--data", str(prepared), "--trials", "1",
                 "--runs-dir", str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                 *flags]) == 2
    assert not (tmp_path / "runs" / "sweeps").exists()  # refused before the sweep's folder, Ray or MLflow
    return capsys.readouterr().err


def test_a_misspelt_objective_is_refused_before_any_trial(prepared, tmp_path, capsys) -> None:
    demo = (REPO / "ablations" / "sweep_demo.yaml").read_text()
    demo = demo.replace("experiment: ", f"experiment: {REPO / 'ablations'}/", 1)
    err = _sweep(prepared, tmp_path, capsys, demo.replace("val/frechet_radiomic,", "val/frechet_radiomc,"))
    assert "objective 'val/frechet_radiomc' is not a metric the trials report; did you mean val/frechet_radiomic?" \
        in err and "Traceback" not in err and len(err.splitlines()) == 1
    err = _sweep(prepared, tmp_path, capsys, demo.replace("val/map_objective", "loss/G/speckel"))
    assert "did you mean loss/G/speckle?" in err
    err = _sweep(prepared, tmp_path, capsys, demo.replace("val/map_objective", "val/program_response"))
    assert "objective val/program_response is measured against the cohort's truth: give it with --truth" in err
