"""Radiogenomic map estimators behind one interface (base.MapInputs -> base.MapEstimate), one module each.

ESTIMATORS maps the name a report or `--estimators` uses to the estimator; `run` fits the chosen ones on the
same inputs with one budget. BASELINES are the maps without a model that every model-based map is compared
with (the benchmark's paired difference is against the better of them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import classical, direct, gradient, intervention, regressor, synthesis_correlation
from .base import LEVELS, MapEstimate, MapInputs, Synthesizer

__all__ = ["ESTIMATORS", "BASELINES", "GENERATOR_ESTIMATORS", "Budget", "MapEstimate", "MapInputs", "Synthesizer",
           "LEVELS", "run"]


@dataclass(frozen=True)
class Budget:
    """The cost knobs every estimator shares."""

    n_perm: int = 200         # subject permutations of direct and classical (pooled null)
    readout: int = 16         # training subjects an intervention or attribution is averaged over
    hrt_top: int = 16         # cells per program the holdout randomisation test checks
    hrt_resamples: int = 20   # conditional redraws per gene in the holdout randomisation test
    hrt_backgrounds: int = 2  # backgrounds a generator draws over in the holdout randomisation test
    ig_steps: int = 16        # integrated-gradients steps


ESTIMATORS: dict[str, Callable[[MapInputs, Budget], MapEstimate]] = {
    "direct": lambda i, b: direct.estimate(i, n_perm=b.n_perm),
    "classical": lambda i, b: classical.estimate(i, n_perm=b.n_perm),
    "classical-k4": lambda i, b: classical.estimate(i, k=4, n_perm=b.n_perm),
    "classical-k8": lambda i, b: classical.estimate(i, k=8, n_perm=b.n_perm),
    "classical-k16": lambda i, b: classical.estimate(i, k=16, n_perm=b.n_perm),
    "regressor-lasso": lambda i, b: regressor.estimate(i, kind="lasso", hrt_top=b.hrt_top,
                                                       hrt_resamples=b.hrt_resamples),
    "regressor-kernel": lambda i, b: regressor.estimate(i, kind="kernel", hrt_top=b.hrt_top,
                                                        hrt_resamples=b.hrt_resamples),
    "synthesis-correlation": lambda i, b: synthesis_correlation.estimate(i),
    "synthesis-intervention": lambda i, b: intervention.estimate(i, readout=b.readout, hrt_top=b.hrt_top,
                                                                 hrt_resamples=b.hrt_resamples,
                                                                 hrt_backgrounds=b.hrt_backgrounds),
    "synthesis-intervention-module": lambda i, b: intervention.estimate(i, module=True, readout=b.readout,
                                                                        hrt_top=b.hrt_top,
                                                                        hrt_resamples=b.hrt_resamples,
                                                                        hrt_backgrounds=b.hrt_backgrounds),
    "synthesis-gradient": lambda i, b: gradient.estimate(i, readout=b.readout, n_steps=b.ig_steps),
}
GENERATOR_ESTIMATORS = tuple(n for n in ESTIMATORS if n.startswith("synthesis-"))
BASELINES = ("direct", "classical")


def run(inputs: MapInputs, names: Sequence[str], budget: Budget = Budget()) -> dict[str, MapEstimate]:
    """Each named estimator fitted on `inputs`; the generator's ones only when inputs has a synthesizer."""
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; choose from {', '.join(ESTIMATORS)}")
    return {n: ESTIMATORS[n](inputs, budget) for n in names
            if inputs.synthesizer is not None or n not in GENERATOR_ESTIMATORS}
