"""Radiogenomic maps (docs/design.md §5): Spearman associations between gene-side variables and nodule
features across subjects, with permutation p-values and Benjamini-Hochberg FDR control; and the
classical three-step pipeline (metagene clustering -> hand-crafted features -> correlation) that the
learned code is compared with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats
from sklearn.cluster import AgglomerativeClustering


@dataclass
class AssociationMap:
    rho: np.ndarray          # (A, F) Spearman rho, row variable x feature
    p: np.ndarray            # (A, F) two-sided permutation p-values (NaN where rho is undefined)
    q: np.ndarray            # (A, F) Benjamini-Hochberg adjusted p over all defined cells
    significant: np.ndarray  # (A, F) bool, q < alpha
    row_names: list[str]
    col_names: list[str]
    alpha: float


def _rank_unit(a: np.ndarray) -> np.ndarray:
    """Columns ranked (ties averaged), centred and scaled to unit norm, so that the Pearson correlation
    of ranks (Spearman rho) of two such columns is their dot product. A constant column becomes NaN."""
    r = stats.rankdata(a, axis=0)
    r -= r.mean(axis=0)
    norm = np.linalg.norm(r, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return r / np.where(norm > 1e-12, norm, np.nan)


def spearman_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(A, F) Spearman rho between every column of x (N, A) and of y (N, F); NaN for constant columns."""
    return _rank_unit(x).T @ _rank_unit(y)


def _complete_rows(x: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    features = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if features.ndim == 1:
        features = features[:, None]
    if x.ndim != 2 or features.ndim != 2 or len(x) != len(features):
        raise ValueError(f"x and features must be (N, A) and (N, F) with the same N, "
                         f"got {x.shape} and {features.shape}")
    ok = np.isfinite(x).all(axis=1) & np.isfinite(features).all(axis=1)
    return x[ok], features[ok]


def _pooled_exceedances(zx: np.ndarray, zf: np.ndarray, observed: np.ndarray, n_perm: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """For each observed |rho| (1-D, finite): #{permuted |rho| of any cell >= it}, and the pool size.

    Exact counting without storing the pool: per permutation, searchsorted places every null value
    among the sorted observed values, and a reverse cumulative sum turns those positions into counts.
    """
    order = np.argsort(observed)
    sorted_obs = observed[order] - 1e-12  # tolerance: a permutation that reproduces rho counts as >=
    hist = np.zeros(len(observed) + 1)
    pool = 0
    for _ in range(n_perm):
        null = np.abs(zx[rng.permutation(len(zx))].T @ zf).ravel()
        null = null[np.isfinite(null)]
        hist += np.bincount(np.searchsorted(sorted_obs, null, side="right"), minlength=len(observed) + 1)
        pool += len(null)
    ge_sorted = np.cumsum(hist[::-1])[::-1][1:]  # ge_sorted[j] = #{null >= sorted_obs[j]}
    counts = np.empty(len(observed))
    counts[order] = ge_sorted
    return counts, pool


def association_map(x: np.ndarray, features: np.ndarray, *, row_names: Sequence[str], col_names: Sequence[str],
                    n_perm: int = 1000, alpha: float = 0.05, seed: int = 0,
                    null: Literal["pooled", "cell"] = "pooled") -> AssociationMap:
    """Spearman rho of every column of x (N, A) with every feature (N, F) across N subjects.

    Subjects with a NaN anywhere in their x or feature row are left out. Each permutation shuffles
    the subjects of x once for all cells (the features' correlation structure is kept). Two-sided
    p-values, q Benjamini-Hochberg over all defined cells (scipy.stats.false_discovery_control);
    a constant column gives NaN rho, p and q there and is never significant.

    null="pooled" (default): p = (1 + #{permuted |rho| of ANY cell >= |rho|}) / (1 + n_perm * cells).
    A per-cell permutation p cannot be smaller than 1 / (1 + n_perm), while BH over A*F cells needs
    p <= alpha / (A*F) for its first discovery, so per-cell p-values make a large map unable to find
    anything. Pooling is exact when no column has ties (every cell's permutation null is then the
    same distribution: it depends on the ranks only); with ties (e.g. cluster indicators) the cells'
    nulls still share mean 0 and variance 1 / (N - 1) and differ only in their tails.
    null="cell": p = (1 + #{|rho_perm| >= |rho|}) / (1 + n_perm) per cell, for small maps.
    """
    if null not in ("pooled", "cell"):
        raise ValueError(f"null must be 'pooled' or 'cell', got {null!r}")
    x, features = _complete_rows(x, features)
    row_names, col_names = [str(n) for n in row_names], [str(n) for n in col_names]
    if len(row_names) != x.shape[1] or len(col_names) != features.shape[1]:
        raise ValueError(f"{len(row_names)} row names for {x.shape[1]} columns of x, "
                         f"{len(col_names)} col names for {features.shape[1]} features")
    if len(x) < 3:
        raise ValueError(f"need at least 3 subjects with complete rows, got {len(x)}")
    zx, zf = _rank_unit(x), _rank_unit(features)
    rho = zx.T @ zf
    defined = np.isfinite(rho)
    rng = np.random.default_rng(seed)
    p = np.full(rho.shape, np.nan)
    if null == "pooled":
        counts, pool = _pooled_exceedances(zx, zf, np.abs(rho[defined]), n_perm, rng)
        p[defined] = (1.0 + counts) / (1.0 + pool)
    else:
        target = np.abs(rho) - 1e-12  # tolerance: a permutation that reproduces rho counts as >=
        exceed = np.zeros(rho.shape)
        for _ in range(n_perm):
            exceed += np.abs(zx[rng.permutation(len(zx))].T @ zf) >= target
        p[defined] = ((1.0 + exceed) / (1.0 + n_perm))[defined]
    q = np.full(rho.shape, np.nan)
    if defined.any():
        q[defined] = stats.false_discovery_control(p[defined], method="bh")
    significant = defined & (np.nan_to_num(q, nan=1.0) < alpha)
    return AssociationMap(rho=rho, p=p, q=q, significant=significant, row_names=row_names,
                          col_names=col_names, alpha=float(alpha))


def _standardise(genes: np.ndarray) -> np.ndarray:
    genes = np.asarray(genes, dtype=np.float64)
    if genes.ndim != 2 or not np.isfinite(genes).all():
        raise ValueError(f"genes must be a finite (N, G) matrix, got shape {genes.shape}"
                         + ("" if genes.ndim != 2 else " with NaN/inf (impute or drop those genes first)"))
    std = genes.std(axis=0)
    return (genes - genes.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)


def metagenes(genes: np.ndarray, n_metagenes: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gene co-expression modules and their expression: (labels (G,) in 0..n_metagenes-1, (N, n_metagenes)).

    Genes are z-scored across subjects and clustered by Ward agglomerative clustering of their
    profiles scaled to unit norm; the squared Euclidean distance between such profiles is 2 (1 - r),
    so this clusters on 1 - Pearson correlation while Ward keeps the modules balanced (average
    linkage on 1 - r tends to leave a few outlier genes as clusters and merge the modules). On the
    synthetic cohort it recovered the planted modules better than KMeans on the same profiles.
    Deterministic: `seed` is accepted for a uniform interface and unused. A metagene's expression is
    the mean z-scored expression of its genes. Memory grows as G^2 (fine for thousands of genes).
    """
    z = _standardise(genes)
    n, g = z.shape
    if not 1 <= n_metagenes <= g:
        raise ValueError(f"n_metagenes must be in [1, G={g}], got {n_metagenes}")
    if n_metagenes == 1:
        labels = np.zeros(g, dtype=int)
    else:
        labels = AgglomerativeClustering(n_clusters=n_metagenes, linkage="ward").fit_predict(z.T / np.sqrt(n))
    # Relabel by first appearance so labels do not depend on sklearn's internal order.
    _, first = np.unique(labels, return_index=True)
    labels = np.argsort(np.argsort(first))[labels]
    expression = np.stack([z[:, labels == k].mean(axis=1) for k in range(n_metagenes)], axis=1)
    return labels, expression


def classical_pipeline(genes: np.ndarray, features: np.ndarray, *, feature_names: Sequence[str], n_metagenes: int = 8,
                       n_perm: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[np.ndarray, AssociationMap]:
    """The classical radiogenomic pipeline: metagenes of the genes (N, G), then their association map
    with the hand-crafted features (N, F). Returns (gene labels (G,), map with rows "metagene_<k>")."""
    labels, expression = metagenes(genes, n_metagenes, seed=seed)
    amap = association_map(expression, features, row_names=[f"metagene_{k}" for k in range(n_metagenes)],
                           col_names=feature_names, n_perm=n_perm, alpha=alpha, seed=seed)
    return labels, amap
