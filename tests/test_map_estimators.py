"""The radiogenomic map estimators on constructed data with a known answer: the cohort's gene model with a
perfect phenotype read-out, and an oracle generator (test-only) that draws each subject's true phenotype."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from data_prep.gene_model import PROGRAMS, simulate_expression
from radiogen.evaluation.estimators import Budget, MapEstimate, MapInputs, Synthesizer, run
from radiogen.evaluation.link_metrics import link_metrics

SMALL = Budget(n_perm=50, readout=8, hrt_top=4, hrt_resamples=5, hrt_backgrounds=1, ig_steps=8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small batches: a second intra-op thread only contends with whatever else runs on a 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cohort(design: str, n: int, n_train: int, genes: int = 100, seed: int = 2, noise: float = 0.1):
    """Genes normalised as prep and training do (log2(x + 1), z-score on the training subjects, NA genes
    dropped), the programs plus read-out noise as the real phenotype, and the true links."""
    expr = simulate_expression(n, seed, genes, design=design)
    lx = np.log2(expr.counts.T + 1.0)
    keep = ~np.isnan(lx).any(axis=0)
    lx = lx[:, keep]
    x = (lx - lx[:n_train].mean(0)) / lx[:n_train].std(0)
    gp = np.array(expr.gene_program, dtype=object)[keep]
    links = np.array([[g == p for p in PROGRAMS] for g in gp])
    y = expr.programs + noise * np.random.default_rng(seed).standard_normal(expr.programs.shape)
    clusters = np.full(len(gp), -1) if expr.clusters is None else expr.clusters[keep]
    return SimpleNamespace(x=x, y=y, links=links, n_train=n_train, effects=expr.effects[keep], clusters=clusters,
                           names=[s for s, k in zip(expr.gene_symbols, keep) if k])


def inputs(c, synthesizer=None) -> MapInputs:
    t = c.n_train
    return MapInputs(c.x[:t], c.y[:t], c.names, c.x[t:], c.y[t:], synthesizer, seed=0)


class Oracle(torch.nn.Module):
    """Draws a disc whose radius follows the true size program and whose intensity the density program:
    program p = genes @ w[:, p] (or the product of two gene sets' means, `product`)."""

    def __init__(self, w: np.ndarray, product: tuple[np.ndarray, np.ndarray] | None = None):
        super().__init__()
        self.w = torch.as_tensor(w, dtype=torch.float32)
        self.product = product
        self.cfg = SimpleNamespace(noise_dim=0)

    def forward(self, background, genes, noise=None):
        y = genes @ self.w
        if self.product is not None:
            a, b = (genes[:, torch.as_tensor(i)].mean(dim=1) for i in self.product)
            y = torch.stack([a * b, y[:, 1]], dim=1)
        H = background.shape[-1]
        yy, xx = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
        dist = ((yy - H / 2) ** 2 + (xx - H / 2) ** 2).float().sqrt()[None]
        mask = torch.sigmoid(2 * (6 + 2.5 * torch.tanh(y[:, 0])[:, None, None] - dist))[:, None]
        inside = (0.3 * torch.tanh(y[:, 1]))[:, None, None, None]
        return SimpleNamespace(image=background * (1 - mask) + inside * mask, mask=mask, weight=None, code=y)


def oracle_weights(c) -> np.ndarray:
    """The true linear map of the drivers (least squares of each program on its drivers, all subjects)."""
    w = np.zeros((c.x.shape[1], 4))
    for p in range(2):
        d = np.flatnonzero(c.links[:, p])
        w[d, p] = np.linalg.lstsq(c.x[:, d], c.y[:, p], rcond=None)[0]
    return w


BACKGROUNDS = torch.full((2, 1, 32, 32), -0.9)


@pytest.fixture(scope="module")
def drivers():
    return cohort("drivers", 240, 180)


def test_oracle_generator_recovers_the_drivers_where_the_per_gene_screen_calls_passengers(drivers) -> None:
    c = drivers
    synth = Synthesizer(Oracle(oracle_weights(c)), BACKGROUNDS)
    maps = run(inputs(c, synth), ["direct", "synthesis-intervention", "synthesis-gradient"], SMALL)
    m = {k: link_metrics(v, c.links, PROGRAMS) for k, v in maps.items()}
    for name in ("synthesis-intervention", "synthesis-gradient"):
        for p in ("size", "density"):
            assert m[name][f"auroc/{p}"] > 0.99 and m[name][f"auprc/{p}"] > 0.95, (name, p, m[name])
    # The generator's map is the drivers alone: a passenger's shift changes nothing it draws.
    est = maps["synthesis-intervention"]
    passengers = np.isin(c.clusters, c.clusters[c.links[:, 0]]) & ~c.links[:, 0]
    assert passengers.sum() > 5 and np.all(est.scores[passengers, 0] == 0)
    # With the signs the truth states (the oracle's radius and intensity grow with the program).
    for p in range(2):
        d = c.links[:, p]
        assert np.array_equal(np.sign(est.effects[d, p]), np.sign(c.effects[d]))
    # The per-gene screen ranks its drivers high but calls their co-expressed passengers too.
    assert m["direct"]["fdp/q0.1"] > 0.3 and m["direct"]["power/q0.1"] > 0.3


def test_interaction_is_seen_by_the_per_subject_effect_not_by_correlation() -> None:
    c = cohort("interaction", 200, 160)
    a, b = (np.flatnonzero(c.clusters == k) for k in np.unique(c.clusters[c.links[:, 0]]))
    synth = Synthesizer(Oracle(np.zeros((c.x.shape[1], 4)), product=(a, b)), BACKGROUNDS)
    maps = run(inputs(c, synth), ["direct", "synthesis-intervention"], SMALL)
    inter = maps["synthesis-intervention"]
    assert link_metrics(inter, c.links, PROGRAMS)["auroc/size"] > 0.99
    assert link_metrics(maps["direct"], c.links, PROGRAMS)["auroc/size"] < 0.75
    # dy/dx_A = x_B: the mean effect nearly cancels, the root mean square does not.
    linked = c.links[:, 0]
    assert np.abs(inter.effects[linked, 0]).mean() < 0.5 * inter.scores[linked, 0].mean()


def test_module_intervention_gives_each_gene_its_module_effect(drivers) -> None:
    synth = Synthesizer(Oracle(oracle_weights(drivers)), BACKGROUNDS)
    est = run(inputs(drivers, synth), ["synthesis-intervention-module"], SMALL)["synthesis-intervention-module"]
    labels = est.extras["labels"]
    for m in np.unique(labels):
        assert np.ptp(est.scores[labels == m], axis=0).max() == 0
    assert est.scores[:, 0].max() > 0


def test_regressors_find_drivers_and_direct_classical_are_model_free(drivers) -> None:
    maps = run(inputs(drivers), ["direct", "classical", "classical-k8", "regressor-lasso", "regressor-kernel",
                                 "synthesis-intervention"], SMALL)
    assert "synthesis-intervention" not in maps  # no generator given
    m = {k: link_metrics(v, drivers.links, PROGRAMS) for k, v in maps.items()}
    assert m["regressor-lasso"]["auprc/size"] > 0.9 and m["regressor-lasso"]["auroc/pooled"] > 0.95
    assert m["regressor-kernel"]["auroc/pooled"] > 0.9
    assert maps["classical"].note.startswith("k = ") and maps["classical-k8"].extras["labels"].max() == 7
    for name in ("direct", "classical", "regressor-lasso"):
        assert set(maps[name].calls) == {0.05, 0.1}


def test_classical_recovers_aligned_modules_with_gene_level_calls() -> None:
    c = cohort("aligned", 160, 160, genes=80)
    est = run(MapInputs(c.x, c.y, c.names, seed=0), ["classical"], SMALL)["classical"]
    m = link_metrics(est, c.links, PROGRAMS)
    assert m["auroc/pooled"] > 0.95 and m["power/q0.05"] > 0.5 and m["fdp/q0.05"] <= 0.15


def test_an_undefined_map_has_no_numbers() -> None:
    c = cohort("drivers", 60, 40)

    class Nothing(Oracle):
        def forward(self, background, genes, noise=None):
            out = super().forward(background, genes)
            return SimpleNamespace(image=background, mask=out.mask * 0, weight=None, code=out.code)

    synth = Synthesizer(Nothing(np.zeros((c.x.shape[1], 4))), BACKGROUNDS)
    est = run(inputs(c, synth), ["synthesis-correlation"], SMALL)["synthesis-correlation"]
    assert est.undefined.startswith("undefined: 100% of the synthetic masks are empty")
    metrics = link_metrics(est, c.links, PROGRAMS)
    assert all(np.isnan(v) for k, v in metrics.items() if not k.startswith("prevalence"))


def test_link_metrics_by_hand() -> None:
    links = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=bool)
    scores = np.array([[0.9, 0.1], [0.2, 0.2], [0.5, 0.3], [0.1, 0.4]])
    calls = {0.05: np.array([[1, 0], [0, 0], [1, 0], [0, 1]], dtype=bool)}
    m = link_metrics(MapEstimate("x", scores, calls=calls), links, ("a", "b"))
    assert m["auroc/a"] == pytest.approx(0.75) and m["auprc/a"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["prevalence/a"] == 0.5 and np.isnan(m["auroc/b"]) and np.isnan(m["auprc/b"])
    assert m["fdp/q0.05"] == pytest.approx(2 / 3) and m["power/q0.05"] == 0.5 and m["calls/q0.05"] == 3
    null = link_metrics(MapEstimate("x", scores, pvalues=np.full((4, 2), 0.5)), np.zeros((4, 2), bool), ("a", "b"))
    assert null["fwer/q0.05"] == 0.0 and np.isnan(null["auroc/pooled"]) and "ks_p" in null


def test_gradient_split_follows_phi() -> None:
    from radiogen.models import build_generator

    from .helpers import tiny

    torch.manual_seed(0)
    G = build_generator(tiny(data={"n_genes": 30}))
    with torch.no_grad():
        G.mapping.net[0].weight[:, 5] = 0  # phi never reads gene 5
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 30)), rng.standard_normal((20, 4))
    est = run(MapInputs(x, y, [f"g{i}" for i in range(30)], synthesizer=Synthesizer(G, BACKGROUNDS)),
              ["synthesis-gradient"], SMALL)["synthesis-gradient"]
    assert est.extras["gene_to_code"].shape == (16, 30) and est.extras["code_to_phenotype"].shape == (4, 16)
    assert np.all(est.extras["gene_to_code"][:, 5] == 0) and np.all(est.scores[5] == 0)
    assert est.extras["gene_to_code"][:, 4].max() > 0 and np.isfinite(est.scores).all() and est.scores.max() > 0


def test_phi_group_lasso_is_a_loss_term_only_when_on() -> None:
    from radiogen.losses import group_lasso
    from radiogen.train_step import build_training, train_step

    from .helpers import random_batch, tiny

    w = torch.tensor([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]], requires_grad=True)
    assert group_lasso(w).item() == pytest.approx(5.0 + 0.0 + 1.0, abs=1e-5)
    group_lasso(w).backward()
    assert torch.isfinite(w.grad).all() and torch.all(w.grad[:, 1] == 0)  # an unused gene: zero, not NaN
    for arch in ("proposed", "mcgan"):
        for weight in (0.0, 0.5):
            cfg = tiny(loss={"phi_group_lasso": weight}, generator={"arch": arch})
            torch.manual_seed(0)
            terms = train_step(build_training(cfg, torch.device("cpu")), random_batch(cfg))
            assert ("loss/G/phi_group_lasso" in terms) == (weight > 0), (arch, weight)
