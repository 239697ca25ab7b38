"""Measurements against the synthetic cohort's known programs (truth_table.Truth): does a generator's gene swap
follow the programs (program response), and how well does a code linearly encode them (probe R^2)? The
gene x program maps are scored by link_metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radiogen.evaluation.codes import linear_probe
from radiogen.evaluation.radiomap import spearman_matrix

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
