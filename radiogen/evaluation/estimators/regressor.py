"""`regressor`: the control that answers "is a GAN needed?" - genes -> real phenotype without a generator.

- `regressor-lasso`: a sparse linear model per program (scikit-learn LassoCV on standardised genes, 5-fold CV
  over the penalty). Among co-expressed genes it keeps the one that carries the signal, so it should find
  drivers among passengers.
- `regressor-kernel`: kernel ridge regression with an RBF kernel (penalty and width by 5-fold grid search),
  nonlinear, for the interaction program.

Both are read exactly as `synthesis-intervention` reads the generator: +1 SD of one gene for every training
subject, the change of the predicted phenotype in real-phenotype SDs (score: root mean square over subjects;
effect: mean), and calibrated by the same holdout randomisation test on the held-out subjects.
"""

from __future__ import annotations

import numpy as np
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LassoCV
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .base import MapEstimate, MapInputs
from .holdout import hrt_pvalues
from .intervention import effects_of_shifts, summarise

KINDS = ("lasso", "kernel")


def fit(genes: np.ndarray, phenotype: np.ndarray, kind: str, seed: int = 0):
    """A predict function genes (B, G) -> (B, P) fitted on (genes, phenotype)."""
    folds = KFold(n_splits=max(2, min(5, len(genes) // 2)), shuffle=True, random_state=seed)  # >= 2 per fold
    if kind == "lasso":
        models = [make_pipeline(StandardScaler(), LassoCV(cv=folds, alphas=30, max_iter=5000, random_state=seed))
                  .fit(genes, phenotype[:, p]) for p in range(phenotype.shape[1])]
        return lambda x: np.stack([m.predict(x) for m in models], axis=1)
    if kind == "kernel":
        width = 1.0 / genes.shape[1]  # RBF gamma in units of 1 / G: standardised genes are ~G apart squared
        grid = {"kernelridge__alpha": [0.1, 1.0, 10.0], "kernelridge__gamma": [0.1 * width, width, 10 * width]}
        model = GridSearchCV(make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")), grid, cv=folds,
                             scoring="neg_mean_squared_error")  # defined on folds of any size, unlike R^2
        model.fit(genes, phenotype)
        return lambda x: np.asarray(model.predict(x)).reshape(len(x), -1)
    raise ValueError(f"regressor kind must be one of {KINDS}, got {kind!r}")


def estimate(inputs: MapInputs, *, kind: str = "lasso", hrt_top: int = 16, hrt_resamples: int = 20) -> MapEstimate:
    predict = fit(inputs.genes, inputs.phenotype, kind, inputs.seed)
    delta = effects_of_shifts(predict, inputs.genes, np.diag(inputs.gene_sd()), inputs.phenotype_sd())
    scores, effects = summarise(delta)
    pvalues, note = None, "no held-out subjects: no p-values"
    if inputs.has_holdout:
        pvalues = hrt_pvalues(predict, (inputs.genes, inputs.phenotype),
                              (inputs.heldout_genes, inputs.heldout_phenotype), scores, top=hrt_top,
                              resamples=hrt_resamples, seed=inputs.seed)
        note = f"HRT p ({hrt_resamples} redraws, top {hrt_top} genes per program), BH over the map"
    return MapEstimate(f"regressor-{kind}", scores, effects=effects, pvalues=pvalues, note=note)
