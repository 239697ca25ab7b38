"""Gene-expression normalisation (docs/design.md §4): statistics fitted on the training split only.

`raw` uses expression values as given; `log_zscore` takes log2(x + 1) and z-scores every gene with
the training split's mean and standard deviation, then clips the z-scores to +-Z_CLIP so that a
value far outside the training range (a gene nearly constant on few training subjects) cannot
dominate the conditioning vector. The statistics are plain lists so they can live in the dataset
manifest (JSON) and in checkpoints.

Genes that are constant on the training split carry no information there and would blow up under
z-scoring; prep drops them (`constant_genes`) before fitting, lists them in the manifest and says
so. The std floor below only keeps the arithmetic finite if a caller fits such a gene anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

GeneNorm = Literal["raw", "log_zscore"]

STD_FLOOR = 1e-6
"""log_zscore std is floored here (a constant gene then maps to 0 on the training split)."""
CONSTANT_STD = 1e-6
"""A gene whose training-split std (of raw values, or of log2(x + 1) when it has no negative
value) is below this is constant there; see `constant_genes`."""
Z_CLIP = 10.0
"""log_zscore values are clipped to [-Z_CLIP, Z_CLIP] (stored in the statistics as `clip`)."""


@dataclass(frozen=True)
class GeneStats:
    method: GeneNorm
    mean: list[float]
    std: list[float]
    clip: float = Z_CLIP
    """|z| bound of log_zscore (statistics written before it existed get the default)."""

    def to_dict(self) -> dict:
        return {"method": self.method, "mean": list(self.mean), "std": list(self.std), "clip": self.clip}

    @classmethod
    def from_dict(cls, data: dict) -> "GeneStats":
        return cls(method=data["method"], mean=[float(v) for v in data["mean"]], std=[float(v) for v in data["std"]],
                   clip=float(data.get("clip", Z_CLIP)))


def _log(x: np.ndarray) -> np.ndarray:
    if np.any(x < 0):
        raise ValueError("log_zscore expects non-negative expression values (counts/FPKM); "
                         "the table has negative values - it is probably already normalised, use gene_norm=raw")
    return np.log2(x + 1.0)


def constant_genes(train_genes: np.ndarray) -> np.ndarray:
    """(genes,) bool: constant on the training subjects (subjects, genes) for either normalisation:
    std of the raw values < CONSTANT_STD, or, for a gene without negative values, std of
    log2(x + 1) < CONSTANT_STD (what log_zscore divides by). Needs at least 2 subjects."""
    x = np.asarray(train_genes, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need a (subjects, genes) matrix of at least 2 subjects, got shape {x.shape}")
    constant = x.std(0) < CONSTANT_STD
    non_negative = (x >= 0).all(0)
    constant[non_negative] |= np.log2(x[:, non_negative] + 1.0).std(0) < CONSTANT_STD
    return constant


def fit_gene_stats(train_genes: np.ndarray, method: GeneNorm) -> GeneStats:
    """Fit normalisation statistics on the training subjects' genes, shape (subjects, genes)."""
    x = np.asarray(train_genes, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"expected a (subjects, genes) matrix with at least one subject, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("gene matrix has NaN/Inf; drop or filter those genes before fitting statistics")
    n = x.shape[1]
    if method == "raw":
        return GeneStats("raw", [0.0] * n, [1.0] * n)
    if method == "log_zscore":
        lx = _log(x)
        return GeneStats("log_zscore", lx.mean(0).tolist(), np.maximum(lx.std(0), STD_FLOOR).tolist())
    raise ValueError(f"unknown gene normalisation {method!r}; use 'raw' or 'log_zscore'")


def _zscore(stats: GeneStats, genes: np.ndarray) -> np.ndarray:
    x = np.asarray(genes, dtype=np.float64)
    if x.shape[-1] != len(stats.mean):
        raise ValueError(f"gene vector has {x.shape[-1]} genes but the statistics were fitted on {len(stats.mean)}")
    if stats.method == "raw":
        return x
    return (_log(x) - np.asarray(stats.mean)) / np.asarray(stats.std)


def apply_gene_stats(stats: GeneStats, genes: np.ndarray) -> np.ndarray:
    """Normalise genes of shape (..., n_genes) with fitted statistics; returns float32
    (log_zscore clipped to +-stats.clip)."""
    z = _zscore(stats, genes)
    if stats.method != "raw":
        z = np.clip(z, -stats.clip, stats.clip)
    return z.astype(np.float32)


def clipped(stats: GeneStats, genes: np.ndarray) -> np.ndarray:
    """Bool of genes' shape: where `apply_gene_stats` clips (always False for raw)."""
    if stats.method == "raw":
        return np.zeros(np.shape(genes), bool)
    return np.abs(_zscore(stats, genes)) > stats.clip
