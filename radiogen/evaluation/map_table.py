"""The estimators table of `radiogen eval`: every radiogenomic map estimator, fitted on the training subjects.

Each estimator (radiogen.evaluation.estimators) sees the same inputs: the training subjects' genes, normalised
as the evaluated model reads them, and their real phenotype proxies; the held-out subjects serve only the
calibration of the model-based ones (holdout randomisation test). The generator's estimators run once per
evaluated model (proposed, baseline) over the first `backgrounds` fixed backgrounds. With known links each map
is scored by link_metrics; without, the table still gives each map's calls. A map read off (nearly) empty
synthetic masks is undefined, with its reason, and gets no numbers.

Metrics: eval/train/<who>/links/<estimator>/<metric> (metric as link_metrics names it), who = "data" for the
maps that use no generator, else the model's label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from radiogen.genes import apply_gene_stats

from .estimators import ESTIMATORS, GENERATOR_ESTIMATORS, LEVELS, Budget, MapInputs, Synthesizer, run
from .link_metrics import link_metrics
from .phenotype import PROGRAMS
from .report import metric_name

MIN_SUBJECTS = 3
DATA = "data"  # the `who` of the maps without a generator


@dataclass
class TableRow:
    who: str
    estimator: str
    metrics: dict[str, float]
    undefined: str | None
    note: str


def estimators_table(*, genes_raw: np.ndarray, gene_names: list[str], phenotype: np.ndarray, train: np.ndarray,
                     heldout: np.ndarray, models: Sequence, links: np.ndarray | None, backgrounds: np.ndarray,
                     names: Sequence[str] = tuple(ESTIMATORS), budget: Budget = Budget(), seed: int = 0,
                     device: torch.device | str = "cpu", log: Callable[[str], None] = print
                     ) -> tuple[dict[str, float], list[TableRow]]:
    """Fit each named estimator; returns flat metrics and one TableRow per (who, estimator).

    genes_raw (S, G) and phenotype (S, P) of every subject; train / heldout index them; models: pipeline.Model
    (label, G, stats); links (G, P) or None; backgrounds (K, H, W) the generator estimators draw over.
    """
    if len(train) < MIN_SUBJECTS:
        log(f"estimators: {len(train)} training subjects, fewer than {MIN_SUBJECTS}: no map")
        return {}, []
    held = heldout if len(heldout) >= MIN_SUBJECTS else None
    rows: list[TableRow] = []

    def inputs(genes: np.ndarray, synth: Synthesizer | None) -> MapInputs:
        return MapInputs(genes[train], phenotype[train], list(gene_names),
                         None if held is None else genes[held], None if held is None else phenotype[held], synth,
                         seed)

    free = [n for n in names if n not in GENERATOR_ESTIMATORS]
    generator = [n for n in names if n in GENERATOR_ESTIMATORS]
    groups = [(DATA, run(inputs(apply_gene_stats(models[0].stats, genes_raw), None), free, budget))]
    bg = torch.as_tensor(np.asarray(backgrounds), dtype=torch.float32)[:, None]
    for m in models:
        synth = Synthesizer(m.G, bg, seed, str(device))
        groups.append((m.label, run(inputs(apply_gene_stats(m.stats, genes_raw), synth), generator, budget)))
    metrics: dict[str, float] = {}
    for who, maps in groups:
        for name, est in maps.items():
            values = link_metrics(est, links, PROGRAMS) if links is not None else _calls_only(est)
            rows.append(TableRow(who, name, values, est.undefined, est.note))
            metrics |= {metric_name("train", who, "links", name, k): v for k, v in values.items()}
    log(f"estimators: {len(rows)} maps ({', '.join(free + generator)}) on {len(train)} training subjects"
        + (f", calibrated on {len(held)} held-out" if held is not None else ", no held-out subjects: no HRT"))
    return metrics, rows


def _calls_only(est) -> dict[str, float]:
    """Without known links: how many cells each level calls (NaN for an undefined map)."""
    if est.calls is None:
        return {}
    return {f"calls/q{q:g}": float(est.calls[q].sum()) if est.undefined is None else float("nan") for q in LEVELS}
