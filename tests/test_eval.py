"""`radiogen eval` end to end on real services: models trained by the real `radiogen train --local` path on the
prepared synthetic cohort, evaluated by checkpoint and by MLflow run id against a real MLflow server;
the validation map objective on a constructed generator whose nodules follow its genes exactly; the figures; and the
learnability benchmark's --quick form."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from .background import in_background
from .helpers import REPO
from .test_train import run_of, train

FAST = ["--n-perm", "50", "--probe-perm", "5", "--backgrounds", "4", "--clusters", "2", "--map-backgrounds", "1"]
PROGRAMS = ("size", "density", "irregularity", "texture")


@pytest.fixture(scope="module")
def trained(prepared, mlflow_server, tmp_path_factory):
    """The proposed model and the MC-GAN baseline, 20 steps each through ray_jobs.train.main --local."""
    runs = tmp_path_factory.mktemp("eval_runs")
    assert train(prepared, runs, mlflow_server, "--local", name="eval-proposed", steps=20) == 0
    assert train(prepared, runs, mlflow_server, "--local", "--set", "generator.arch=mcgan", "--set",
                 "loss.kl_weight=2.0", name="eval-mcgan", steps=20) == 0
    _, run = run_of(mlflow_server, "eval-proposed")
    return SimpleNamespace(runs=runs, run=run)


def evaluate(*argv: str) -> int:
    from ray_jobs.eval import main

    return main(list(argv))


CHEAP_MAPS = ["--estimators", "direct,synthesis-correlation"]
"""Enough of the estimators table for a test about something else (the full table is checked by checkpoint)."""


def check_report(out, n_subjects: int, baseline: bool, truth: bool, estimators: tuple[str, ...] | None = None
                 ) -> dict:
    """The report folder is complete: report.md linking every figure, PNGs of the recorded size, metrics."""
    result = json.loads((out / "metrics.json").read_text())
    metrics = {k: (math.nan if v is None else v) for k, v in result["metrics"].items()}
    report = (out / "report.md").read_text()
    splits = [s for s in ("train", "heldout") if metrics[f"eval/{s}/n_subjects"] > 0]
    assert sum(metrics[f"eval/{s}/n_subjects"] for s in ("train", "heldout")) == n_subjects
    expected = {"fig2_synthesis.png", "fig3_gene_swap.png"} | {f"{f}_{s}.png" for s in splits
                                                                for f in ("fig4_tsne", "map")}
    assert set(result["figures"]) == expected
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(expected)  # no temp files left
    for name, info in result["figures"].items():
        path = out / "figures" / name
        assert path.stat().st_size > 2000, name
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (info["width"], info["height"]), name
        assert f"](figures/{name})" in report
    with Image.open(out / "figures" / "fig2_synthesis.png") as img:  # 4 columns of 2.2 in at 100 dpi
        assert img.size[0] == 880 and img.size[1] % 220 == 0
    with Image.open(out / "figures" / "fig3_gene_swap.png") as img:  # rows: source, background, [baseline], proposed
        assert img.size[1] == 160 * (4 if baseline else 3)

    models = ["model"] + (["baseline"] if baseline else [])
    for s in splits:
        m = lambda *parts: metrics["/".join(("eval", s, *parts))]  # noqa: E731
        for who in models:
            for key in ("realism/frechet_radiomic", "realism/kid_radiomic", "realism/empty_mask_fraction",
                        "realism/mask_area_ratio", "background/l1", "background/ssim", "conditioning/top1",
                        "conditioning/chance_top1", "conditioning/p_top1", "map/agreement", "map/n_significant",
                        "map/n_cells", "code/silhouette"):
                # The 20-step baseline's masks can cover whole slices: no background left (NaN) is then right.
                assert math.isfinite(m(who, *key.split("/"))) or (who == "baseline" and key.startswith("background")
                                                                   and m(who, "realism", "mask_area_ratio") > 3), \
                    (s, who, key)
            assert 0 <= m(who, "conditioning", "top1") <= 1 and 0 < m(who, "conditioning", "p_top1") <= 1
            assert m(who, "conditioning", "chance_top1") == pytest.approx(1 / m("n_subjects"))
            assert -1 <= m(who, "map", "agreement") <= 1 and not m(who, "background", "ssim") > 1
            assert 0 < m(who, "map", "n_cells") <= 16 * len(result["feature_names"])  # tiny code_dim 16
        assert math.isfinite(m("classical", "map", "n_cells")) and math.isfinite(m("genes_pca", "code", "silhouette"))
        for p in PROGRAMS:
            assert f"eval/{s}/model/code/probe_r2/{p}" in metrics
        if truth:
            for who in [*models, "classical", "genes_pca"]:
                for p in PROGRAMS:
                    assert math.isfinite(m(who, "truth", "probe_r2", p)) and 0 < m(who, "truth", "probe_p", p) <= 1
            for who in [*models, "real"]:  # the program response of each model and of the real nodules
                assert {f"eval/{s}/{who}/truth/response/{r}" for r in ("size", "density", "decoy")} <= set(metrics)
            assert m("real", "truth", "response", "decoy") >= 0
    assert ("## Ground truth" in report) == truth and ("baseline (MC-GAN)" in report) == baseline
    assert ("Program response" in report and "| real nodules (ceiling) |" in report) == truth
    # The estimators table: every map fitted on the training subjects, the generator's once per model.
    from radiogen.evaluation.estimators import ESTIMATORS, GENERATOR_ESTIMATORS

    rows, wanted = result["estimators"], estimators or tuple(ESTIMATORS)
    assert {(r["who"], r["estimator"]) for r in rows} == (
        {("data", e) for e in wanted if e not in GENERATOR_ESTIMATORS}
        | {(w, e) for w in models for e in wanted if e in GENERATOR_ESTIMATORS})
    assert "## Radiogenomic map estimators" in report
    for r in rows:
        values = {k: v for k, v in metrics.items() if k.startswith(f"eval/train/{r['who']}/links/{r['estimator']}/")}
        if r["undefined"]:  # a map over empty synthetic masks has no numbers, and says why
            assert r["undefined"].startswith("undefined: ") and all(math.isnan(v) for k, v in values.items()
                                                                    if "prevalence" not in k)
            assert r["undefined"] in report
        elif truth:
            assert 0 <= r["metrics"]["auroc/pooled"] <= 1 and 0 <= r["metrics"]["auprc/size"] <= 1, r
            assert values[f"eval/train/{r['who']}/links/{r['estimator']}/auroc/pooled"] == r["metrics"]["auroc/pooled"]
    return metrics


def test_eval_by_checkpoint_with_baseline_and_truth(trained, prepared, synthetic_cohort, tmp_path, capsys):
    out = tmp_path / "report"
    assert evaluate("--checkpoint", str(trained.runs / "eval-proposed"), "--baseline", str(trained.runs / "eval-mcgan"),
                    "--data", str(prepared), "--truth", str(synthetic_cohort / "truth.json"), "--out", str(out),
                    "--no-mlflow", *FAST) == 0
    check_report(out, n_subjects=6, baseline=True, truth=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith(f"report: {out / 'report.md'}")
    start = next(i for i, line in enumerate(lines) if line.startswith("radiogenomic map estimators (fitted on"))
    # 3 training and 3 held-out subjects: each split's figures come with the warning that they mean little.
    assert lines[start - 2].startswith("heldout (3 subjects)") and lines[start - 1].startswith(
        "warning: the heldout split has 3 subjects, fewer than 8: its rank correlations, AUROCs and p values are "
        "not meaningful (a rank correlation over 3 subjects has a null SD of 0.71)")
    assert "program response size" in lines[start - 4] and lines[start - 3].startswith(
        "warning: the train split has 3 subjects, fewer than 8")
    assert "warning: the heldout split has 3 subjects" in (out / "report.md").read_text()
    assert len(lines) - 2 - start == 15  # 7 maps without a generator, 4 per model
    assert any(line.startswith("  synthesis-intervention") for line in lines[start:])
    assert not list(tmp_path.glob(".report.*"))  # the temp folder was renamed into place


def test_eval_by_run_id_logs_a_child_run(trained, prepared, mlflow_server, tmp_path, capfd):
    from mlflow import MlflowClient

    from radiogen.schema import dataset_fingerprint

    out = tmp_path / "by-run"
    parent = trained.run
    assert evaluate("--run", parent.info.run_id, "--data", str(prepared), "--tracking-uri", mlflow_server,
                    "--runs-dir", str(trained.runs), "--out", str(out), *FAST, *CHEAP_MAPS) == 0
    printed = "".join(capfd.readouterr())  # quiet: no artifact progress bars, no MLflow run links of its own
    assert "Downloading artifacts" not in printed and "View run" not in printed, printed[-2000:]
    metrics = check_report(out, n_subjects=6, baseline=False, truth=False, estimators=tuple(CHEAP_MAPS[1].split(",")))
    context = json.loads((out / "metrics.json").read_text())["context"]
    assert context["model"].startswith(f"MLflow run {parent.info.run_id}")

    client = MlflowClient(mlflow_server)
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 1
    child = children[0]
    assert child.info.status == "FINISHED" and child.info.run_name == "eval-eval-proposed"
    assert child.data.tags["radiogen.dataset_fingerprint"] == dataset_fingerprint(prepared) \
        == parent.data.tags["radiogen.dataset_fingerprint"]
    assert "radiogen.run_name" not in child.data.tags  # a training resuming by name must never attach to it
    logged = child.data.metrics
    assert logged and all(k.startswith("eval/") for k in logged)
    finite = {k for k, v in metrics.items() if math.isfinite(v)}
    assert set(logged) == finite and logged["eval/train/model/background/l1"] == pytest.approx(
        metrics["eval/train/model/background/l1"])
    top = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"report.md", "metrics.json", "figures"} <= top
    assert len(client.list_artifacts(child.info.run_id, "figures")) == len(list((out / "figures").iterdir()))

    # The run's weights-only artifact and its last checkpoint hold the same EMA generator: same numbers.
    out2 = tmp_path / "by-checkpoint"
    assert evaluate("--checkpoint", str(trained.runs / "eval-proposed"), "--data", str(prepared), "--out", str(out2),
                    "--no-mlflow", *FAST, *CHEAP_MAPS) == 0
    again = json.loads((out2 / "metrics.json").read_text())["metrics"]
    for key in ("eval/train/model/background/l1", "eval/train/model/realism/mask_area_ratio",
                "eval/heldout/model/conditioning/top1", "eval/train/model/map/agreement"):
        assert again[key] == pytest.approx(metrics[key], rel=1e-5), key


def test_eval_refuses_bad_input_with_exit_2(trained, prepared, tmp_path, capsys):
    assert evaluate("--checkpoint", str(tmp_path), "--data", str(prepared), "--no-mlflow") == 2
    assert "no checkpoint there" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert evaluate("--checkpoint", str(tmp_path / "junk.pt"), "--data", str(prepared), "--no-mlflow") == 2
    assert "is not a radiogen checkpoint or weights file" in capsys.readouterr().err
    assert evaluate("--run", "0123abcd", "--data", str(prepared), "--no-mlflow") == 2
    assert "--no-mlflow cannot look up an MLflow run" in capsys.readouterr().err
    (tmp_path / "truth.json").write_text(json.dumps({"subjects": {}, "gene_programs": {}}))
    assert evaluate("--checkpoint", str(trained.runs / "eval-proposed"), "--data", str(prepared), "--truth",
                    str(tmp_path / "truth.json"), "--out", str(tmp_path / "never"), "--no-mlflow") == 2
    assert "lacks program values of subjects" in capsys.readouterr().err and not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------------------------
# The validation map objective on a generator whose nodule follows its genes exactly


class GeneDrawnDisc(torch.nn.Module):
    """A stand-in G: a centred disc whose radius, brightness and texture amplitude follow genes 0, 1 and 2,
    drawn the same on any background (so its synthetic phenotype equals the 'real' one by construction)."""

    def __init__(self, use_genes: bool = True):
        super().__init__()
        self.use_genes = use_genes

    def forward(self, background, genes, noise=None):
        g = genes if self.use_genes else torch.zeros_like(genes)
        _, _, H, W = background.shape
        yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        dist = ((yy - H / 2) ** 2 + (xx - W / 2) ** 2).float().sqrt()
        mask = (dist[None] <= 5 + 3 * g[:, 0, None, None]).float()[:, None]                   # radius 2..8 px
        checker = ((yy + xx) % 2 * 2 - 1).float()
        inside = 0.3 * g[:, 1, None, None] + 0.1 * (g[:, 2, None, None] + 1.2) * checker     # (B, H, W)
        image = background * (1 - mask) + inside[:, None] * mask
        return SimpleNamespace(image=image, mask=mask, weight=None, code=g[:, :3])


def test_map_objective_is_one_for_a_perfect_map_and_never_nan():
    from radiogen.evaluation.objective import MapReference, map_objective
    from radiogen.evaluation.synthesis import cheap_phenotype_by_subject, gene_swap

    rng = np.random.default_rng(0)
    genes = torch.from_numpy(rng.uniform(-1, 1, (16, 6)).astype(np.float32))
    backgrounds = torch.from_numpy(rng.uniform(-1, -0.6, (8, 1, 32, 32)).astype(np.float32))
    real_bg = torch.full((16, 1, 32, 32), -0.9)
    with torch.no_grad():
        real = GeneDrawnDisc()(real_bg, genes)
    ids = [f"S{i:02d}" for i in range(16)]
    real_pheno = cheap_phenotype_by_subject(real.image[:, 0].numpy(), real.mask[:, 0].numpy(), ids, ids)
    assert np.isfinite(real_pheno).all() and (real_pheno.std(axis=0) > 0).all()
    reference = MapReference(genes.numpy(), real_pheno)

    state = torch.get_rng_state()
    perfect = map_objective(GeneDrawnDisc(), backgrounds, reference)
    assert torch.equal(torch.get_rng_state(), state)  # its own RNG stream
    assert set(perfect) == {"val/map_objective", "val/map_agreement"}  # no truth: the truth-free score
    assert perfect["val/map_objective"] == perfect["val/map_agreement"] == pytest.approx(1.0)
    assert map_objective(GeneDrawnDisc(use_genes=False), backgrounds, reference)["val/map_objective"] == 0.0
    shuffled = MapReference(genes.numpy(), real_pheno[np.random.default_rng(1).permutation(16)])
    assert map_objective(GeneDrawnDisc(), backgrounds, shuffled)["val/map_objective"] < 0.5

    # With the true links (gene 0 -> size, gene 1 -> density): the AUPRC of the intervention map.
    links = np.zeros((6, 4), dtype=bool)
    links[0, 0] = links[1, 1] = True
    known = MapReference(genes.numpy(), real_pheno, links)
    scored = map_objective(GeneDrawnDisc(), backgrounds, known)
    assert scored["val/map_objective"] == scored["val/map_auprc"] > 0.9 and "val/map_agreement" in scored
    blind = map_objective(GeneDrawnDisc(use_genes=False), backgrounds, known)["val/map_objective"]
    assert blind == pytest.approx(1 / 6)  # every gene tied: the prevalence, a number and not NaN

    class Empty(GeneDrawnDisc):  # draws no nodule at all
        def forward(self, background, genes, noise=None):
            out = super().forward(background, genes)
            return SimpleNamespace(image=background, mask=out.mask * 0, weight=None, code=out.code)

    for ref in (reference, known):
        assert all(np.isfinite(v) for v in map_objective(Empty(), backgrounds, ref).values())
    with pytest.raises(ValueError, match="needs >= 3 subjects"):
        map_objective(GeneDrawnDisc(), backgrounds, MapReference(genes.numpy()[:2], real_pheno[:2]))

    swap = gene_swap(GeneDrawnDisc(), backgrounds, genes, batch_size=5)  # chunks across subjects
    assert swap.images.shape == (16, 8, 32, 32) and swap.weights is None and swap.codes.shape == (16, 3)
    assert np.array_equal(swap.masks[:, 0], swap.masks[:, 7])  # same genes, any background: the same disc


def test_map_objective_of_the_real_generator_is_repeatable_and_leaves_the_caller_alone():
    from radiogen.evaluation.objective import MapReference, map_objective
    from radiogen.models import build_generator

    from .helpers import tiny

    torch.manual_seed(0)
    G = build_generator(tiny())
    backgrounds, genes = torch.rand(8, 1, 32, 32) * 2 - 1, torch.randn(16, 64)
    reference = MapReference(genes.numpy(), np.random.default_rng(0).normal(size=(16, 4)),
                             np.random.default_rng(1).random((64, 4)) < 0.1)
    rng = torch.get_rng_state()
    q = map_objective(G, backgrounds, reference)
    assert torch.equal(torch.get_rng_state(), rng)  # its noise comes from its own stream
    assert G.training  # the caller's mode is restored
    assert map_objective(G, backgrounds, reference) == q  # same seed: same score
    assert all(np.isfinite(v) for v in q.values())


# ---------------------------------------------------------------------------------------------


def test_new_figures_layout():
    from radiogen.figures import fig3_grid, fig4_tsne, map_heatmap

    rng = np.random.default_rng(0)
    a = lambda n: rng.uniform(-1, 1, (n, 16, 16))  # noqa: E731
    assert len(fig3_grid(a(9), a(9), a(9), a(9)).axes) == 4 * 7  # at most 7 gene sources, as the paper
    assert len(fig3_grid(a(3), a(3), a(3)).axes) == 3 * 3        # no baseline row
    emb = {t: rng.normal(size=(10, 2)) for t in ("raw genes", "proposed code")}
    fig = fig4_tsne(emb, {t: rng.integers(0, 2, 10) for t in emb}, [a(3), a(1)])
    assert len(fig.axes) == 2 + 2 * 3
    amap = SimpleNamespace(rho=rng.uniform(-1, 1, (40, 5)), significant=rng.random((40, 5)) > 0.8,
                           row_names=[f"code_{i}" for i in range(40)], col_names=[f"f{j}" for j in range(5)])
    fig = map_heatmap({"learned": amap}, max_rows=8)
    assert "top 8 of 40" in fig.axes[0].get_title() and len(fig.axes[0].get_xticks()) == 8


@in_background(lambda out: [sys.executable, str(REPO / "scripts" / "bench_learnability.py"), "--quick",
                             "--out", str(out)])
def test_learnability_quick_runs_end_to_end(background):
    res, tmp_path = background, background.out
    assert res.returncode == 0, res.stdout[-3000:]
    for label in ("paper", "stable"):  # the paper's method and the stable config, side by side
        assert f"| {label} | train |" in res.stdout and f"| {label} (learned code) |" in res.stdout
    assert "| real nodules | heldout |" in res.stdout and "| classical metagenes |" in res.stdout
    result = json.loads((tmp_path / "learnability.json").read_text())
    for label in ("paper", "stable"):
        summary = result["summary"][label]
        for split in ("train", "heldout"):
            for key in ("auroc/learned", "auroc/classical", "top1", "mask_area_ratio", "empty",
                        *(f"response/{w}/{r}" for w in ("model", "real") for r in ("size", "density", "decoy")),
                        *(f"probe_r2/{w}/{p}" for w in ("learned", "classical", "pca") for p in PROGRAMS)):
                assert f"{split}/{key}" in summary
            assert summary[f"{split}/response/real/size"]["mean"] > 0  # real nodules grow with the size program
        # The maps are fitted on the training subjects only: no held-out link AUROC; a map over mostly empty
        # synthetic masks is undefined (null).
        learned = summary["train/auroc/learned"]["mean"]
        assert (learned is not None and 0 <= learned <= 1) or summary["train/empty"]["mean"] > 0.5, summary
        assert summary["heldout/auroc/learned"]["mean"] is None and 0 <= summary["train/auroc/classical"]["mean"] <= 1
        # The Fréchet distance's course comes from the training run's validations in MLflow.
        assert summary["course/frechet_first"]["mean"] is not None and summary["course/seconds"]["mean"] > 0
        assert (tmp_path / "eval" / f"{label}-s0-10" / "report.md").is_file()


def test_learning_curves_records_losses_accuracies_mask_area_and_program_response(prepared, synthetic_cohort, tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    from learning_curves import main as learning_curves

    out = tmp_path / "curves"
    assert learning_curves(["--data", str(prepared), "--truth", str(synthetic_cohort / "truth.json"), "--out", str(out),
                            "--steps", "4", "--every", "2"]) == 0
    result = json.loads((out / "curves.json").read_text())
    assert set(result["curves"]) == {"paper", "stable"}
    for label, history in result["curves"].items():
        assert [p["step"] for p in history] == [2, 4]
        for point in history:
            assert 0 <= point["acc/D/I/real"] <= 1 and 0 <= point["acc/D/I/fake"] <= 1
            assert 0 <= point["gen/mask_area"] <= 1 and point["loss/D/I"] > 0
            assert "train/response/size" in point and "heldout/response/decoy" in point
        assert ("loss/G/aux" in history[0]) == (label == "stable")  # the stable config's auxiliary regression
    assert 0 < result["real_mask_area"] < 1
    assert (out / "curves.png").stat().st_size > 10_000
