"""Quality of gene codes (docs/design.md §5): clusters, linear probes, and the raw-gene PCA baseline."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score, silhouette_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def _as_2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N,) or (N, D), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf")
    return a


def cluster_codes(codes: np.ndarray, n_clusters: int, *, seed: int = 0) -> tuple[np.ndarray, float]:
    """KMeans labels (N,) of the codes and their silhouette score (NaN unless 2 <= clusters found < N)."""
    codes = _as_2d(codes, "codes")
    if not 1 <= n_clusters <= len(codes):
        raise ValueError(f"n_clusters must be in [1, N={len(codes)}], got {n_clusters}")
    labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(codes)
    found = len(np.unique(labels))
    score = float(silhouette_score(codes, labels)) if 2 <= found < len(codes) else float("nan")
    return labels, score


def _probe_r2(x: np.ndarray, y: np.ndarray, folds: KFold) -> np.ndarray:
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=y.shape[1] > 1))
    pred = cross_val_predict(model, x, y, cv=folds)
    return np.atleast_1d(r2_score(y, pred.reshape(y.shape), multioutput="raw_values"))


def linear_probe(x: np.ndarray, targets: np.ndarray, *, n_splits: int = 5, n_perm: int = 100,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """How linearly decodable each target column is from x, out of sample, against a permutation null.

    Ridge regression (RidgeCV, alpha chosen per target by efficient leave-one-out inside each
    training fold) on x standardised within the fold; predictions collected out-of-fold over a
    shuffled KFold (n_splits lowered to N when N is smaller) and R^2 computed per target column. The
    null refits with the targets' rows shuffled (same folds): p = (1 + #{null R^2 >= R^2}) /
    (1 + n_perm). Returns {"r2": (T,), "p": (T,), "null_mean": (T,)}; an R^2 at or below 0 means no
    out-of-sample information.
    """
    x = _as_2d(x, "x")
    y = _as_2d(targets, "targets")
    if len(x) != len(y):
        raise ValueError(f"x and targets have different numbers of rows: {len(x)} and {len(y)}")
    splits = min(int(n_splits), len(x))
    if splits < 2:
        raise ValueError(f"need at least 2 rows and n_splits >= 2, got N={len(x)}, n_splits={n_splits}")
    folds = KFold(n_splits=splits, shuffle=True, random_state=seed)
    r2 = _probe_r2(x, y, folds)
    rng = np.random.default_rng(seed)
    null = np.empty((n_perm, len(r2)))
    for i in range(n_perm):
        null[i] = _probe_r2(x, y[rng.permutation(len(y))], folds)
    p = (1 + (null >= r2 - 1e-12).sum(axis=0)) / (1 + n_perm)
    null_mean = null.mean(axis=0) if n_perm else np.full_like(r2, np.nan)
    return {"r2": r2, "p": p, "null_mean": null_mean}


def pca_codes(genes: np.ndarray, n_components: int, *, seed: int = 0) -> np.ndarray:
    """Raw-gene baseline code: the first principal components of the (already normalised) gene matrix
    (N, G), n_components capped at min(N - 1, G)."""
    genes = _as_2d(genes, "genes")
    k = min(int(n_components), len(genes) - 1, genes.shape[1])
    if k < 1:
        raise ValueError(f"no component to fit: N={len(genes)}, G={genes.shape[1]}, n_components={n_components}")
    return PCA(n_components=k, random_state=seed).fit_transform(genes)
