"""`synthesis-intervention`: the generator's own map, read by intervening on its input.

Shift gene g by +1 SD (its SD over the training subjects) for every read-out subject, draw the shifted and the
unshifted genes over the same fixed backgrounds and noise, and take the change of each program's phenotype
proxy, in units of the real phenotype's SD: Delta_{s,g,p}. The signed effect is its mean over subjects; the
score is its root mean square, which also sees an effect whose sign depends on the subject (an interaction:
dy/dx_A = x_B averages to 0). `synthesis-intervention-module` shifts one co-expression module at a time along
its first principal axis, by +1 SD of the module score (modules: the classical pipeline's Ward metagenes with
the silhouette k, fitted on the training genes), and each gene gets its module's effect.

Cost: G x S x K images for S read-out subjects and K backgrounds (475 x 16 x 4 = 30k at the tiny size, about
20 s on one CPU core). p-values: the holdout randomisation test of the generator (estimators.holdout) over
fewer backgrounds (its cost is top x P x redraws x held-out subjects x backgrounds images).
"""

from __future__ import annotations

import numpy as np

from ..radiomap import metagenes
from .base import MapEstimate, MapInputs, undefined_reason
from .classical import choose_k
from .holdout import hrt_pvalues

READOUT_SUBJECTS = 16


def effects_of_shifts(predict, x: np.ndarray, shifts: np.ndarray, y_sd: np.ndarray) -> np.ndarray:
    """(A, S, P) phenotype change (in y_sd units) of each of A shift vectors (A, G) added to every row of x (S, G)."""
    base = predict(x)                                                            # (S, P)
    out = np.empty((len(shifts), len(x), base.shape[1]))
    step = max(1, 4096 // len(x))
    for start in range(0, len(shifts), step):
        chunk = shifts[start:start + step]                                       # (a, G)
        moved = (x[None] + chunk[:, None]).reshape(-1, x.shape[1])               # (a * S, G)
        out[start:start + len(chunk)] = (predict(moved).reshape(len(chunk), len(x), -1) - base) / y_sd
    return out


def summarise(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, effects) (A, P) of per-subject effects (A, S, P): root mean square and mean over subjects."""
    return np.sqrt((delta ** 2).mean(axis=1)), delta.mean(axis=1)


def module_shifts(genes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels (G,), shifts (k, G)): each module's +1 SD move along its first principal axis (sign: the axis
    that raises the module's mean expression)."""
    labels, _ = metagenes(genes, k)
    centred = genes - genes.mean(axis=0)
    shifts = np.zeros((k, genes.shape[1]))
    for m in range(k):
        members = np.flatnonzero(labels == m)
        _, s, vt = np.linalg.svd(centred[:, members], full_matrices=False)
        axis = vt[0] * (1.0 if vt[0].sum() >= 0 else -1.0)
        shifts[m, members] = axis * s[0] / np.sqrt(len(genes))                  # +1 SD of the module score
    return labels, shifts


def estimate(inputs: MapInputs, *, module: bool = False, readout: int = READOUT_SUBJECTS, hrt_top: int = 16,
             hrt_resamples: int = 20, hrt_backgrounds: int = 2) -> MapEstimate:
    synth = inputs.synthesizer
    if synth is None:
        raise ValueError("synthesis-intervention needs a generator (MapInputs.synthesizer)")
    x = inputs.genes[inputs.readout(readout)]
    y_sd = inputs.phenotype_sd()
    extras: dict[str, np.ndarray] = {}
    if module:
        labels, shifts = module_shifts(inputs.genes, choose_k(inputs.genes))
        scores, effects = (a[labels] for a in summarise(effects_of_shifts(synth.phenotype_np, x, shifts, y_sd)))
        extras["labels"] = labels
    else:
        scores, effects = summarise(effects_of_shifts(synth.phenotype_np, x, np.diag(inputs.gene_sd()), y_sd))
    pvalues, note = None, "no held-out subjects: no p-values"
    if inputs.has_holdout:
        pvalues = hrt_pvalues(synth.first(hrt_backgrounds).phenotype_np, (inputs.genes, inputs.phenotype),
                              (inputs.heldout_genes, inputs.heldout_phenotype), scores, top=hrt_top,
                              resamples=hrt_resamples, seed=inputs.seed)
        note = (f"HRT p ({hrt_resamples} redraws over {min(hrt_backgrounds, synth.K)} backgrounds, top {hrt_top} "
                f"genes per program), BH over the map")
    name = "synthesis-intervention-module" if module else "synthesis-intervention"
    return MapEstimate(name, scores, effects=effects, pvalues=pvalues, undefined=undefined_reason(synth, x),
                       note=f"{len(x)} read-out subjects x {synth.K} backgrounds; {note}", extras=extras)
