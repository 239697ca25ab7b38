"""How well a gene x program map recovers known links: ranking, calls and calibration.

- Ranking, per program: AUROC and AUPRC (average precision) of the scores against the true links, with the
  prevalence (the AUPRC of a random ranking) beside it; pooled AUROC over every cell.
- Calls, at each nominal FDR level q (estimators.LEVELS): the achieved false discovery proportion
  (false calls / calls, 0 without calls) and power (true calls / true links), pooled over programs.
- With no true link at all (the `null` design): the family-wise error (1 when anything is called) and the
  uniformity of the tested p-values (Kolmogorov-Smirnov p against U(0, 1)).
A map that is undefined (estimators.base.MapEstimate.undefined) gets NaN everywhere, never a number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from .estimators.base import MapEstimate


def _finite(scores: np.ndarray) -> np.ndarray:
    """A NaN score is no evidence: below every finite one."""
    finite = np.isfinite(scores)
    if finite.all():
        return scores
    return np.where(finite, scores, (scores[finite].min() - 1.0) if finite.any() else 0.0)


def link_metrics(est: MapEstimate, links: np.ndarray, programs: Sequence[str]) -> dict[str, float]:
    """Flat metrics of one map against the (G, P) true links: auroc/<program>, auprc/<program>,
    prevalence/<program>, auroc/pooled, and per level q fdp/q<q>, power/q<q>, calls/q<q> (+ fwer/q<q>, ks_p
    when nothing is linked)."""
    links = np.asarray(links, dtype=bool)
    if est.scores.shape != links.shape:
        raise ValueError(f"the map has {est.scores.shape} cells but the truth {links.shape}")
    nan = float("nan")
    defined = est.undefined is None
    scores = _finite(np.asarray(est.scores, dtype=np.float64))
    out: dict[str, float] = {}
    for j, program in enumerate(programs):
        t = links[:, j]
        out[f"prevalence/{program}"] = float(t.mean())
        both = defined and 0 < t.sum() < len(t)
        out[f"auroc/{program}"] = float(roc_auc_score(t, scores[:, j])) if both else nan
        out[f"auprc/{program}"] = float(average_precision_score(t, scores[:, j])) if both else nan
    pooled = defined and 0 < links.sum() < links.size
    out["auroc/pooled"] = float(roc_auc_score(links.ravel(), scores.ravel())) if pooled else nan
    for q, calls in (est.calls or {}).items():
        calls = np.asarray(calls, dtype=bool)
        n, true = int(calls.sum()), int((calls & links).sum())
        out[f"calls/q{q:g}"] = float(n) if defined else nan
        out[f"fdp/q{q:g}"] = (n - true) / max(n, 1) if defined else nan
        out[f"power/q{q:g}"] = true / links.sum() if defined and links.any() else nan
        if not links.any():
            out[f"fwer/q{q:g}"] = float(n > 0) if defined else nan
    if est.pvalues is not None and not links.any():
        tested = est.pvalues[np.isfinite(est.pvalues)]
        out["ks_p"] = float(stats.kstest(tested, "uniform").pvalue) if defined and len(tested) >= 5 else nan
    return out
