"""`synthesis-correlation`: |Spearman rho| of each gene with each program's phenotype of the subjects' synthetic
nodules (every subject's genes over the same fixed backgrounds). Kept for comparison with the earlier learned
score: for a perfect generator it equals the per-gene correlation with the real phenotype up to a factor
per program (Cov(x_g, E[y | x]) = Cov(x_g, y)), so it uses neither phi nor the code and cannot beat `direct`.
No p-values.
"""

from __future__ import annotations

import numpy as np

from ..radiomap import spearman_matrix
from .base import MapEstimate, MapInputs, undefined_reason


def estimate(inputs: MapInputs) -> MapEstimate:
    synth = inputs.synthesizer
    if synth is None:
        raise ValueError("synthesis-correlation needs a generator (MapInputs.synthesizer)")
    phenotype = synth.phenotype_np(inputs.genes)                                  # (N, P)
    rho = np.nan_to_num(spearman_matrix(inputs.genes, phenotype))                 # constant: no association
    return MapEstimate("synthesis-correlation", np.abs(rho), effects=rho,
                       undefined=undefined_reason(synth, inputs.genes), note="no p-values (a marginal statistic)")
