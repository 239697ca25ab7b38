"""Conditioning (docs/design.md §5): does a synthetic nodule's phenotype follow the gene source it was made from?

Genes of each subject are swapped over fixed backgrounds; the synthetic nodules' features (averaged
over the backgrounds) are matched against every subject's real nodule features. If the generator
reads the genes, subject i's synthetic features lie closest to subject i's real ones.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def _topk_hits(dist: np.ndarray, own: np.ndarray, ks: tuple[int, ...]) -> np.ndarray:
    """(len(ks),) fraction of rows i whose column own[i] is among the k nearest columns.

    Ties count against the match: rank = #{other columns at distance <= the own one}, so a
    conditioner that collapses everything to one point scores chance, not perfect.
    """
    d_own = dist[np.arange(len(dist)), own]
    rank = (dist <= d_own[:, None]).sum(axis=1) - 1
    return np.array([(rank < k).mean() for k in ks])


def retrieval(synthetic: np.ndarray, real: np.ndarray, *, ks: tuple[int, ...] = (1, 5), n_perm: int = 1000,
              seed: int = 0) -> dict[str, float]:
    """Top-k retrieval of each subject's real features from its synthetic features, with a permutation test.

    synthetic, real: (S, F), row i = subject i, already normalised (e.g. realism.normalise_on on
    the real rows) and free of NaN. Distance is Euclidean. top{k}: fraction of subjects whose own
    real row is among the k real rows nearest to their synthetic row; chance_top{k} = min(k, S) / S;
    p_top{k} = (1 + #{permuted pairings with accuracy >= observed}) / (1 + n_perm), the pairing
    shuffled jointly for all k.
    """
    synthetic = np.asarray(synthetic, dtype=np.float64)
    real = np.asarray(real, dtype=np.float64)
    if synthetic.ndim != 2 or synthetic.shape != real.shape:
        raise ValueError(f"synthetic and real must be (S, F) of one shape, got {synthetic.shape} and {real.shape}")
    if not (np.isfinite(synthetic).all() and np.isfinite(real).all()):
        raise ValueError("synthetic/real hold NaN or inf: drop those subjects first")
    s = len(real)
    if s < 2:
        raise ValueError(f"need at least 2 subjects, got {s}")
    ks = tuple(int(k) for k in ks)
    dist = cdist(synthetic, real)
    observed = _topk_hits(dist, np.arange(s), ks)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(len(ks))
    for _ in range(n_perm):
        exceed += _topk_hits(dist, rng.permutation(s), ks) >= observed - 1e-12
    out: dict[str, float] = {}
    for j, k in enumerate(ks):
        out[f"top{k}"] = float(observed[j])
        out[f"chance_top{k}"] = min(k, s) / s
        out[f"p_top{k}"] = float((1 + exceed[j]) / (1 + n_perm))
    out["n_subjects"] = s
    return out
