"""Calibration of the model-based estimators: the holdout randomisation test (HRT; Tansey et al. 2022, JCGS).

The model (a generator's genes -> synthetic phenotype map, or a regressor) is fitted on the training subjects.
On held-out subjects, for gene j, the statistic is the model's prediction loss of the real phenotype; its null
distribution comes from redrawing x_j from its conditional distribution given the other genes, x_j ~ P(x_j |
x_-j), and recomputing the loss. Under H0_j (the phenotype is independent of x_j given the other genes) the
observed loss is exchangeable with the redrawn ones, whatever the model: this is the hypothesis the truth of
the `drivers` design is about (a passenger is independent of the program given the drivers, so it is a null,
while a per-gene correlation calls it).

Why HRT and not the alternatives: model-X knockoffs need the model trained on the genes and their knockoffs
(a second GAN training per map, on 2G inputs), and retrainings on shuffled gene-image pairings give the global
null (no gene matters) rather than each gene's conditional one, and need tens of trainings before a p-value
can pass BH over hundreds of genes. HRT reuses the trained model and costs forward passes only.

Choices:
- P(x_j | x_-j): Gaussian, from a Ledoit-Wolf covariance of the genes of all subjects (no phenotype used).
  An inexact conditional is the test's known weak point. On the cohort's genes it errs on the safe side:
  under the null 2% of p-values fell below 0.05 (a per-gene ridge conditional gave the same, 17x slower);
  the benchmark measures the achieved FDP.
- The loss: mean squared error per program after a linear calibration (y ~ a f(x) + b fitted on the training
  subjects), so a generator's proxies need not share the real phenotype's scale.
- R redraws per gene; p from a normal approximation of the null, Student t with R - 1 degrees of freedom on
  the standardised gap (the predictive interval of one more draw), so p-values are continuous and BH over
  hundreds of genes can call. A gene the model ignores gets p = 1.
- Only the cells (gene, program) the estimator ranks in its top `top` on the training subjects are tested; the
  others get NaN (never called: BH counts them as p = 1). The selection uses training data only and the test
  held-out data only (sample splitting), so the tested p-values stay valid and BH over all G genes stays
  conservative.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats
from sklearn.covariance import LedoitWolf


class GaussianConditional:
    """x_j | x_-j for a Gaussian fitted to `genes` (N, G): mean mu_j - sum_k Theta_jk / Theta_jj (x_k - mu_k),
    variance 1 / Theta_jj, Theta the inverse of the Ledoit-Wolf covariance."""

    def __init__(self, genes: np.ndarray):
        self.mean = genes.mean(axis=0)
        self.precision = np.linalg.inv(LedoitWolf().fit(genes).covariance_)

    def draw(self, x: np.ndarray, j: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n * M, G): the M rows of x repeated n times, gene j redrawn from its conditional in each."""
        theta = self.precision[j]
        centred = x - self.mean
        mu = self.mean[j] - (centred @ theta - theta[j] * centred[:, j]) / theta[j]
        out = np.tile(x, (n, 1))
        out[:, j] = np.tile(mu, n) + rng.standard_normal(n * len(x)) / np.sqrt(theta[j])
        return out


def hrt_pvalues(predict: Callable[[np.ndarray], np.ndarray], train: tuple[np.ndarray, np.ndarray],
                test: tuple[np.ndarray, np.ndarray], scores: np.ndarray, *, top: int = 48, resamples: int = 20,
                seed: int = 0) -> np.ndarray:
    """(G, P) HRT p-values of the cells among each program's `top` scores (the rest NaN: not tested).

    predict: genes (B, G) -> (B, P) the model's phenotype; train/test: (genes, real phenotype) of the
    training subjects (calibration, selection) and of the held-out subjects (the test).
    """
    (x_train, y_train), (x_test, y_test) = train, test
    G, P = scores.shape
    f_train = predict(x_train)
    a = np.zeros(P)
    b = y_train.mean(axis=0)
    for p in range(P):  # y ~ a f + b on the training subjects (a = 0 for a constant prediction)
        # A model that predicts a constant (a lasso that kept no gene) does so only up to its float32 rounding:
        # a spread below float32's resolution is no signal to calibrate against.
        f = f_train[:, p].astype(np.float64)
        if np.ptp(f) > 1e-6 * (1 + np.abs(f).max()):
            fit = stats.linregress(f, y_train[:, p])
            a[p], b[p] = fit.slope, fit.intercept
    scale = np.where(y_train.std(axis=0) > 1e-12, y_train.std(axis=0), 1.0)

    def loss(f: np.ndarray) -> np.ndarray:  # (..., M, P) predictions -> (..., P) mean squared error
        return (((a * f + b - y_test) / scale) ** 2).mean(axis=-2)

    observed = loss(predict(x_test))
    conditional = GaussianConditional(np.concatenate([x_train, x_test]))
    rng = np.random.default_rng(seed)
    k = min(top, G)
    selected = np.zeros((G, P), dtype=bool)
    for p in range(P):
        selected[np.argsort(-scores[:, p], kind="stable")[:k], p] = True
    pvalues = np.full((G, P), np.nan)
    for j in np.flatnonzero(selected.any(axis=1)):
        redrawn = conditional.draw(x_test, j, resamples, rng)
        null = loss(predict(redrawn).reshape(resamples, len(x_test), P))             # (R, P)
        sd = null.std(axis=0, ddof=1) * np.sqrt(1 + 1 / resamples)
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = (observed - null.mean(axis=0)) / sd
        p_j = np.where(sd > 1e-12 * (1 + np.abs(observed)), stats.t.cdf(gap, df=resamples - 1), 1.0)
        pvalues[j] = np.where(selected[j], p_j, np.nan)
    return pvalues
