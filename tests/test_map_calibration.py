"""Calibration of the map estimators' p-values: on the `null` design p-values are uniform (the permutation test)
or not anti-conservative (the holdout randomisation test) and the family-wise error stays at the nominal level;
on `drivers` the holdout randomisation test keeps the achieved false discovery proportion at the nominal level
while the per-gene screen, which tests association and not cause, does not."""

from __future__ import annotations

import numpy as np
from scipy import stats

from radiogen.evaluation.estimators import Budget, MapInputs, run
from radiogen.evaluation.estimators.holdout import hrt_pvalues
from radiogen.evaluation.link_metrics import link_metrics

from .test_map_estimators import PROGRAMS, cohort, one_thread  # noqa: F401 - the fixture applies here too

BUDGET = Budget(n_perm=100, hrt_top=16, hrt_resamples=20)


def test_permutation_p_values_are_uniform_and_the_family_wise_error_nominal_on_null() -> None:
    p_values, errors = [], 0
    for rep in range(20):
        c = cohort("null", 60, 60, genes=100, seed=300 + rep, noise=0.0)
        est = run(MapInputs(c.x, c.y, c.names, seed=rep), ["direct"], BUDGET)["direct"]
        p_values.append(est.pvalues.ravel())
        errors += link_metrics(est, c.links, PROGRAMS)["fwer/q0.05"]
    p = np.concatenate(p_values)
    assert stats.kstest(p, "uniform").pvalue > 0.001
    assert abs(np.mean(p < 0.05) - 0.05) < 0.015 and abs(np.mean(p < 0.2) - 0.2) < 0.03
    assert errors <= 3  # 20 repetitions at FWER 0.05: P(more than 3) < 0.02


def test_holdout_randomisation_test_is_not_anticonservative_on_null() -> None:
    p_values, errors = [], 0
    for rep in range(8):
        c = cohort("null", 160, 80, genes=100, seed=400 + rep, noise=0.0)
        beta = np.random.default_rng(rep).normal(0, 0.2, (c.x.shape[1], 4))  # any fixed model is a valid test
        p = hrt_pvalues(lambda g: g @ beta, (c.x[:80], c.y[:80]), (c.x[80:], c.y[80:]), np.ones(beta.shape),
                        top=20, resamples=20, seed=rep)
        p_values.append(p[np.isfinite(p)])
        lasso = run(MapInputs(c.x[:80], c.y[:80], c.names, c.x[80:], c.y[80:], seed=rep), ["regressor-lasso"],
                    BUDGET)["regressor-lasso"]
        errors += link_metrics(lasso, c.links, PROGRAMS)["fwer/q0.05"]
    p = np.concatenate(p_values)
    assert len(p) == 8 * 20 * 4 and np.all((p > 0) & (p <= 1))
    assert np.mean(p < 0.05) <= 0.06 and np.mean(p < 0.1) <= 0.11
    assert errors <= 1


def test_holdout_randomisation_test_controls_fdp_on_drivers_where_the_screen_calls_passengers() -> None:
    fdp, power, screen_fdp = [], [], []
    for rep in range(3):
        c = cohort("drivers", 400, 200, genes=100, seed=500 + rep, noise=0.1)
        t = c.n_train
        maps = run(MapInputs(c.x[:t], c.y[:t], c.names, c.x[t:], c.y[t:], seed=rep), ["direct", "regressor-lasso"],
                   BUDGET)
        m = link_metrics(maps["regressor-lasso"], c.links, PROGRAMS)
        fdp.append(m["fdp/q0.1"])
        power.append(m["power/q0.1"])
        screen_fdp.append(link_metrics(maps["direct"], c.links, PROGRAMS)["fdp/q0.1"])
    assert np.mean(fdp) <= 0.1 + 0.1 and np.mean(power) > 0.5
    assert np.mean(screen_fdp) > 0.3


def test_holdout_randomisation_test_of_a_constant_float32_model_calls_nothing() -> None:
    """A model that predicts one value for everyone (a lasso that kept no gene), in float32 as the estimators'
    genes are: its rounding spread is no signal, so the test neither crashes nor calls a gene."""
    rng = np.random.default_rng(0)
    genes = rng.standard_normal((40, 12)).astype(np.float32)
    phenotype = rng.standard_normal((40, 2))
    constant = lambda x: np.full((len(x), 2), np.float32(0.05015908), dtype=np.float32)  # noqa: E731
    scores = rng.random((12, 2))
    p = hrt_pvalues(constant, (genes[:30], phenotype[:30]), (genes[30:], phenotype[30:]), scores, top=4,
                    resamples=5)
    tested = p[np.isfinite(p)]
    assert tested.size == 8 and np.all(tested == 1.0)  # a gene the model ignores gets p = 1
