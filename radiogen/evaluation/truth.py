"""Scoring against the synthetic cohort's known radiogenomic map (data_prep.cohort's truth.json).

truth.json gives each gene's program ("gene_programs": symbol -> program name, null for nuisance
genes) and each subject's program values; a map method is scored by how well its gene x program
scores rank the true links above the rest (AUROC), and a code by how well it linearly encodes the
programs (probe R^2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from radiogen.evaluation.codes import linear_probe
from radiogen.evaluation.radiomap import AssociationMap, spearman_matrix


def true_links(gene_programs: Sequence[str | None], programs: Sequence[str]) -> np.ndarray:
    """(G, P) bool: gene g belongs to program p's module (None = nuisance gene, linked to nothing)."""
    programs = list(programs)
    return np.array([[gp is not None and gp == p for p in programs] for gp in gene_programs], dtype=bool
                    ).reshape(len(gene_programs), len(programs))


def link_auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """AUROC of the flattened scores against the flattened truth; NaN when truth has only one class.

    A NaN score (e.g. a constant gene) is treated as no evidence: it is set below every finite score.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    truth = np.asarray(truth, dtype=bool).ravel()
    if scores.shape != truth.shape:
        raise ValueError(f"scores and truth must have the same number of cells, got {scores.size} and {truth.size}")
    if truth.all() or not truth.any():
        return float("nan")
    finite = np.isfinite(scores)
    if not finite.all():
        floor = scores[finite].min() - 1.0 if finite.any() else 0.0
        scores = np.where(finite, scores, floor)
    return float(roc_auc_score(truth, scores))


def gene_phenotype_scores(genes: np.ndarray, phenotype: np.ndarray) -> np.ndarray:
    """(G, P) |Spearman rho| across subjects between each gene (N, G) and phenotype column (N, P).

    Subjects with a NaN phenotype or gene value are left out; a constant gene gives NaN.
    """
    genes = np.asarray(genes, dtype=np.float64)
    phenotype = np.asarray(phenotype, dtype=np.float64)
    if phenotype.ndim == 1:
        phenotype = phenotype[:, None]
    if genes.ndim != 2 or len(genes) != len(phenotype):
        raise ValueError(f"genes (N, G) and phenotype (N, P) must share N, got {genes.shape} and {phenotype.shape}")
    ok = np.isfinite(genes).all(axis=1) & np.isfinite(phenotype).all(axis=1)
    return np.abs(spearman_matrix(genes[ok], phenotype[ok]))


def metagene_scores(labels: np.ndarray, amap: AssociationMap, phenotype_cols: Sequence[int]) -> np.ndarray:
    """(G, len(phenotype_cols)) gene-level scores of the classical pipeline: each gene inherits |rho| of
    its metagene (row labels[g] of amap) with each phenotype feature column."""
    labels = np.asarray(labels, dtype=int)
    if labels.min() < 0 or labels.max() >= amap.rho.shape[0]:
        raise ValueError(f"labels must index the map's {amap.rho.shape[0]} rows, got range "
                         f"[{labels.min()}, {labels.max()}]")
    return np.abs(amap.rho[np.ix_(labels, list(phenotype_cols))])


RESPONSE = {"size": "area", "density": "intensity"}
"""Program -> the plain nodule measurement it drives in the synthetic cohort: mask area (pixels of mask >= 0.5)
and mean intensity inside the mask (the solid fraction raises it)."""
DECOY = "texture"
"""The program that drives neither measurement (it sets the nodule's internal texture): the real nodules'
area and mean intensity are uncorrelated with it, so a response to it is a spurious gene effect."""


def size_intensity(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(..., 2) mask area in pixels (mask >= 0.5) and mean intensity inside it (NaN for an empty mask) of
    (..., H, W) nodule slices."""
    inside = np.asarray(masks) >= 0.5
    area = inside.sum(axis=(-2, -1)).astype(np.float64)
    total = np.where(inside, np.asarray(images, dtype=np.float64), 0.0).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        intensity = np.where(area > 0, total / np.maximum(area, 1), np.nan)
    return np.stack([area, intensity], axis=-1)


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    if np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return 0.0  # a measurement constant across subjects follows no program
    return float(spearman_matrix(x[ok, None], y[ok, None])[0, 0])


def program_response(measures: np.ndarray, programs: np.ndarray, program_names: Sequence[str]) -> dict[str, float]:
    """Do the subjects' nodules follow their programs? measures: (S, 2) per-subject area and intensity
    (`size_intensity`, averaged over a subject's slices or gene-swap backgrounds); programs: (S, P).

    response/size: Spearman rho of area with the size program; response/density: of intensity with the
    density program; response/decoy: max |rho| of area and intensity with the DECOY program (should be ~0).
    """
    names = list(program_names)
    measures = np.asarray(measures, dtype=np.float64)
    programs = np.asarray(programs, dtype=np.float64)
    col = {"area": measures[:, 0], "intensity": measures[:, 1]}
    out = {f"response/{p}": _rho(col[m], programs[:, names.index(p)]) for p, m in RESPONSE.items()}
    decoy = programs[:, names.index(DECOY)]
    out["response/decoy"] = float(np.nanmax([abs(_rho(v, decoy)) for v in col.values()]))
    return out


def program_probe(x: np.ndarray, programs: np.ndarray, program_names: Sequence[str], **probe_kwargs) -> dict[str, float]:
    """Linear-probe R^2 and permutation p of each program from x (codes.linear_probe):
    {"probe_r2/<program>": R^2, "probe_p/<program>": p}."""
    programs = np.asarray(programs, dtype=np.float64).reshape(len(programs), -1)
    names = list(program_names)
    if programs.shape[1] != len(names):
        raise ValueError(f"{len(names)} program names for {programs.shape[1]} program columns")
    res = linear_probe(x, programs, **probe_kwargs)
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        out[f"probe_r2/{name}"] = float(res["r2"][j])
        out[f"probe_p/{name}"] = float(res["p"][j])
    return out
