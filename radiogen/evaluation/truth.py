"""Measurements against the synthetic cohort's known programs (truth_table.Truth): does a generator's gene swap
follow the programs (program response), and how well does a code linearly encode them (probe R^2)? The
gene x program maps are scored by link_metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage import measure

from radiogen.evaluation.codes import linear_probe
from radiogen.evaluation.phenotype import EMPTY_PIXELS
from radiogen.evaluation.radiomap import spearman_matrix
from radiogen.metrics import high_frequency_rms

MEASURES = ("area", "intensity", "isoperimetric", "high_freq")
"""The plain (non-differentiable) nodule measurements of `nodule_measures`, in column order."""
RESPONSE = {"size": "area", "density": "intensity", "irregularity": "isoperimetric", "texture": "high_freq"}
"""Program -> the measurement that shows it on real nodules of the synthetic cohort. Shape and texture were picked
among candidates by their rank correlation with the programs on the real nodules of training subjects (81 subjects
at 32 px): the isoperimetric ratio (0.41) over 1 - solidity (0.39) and the soft proxy (0.30); the high-frequency RMS
(0.20) over the 3x3 local RMS (0.19) and GLCM contrast (0.10). At 32 px (1.9 mm pixels) the cohort's texture
(correlation length 0.8-1.6 mm) is mostly averaged away, so its real ceiling is low: the report prints it."""
DECOY = "texture"
"""The program that drives neither area nor intensity: their |rho| with it is a spurious gene effect (~0 on real
nodules)."""
SMOOTH_SIGMA = 1.0
"""Gaussian sigma (pixels) whose residual is the high-frequency part of a nodule (metrics.high_frequency_rms)."""


def _isoperimetric(mask: np.ndarray) -> float:
    props = measure.regionprops(mask.astype(np.uint8))[0]
    return float(props.perimeter_crofton ** 2 / (4 * np.pi * props.area))


def nodule_measures(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(..., 4) measurements (MEASURES order) of (..., H, W) nodule slices, the mask binarised at 0.5:
    area (pixels), mean intensity inside, isoperimetric ratio P^2 / (4 pi A) with the Crofton perimeter (about 1
    for a disc, larger for a lobulated or spiculated boundary: the inverse of 2-D sphericity), and the RMS of the
    image minus its Gaussian-smoothed self inside the eroded mask (internal high-frequency texture). Area is 0 and
    the rest NaN for a mask of fewer than EMPTY_PIXELS pixels."""
    images, masks = np.asarray(images, dtype=np.float64), np.asarray(masks) >= 0.5
    lead, (H, W) = images.shape[:-2], images.shape[-2:]
    flat_x, flat_m = images.reshape(-1, H, W), masks.reshape(-1, H, W)
    out = np.full((len(flat_x), len(MEASURES)), np.nan)
    out[:, 0] = flat_m.sum(axis=(1, 2))
    hf = high_frequency_rms(flat_x, flat_m, SMOOTH_SIGMA)
    for i, (x, m) in enumerate(zip(flat_x, flat_m)):
        if out[i, 0] >= EMPTY_PIXELS:
            out[i, 1:] = x[m].mean(), _isoperimetric(m), hf[i]
    return out.reshape(*lead, len(MEASURES))


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    if np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return 0.0  # a measurement constant across subjects follows no program
    return float(spearman_matrix(x[ok, None], y[ok, None])[0, 0])


def program_response(measures: np.ndarray, programs: np.ndarray, program_names: Sequence[str]) -> dict[str, float]:
    """Do the subjects' nodules follow their programs? measures: (S, k) per-subject measurements, the first k
    columns of MEASURES (`nodule_measures`, averaged over a subject's slices or gene-swap
    backgrounds); programs: (S, P).

    response/<program>: Spearman rho of the program's measurement (RESPONSE) with the program, for every
    program whose measurement is among the k columns; response/decoy: max |rho| of area and intensity with the
    DECOY program (should be ~0).
    """
    names = list(program_names)
    measures = np.asarray(measures, dtype=np.float64)
    programs = np.asarray(programs, dtype=np.float64)
    col = {m: measures[:, j] for j, m in enumerate(MEASURES[:measures.shape[1]])}
    out = {f"response/{p}": _rho(col[m], programs[:, names.index(p)]) for p, m in RESPONSE.items() if m in col}
    decoy = programs[:, names.index(DECOY)]
    out["response/decoy"] = float(np.nanmax([abs(_rho(col[m], decoy)) for m in ("area", "intensity")]))
    return out


def program_probe(x: np.ndarray, programs: np.ndarray, program_names: Sequence[str],
                  **probe_kwargs) -> dict[str, float]:
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
