"""Gene-expression normalisation (DESIGN §4): statistics fitted on the training split only.

`raw` uses expression values as given; `log_zscore` takes log2(x + 1) and z-scores every gene with
the training split's mean and standard deviation. The statistics are plain lists so they can live
in the dataset manifest (JSON) and in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

GeneNorm = Literal["raw", "log_zscore"]

# Genes that are (almost) constant on the training split would blow up under z-scoring; their
# std is floored so they map to ~0 instead of +-inf. The floor is reported in the stats.
STD_FLOOR = 1e-6


@dataclass(frozen=True)
class GeneStats:
    method: GeneNorm
    mean: list[float]
    std: list[float]

    def to_dict(self) -> dict:
        return {"method": self.method, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "GeneStats":
        return cls(method=data["method"], mean=[float(v) for v in data["mean"]], std=[float(v) for v in data["std"]])


def _log(x: np.ndarray) -> np.ndarray:
    if np.any(x < 0):
        raise ValueError("log_zscore expects non-negative expression values (counts/FPKM); "
                         "the table has negative values - it is probably already normalised, use gene_norm=raw")
    return np.log2(x + 1.0)


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


def apply_gene_stats(stats: GeneStats, genes: np.ndarray) -> np.ndarray:
    """Normalise genes of shape (..., n_genes) with fitted statistics; returns float32."""
    x = np.asarray(genes, dtype=np.float64)
    if x.shape[-1] != len(stats.mean):
        raise ValueError(f"gene vector has {x.shape[-1]} genes but the statistics were fitted on {len(stats.mean)}")
    if stats.method == "raw":
        return x.astype(np.float32)
    return ((_log(x) - np.asarray(stats.mean)) / np.asarray(stats.std)).astype(np.float32)
