"""The radiogenomic map as a validation metric a sweep can optimise: `val/map_objective`, never NaN.

- With a truth file (the links of a synthetic cohort): `val/map_auprc`, the AUPRC of the generator's own
  map (synthesis-intervention: +1 in the genes' normalised units, one training SD under log_zscore, for every
  validation subject over a few fixed backgrounds) against the true links, averaged over the programs that
  have links. It is what the benchmark scores, at validation size: VAL_SUBJECTS subjects x VAL_BACKGROUNDS
  backgrounds x G genes images in batched forward passes (475 genes: about 3.8k images at 32 px, a few
  seconds on one CPU core). A generator that ignores its genes ties every gene and scores the prevalence.
- Without one (real data): `val/map_agreement`, the held-out predictive power of the synthetic phenotype
  for the real one: the mean over programs of Spearman rho, across validation subjects, between the phenotype
  proxies of the nodules G draws from a subject's genes (fixed backgrounds and noise) and of the subject's
  real nodules. A map is right only if the phenotype G draws from unseen subjects' genes ranks them as their
  real nodules do; the truth-based score needs the links, this needs only the subjects. A stability score
  (the same map from two background sets) was not chosen: a generator can be consistently wrong.
The soft proxies (phenotype.proxies) keep both finite when G draws empty masks, and a phenotype constant
across subjects contributes rho 0, so an empty generator scores 0 (agreement) or the prevalence (AUPRC).
With few validation subjects the agreement is noisy (SE of rho about 1 / sqrt(S - 1)).

`val/map_objective` is the AUPRC when the reference has links, else the agreement; both components are
reported under their own names. With the subjects' true programs (a truth file) validation also reports how the
generator's nodules follow them (`program_objectives`: `val/response/*`, `val/program_response`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from .estimators.base import Synthesizer
from .estimators.intervention import effects_of_shifts, summarise
from .phenotype import PROGRAMS
from .radiomap import spearman_matrix
from .synthesis import gene_swap, nanmean
from .truth import nodule_measures, program_response

MIN_SUBJECTS = 3          # a rank correlation over fewer subjects says nothing
VAL_SUBJECTS = 4          # subjects an intervention map is averaged over at validation
VAL_BACKGROUNDS = 2       # backgrounds of the validation map
RESPONSE_BACKGROUNDS = 4  # backgrounds of the validation program response (subjects x 4 images: cheap)


@dataclass
class MapReference:
    """What validation compares the generator's map with."""

    genes: np.ndarray                 # (S, G) validation subjects' genes, normalised as G reads them
    phenotype: np.ndarray             # (S, P) their real nodules' phenotype proxies (per-subject mean)
    links: np.ndarray | None = None   # (G, P) the true links, from a truth file
    programs: np.ndarray | None = None  # (S, P) the subjects' true programs, from a truth file
    real_response: dict[str, float] | None = None  # program_response of their real nodules: the ceiling


def agreement(synth: Synthesizer, genes: np.ndarray, phenotype: np.ndarray) -> float:
    """Mean over programs of Spearman rho between the subjects' synthetic and real phenotype proxies."""
    synthetic = synth.phenotype_np(genes)
    rhos = [0.0 if np.ptp(synthetic[:, j]) < 1e-9 or np.ptp(phenotype[:, j]) < 1e-12 else
            float(spearman_matrix(synthetic[:, [j]], phenotype[:, [j]])[0, 0]) for j in range(phenotype.shape[1])]
    return float(np.mean(rhos))


def intervention_auprc(synth: Synthesizer, genes: np.ndarray, links: np.ndarray) -> float:
    """Mean over programs with links of the AUPRC of the intervention map (root mean square effect)."""
    scores, _ = summarise(effects_of_shifts(synth.phenotype_np, genes, np.eye(genes.shape[1]),
                                            np.ones(links.shape[1])))
    return float(np.mean([average_precision_score(links[:, j], scores[:, j])
                          for j in range(links.shape[1]) if links[:, j].any()]))


def program_objectives(G: torch.nn.Module, backgrounds, reference: MapReference,
                       device: torch.device | str = "cpu", seed: int = 0) -> dict[str, float]:
    """Do G's nodules follow the true programs of the validation (held-out) subjects? Every subject's genes over
    the same RESPONSE_BACKGROUNDS backgrounds (gene swap), the plain measurements averaged per subject, Spearman
    rho with each program (truth.program_response): `val/response/<program>`, `val/response/decoy`, and
    `val/program_response`, the mean of the four programs' rho (0 where a rho is undefined: a generator that
    draws nothing follows nothing); `val/real/response/*`: the same on the subjects' real nodules (the ceiling)."""
    swap = gene_swap(G, torch.as_tensor(backgrounds)[:RESPONSE_BACKGROUNDS], reference.genes, device, seed=seed)
    measures = nanmean(nodule_measures(swap.images, swap.masks), axis=1)
    res = program_response(measures, reference.programs, PROGRAMS)
    out = {f"val/{k}": v for k, v in res.items()}
    out["val/program_response"] = float(np.mean([np.nan_to_num(res[f"response/{p}"]) for p in PROGRAMS]))
    out |= {f"val/real/{k}": v for k, v in (reference.real_response or {}).items()}  # constant: the ceiling
    return out


def map_objective(G: torch.nn.Module, backgrounds, reference: MapReference, device: torch.device | str = "cpu",
                  seed: int = 0) -> dict[str, float]:
    """{"val/map_objective", "val/map_agreement"[, "val/map_auprc"]} of G against the reference."""
    genes, phenotype = np.asarray(reference.genes, dtype=np.float32), np.asarray(reference.phenotype)
    if len(genes) < MIN_SUBJECTS or phenotype.shape[0] != len(genes):
        raise ValueError(f"the map reference needs >= {MIN_SUBJECTS} subjects with genes and phenotype, got "
                         f"{genes.shape} and {phenotype.shape}")
    synth = Synthesizer(G, torch.as_tensor(backgrounds)[:VAL_BACKGROUNDS], seed, str(device))
    out = {"val/map_agreement": agreement(synth, genes, phenotype)}
    if reference.links is not None and np.asarray(reference.links).any():
        out["val/map_auprc"] = intervention_auprc(synth, genes[:VAL_SUBJECTS], np.asarray(reference.links, bool))
    out["val/map_objective"] = out.get("val/map_auprc", out["val/map_agreement"])
    if reference.programs is not None:
        out |= program_objectives(G, backgrounds, reference, device, seed)
    return out
