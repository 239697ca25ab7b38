"""`direct`: each gene's Spearman correlation with each program's real phenotype (the per-gene screen).

It answers "which genes co-vary with the phenotype", not "which genes cause it": on the `drivers` design a
driver's co-expressed passengers are true associations and false links. p-values from permuting the subjects
(one permutation for all cells, counted against the pooled null of every cell, radiomap.association_map, so
that a p-value can be small enough for BH over hundreds of genes); calls by BH over all cells of the map.
"""

from __future__ import annotations

import numpy as np

from ..radiomap import association_map
from .base import MapEstimate, MapInputs


def estimate(inputs: MapInputs, *, n_perm: int = 200) -> MapEstimate:
    amap = association_map(inputs.genes, inputs.phenotype, row_names=inputs.gene_names,
                           col_names=[f"p{j}" for j in range(inputs.phenotype.shape[1])], n_perm=n_perm,
                           seed=inputs.seed)
    rho = np.nan_to_num(amap.rho)  # a constant gene: no association
    return MapEstimate("direct", np.abs(rho), effects=rho, pvalues=np.where(np.isfinite(amap.p), amap.p, 1.0),
                       note=f"permutation p ({n_perm} subject permutations, pooled null), BH over the map")
