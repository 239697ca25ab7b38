"""The evaluation of a trained generator on a prepared dataset (docs/design.md §5), without any tracking.

`evaluate` runs every measurement of the metric library on one model (and optionally the MC-GAN
baseline) for the training subjects and for the held-out subjects (val + test) separately, fits every
radiogenomic map estimator on the training subjects (map_table), draws the paper's figures, and returns
flat metrics named by `report.metric_name`. `ray_jobs/eval.py` loads the models, logs to MLflow and
writes the report; the learnability benchmark calls it too.

Every stage is a function that takes what it measures and returns its metrics: the real nodules are
measured once (`real_nodules`), each model's gene swap once (`synthesise`), and each split's stages
(`synthesis_metrics`, `code_metrics`, `truth_metrics`) read only their arguments, so a stage can be
added without knowing the others. Nodule features are pyradiomics features averaged per subject (real:
over the subject's slices; synthetic: over its gene swap, its genes drawn over the same K fixed
backgrounds and noise as every other subject's). Groups are fitted within a split (PCA, clusters,
metagenes, probes); the map estimators are fitted on the training subjects only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from radiogen.config import ExperimentConfig
from radiogen.genes import GeneStats, apply_gene_stats

from . import eval_figures
from .codes import cluster_codes, linear_probe, pca_codes
from .conditioning import retrieval
from .estimators import ESTIMATORS, Budget
from .estimators.base import Synthesizer
from .eval_data import SPLITS, EvalData, load_data
from .features import PHENOTYPE_FEATURES, radiomic_features, subject_means
from .map_table import TableRow, estimators_table
from .objective import agreement
from .phenotype import proxies_np
from .radiomap import AssociationMap, association_map, classical_pipeline, metagenes
from .realism import MIN_ROWS, background_fidelity, frechet_distance, kid, normalise_on
from .report import metric_name
from .synthesis import SwapResult, gene_swap, nanmean
from .truth import nodule_measures, program_probe, program_response

__all__ = ["EvalData", "Evaluation", "Model", "evaluate", "load_data", "SPLITS"]
PROGRAMS = tuple(PHENOTYPE_FEATURES)
MIN_SUBJECTS = 3
"""Fewer subjects than this in a split: maps, probes, clusters and t-SNE are not computed (NaN)."""


@dataclass
class Model:
    """A generator under evaluation, with what it needs to read genes."""

    label: str                   # metric group: "model" or "baseline"
    G: torch.nn.Module
    cfg: ExperimentConfig
    stats: GeneStats             # normalisation the model was trained with
    source: str                  # where it came from (run id or checkpoint path), for the report


@dataclass
class Synthesis:
    """A model's gene swap of every subject and the pyradiomics features of its nodules."""

    genes: np.ndarray            # (S, G) normalised as the model reads them
    swap: SwapResult             # (S, K, H, W) images, masks, weights; (S, C) codes
    features: np.ndarray         # (S, K, F)
    means: np.ndarray            # (S, F) per-subject NaN-mean over the K backgrounds


@dataclass
class RealNodules:
    """The real nodules, measured once: pyradiomics features and phenotype proxies per slice and per subject."""

    features: np.ndarray         # (N, F) per slice
    names: list[str]
    means: np.ndarray            # (S, F) per subject, rows in EvalData.subjects order
    proxies: np.ndarray          # (S, 4) phenotype proxies per subject (the map estimators' phenotype)
    measures: np.ndarray         # (S, 2) mask area and mean intensity per subject (program response)
    slice_split: np.ndarray      # (N,) "train" | "heldout" of each slice


@dataclass
class Evaluation:
    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, dict] = field(default_factory=dict)
    """file name -> {"caption", "width", "height"} of each PNG under the figures folder."""
    top_links: dict[str, list[dict]] = field(default_factory=dict)
    """"<split>/<who>" -> strongest significant map cells [{"row", "feature", "rho", "q"}]."""
    feature_names: list[str] = field(default_factory=list)
    estimators: list[TableRow] = field(default_factory=list)
    """The estimators table: one row per (who, estimator), fitted on the training subjects."""


def synthesise(model: Model, data: EvalData, device: torch.device, seed: int) -> Synthesis:
    genes = apply_gene_stats(model.stats, data.genes_raw)
    swap = gene_swap(model.G, data.backgrounds, genes, device, seed=seed)
    S, K, H, W = swap.images.shape
    feats, _ = radiomic_features(swap.images.reshape(S * K, H, W), swap.masks.reshape(S * K, H, W),
                                 spacing_mm=data.spacing_mm)
    feats = feats.reshape(S, K, -1)
    return Synthesis(genes, swap, feats, nanmean(feats, axis=1))


def _per_subject(values: np.ndarray, slice_subject: np.ndarray, subjects: list[str]) -> np.ndarray:
    means, ids = subject_means(values, slice_subject)
    return means[[ids.index(s) for s in subjects]]


def real_nodules(data: EvalData) -> RealNodules:
    features, names = radiomic_features(data.images, data.masks, spacing_mm=data.spacing_mm)
    return RealNodules(features, names, _per_subject(features, data.slice_subject, data.subjects),
                       _per_subject(proxies_np(data.images, data.masks), data.slice_subject, data.subjects),
                       _per_subject(nodule_measures(data.images, data.masks), data.slice_subject, data.subjects),
                       np.array([data.split_of[s] for s in data.slice_subject]))


# ---------------------------------------------------------------------------------------------
# Metric groups; each returns NaN-valued entries where its subjects are too few.


def _realism(real_f: np.ndarray, fake_f: np.ndarray, real_masks: np.ndarray, fake_masks: np.ndarray,
             seed: int) -> dict[str, float]:
    """realism.realism() on features already computed (pyradiomics is the cost of an evaluation)."""
    out = {"frechet_radiomic": np.nan, "kid_radiomic": np.nan, "kid_radiomic_std": np.nan}
    finite = lambda a: int(np.isfinite(a).all(axis=1).sum())  # noqa: E731
    if finite(real_f) >= MIN_ROWS and finite(fake_f) >= MIN_ROWS:
        real_z, fake_z = normalise_on(real_f, fake_f)
        out["frechet_radiomic"] = frechet_distance(real_z, fake_z)
        out["kid_radiomic"], out["kid_radiomic_std"] = kid(real_z, fake_z, seed=seed)
    fake_bin, real_area = fake_masks >= 0.5, (real_masks >= 0.5).sum(axis=(1, 2)).mean()
    out["empty_mask_fraction"] = float((~fake_bin.any(axis=(1, 2))).mean())
    out["mask_area_ratio"] = float(fake_bin.sum(axis=(1, 2)).mean() / real_area) if real_area > 0 else np.nan
    return out


def _paired_finite(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns finite wherever a subject is usable, then subjects finite in both (row pairing kept)."""
    rows = np.isfinite(a).any(axis=1) & np.isfinite(b).any(axis=1)
    cols = np.isfinite(a[rows]).all(axis=0) & np.isfinite(b[rows]).all(axis=0)
    ok = rows & np.isfinite(a[:, cols]).all(axis=1) & np.isfinite(b[:, cols]).all(axis=1)
    return a[ok][:, cols], b[ok][:, cols]


def _conditioning(real_means: np.ndarray, synth_means: np.ndarray, n_perm: int, seed: int) -> dict[str, float]:
    """Gene-swap retrieval on per-subject features, each set z-scored across subjects on its own.

    Retrieval asks whether subjects' synthetic nodules differ from each other as their real nodules do.
    Z-scoring both sets on the real statistics would keep the synthetic set's overall offset (what
    realism measures), and that offset then decides every nearest neighbour: all synthetic rows pick
    the same real subject. Features constant in either set are left out.
    """
    real, synth = _paired_finite(real_means, synth_means)
    keys = ("top1", "top5", "chance_top1", "chance_top5", "p_top1", "p_top5")
    varying = (real.std(axis=0) > 1e-12) & (synth.std(axis=0) > 1e-12) if len(real) else np.zeros(0, bool)
    if len(real) < 2 or not varying.any():
        return {k: np.nan for k in keys} | {"n_subjects": float(len(real))}
    z = lambda a: (a[:, varying] - a[:, varying].mean(axis=0)) / a[:, varying].std(axis=0)  # noqa: E731
    return {k: float(v) for k, v in retrieval(z(synth), z(real), n_perm=n_perm, seed=seed).items()}


def _code(x: np.ndarray, targets: np.ndarray, n_clusters: int, probe_perm: int, seed: int
          ) -> tuple[dict[str, float], np.ndarray | None]:
    """Silhouette of KMeans clusters of x, and a cross-validated probe of each phenotype feature from x."""
    out = {"silhouette": np.nan} | {f"probe_{k}/{p}": np.nan for k in ("r2", "p") for p in PROGRAMS}
    labels = None
    if len(x) >= max(MIN_SUBJECTS, n_clusters + 1):
        labels, out["silhouette"] = cluster_codes(x, n_clusters, seed=seed)
    for j, program in enumerate(PROGRAMS):
        ok = np.isfinite(targets[:, j])
        if ok.sum() >= MIN_SUBJECTS:
            res = linear_probe(x[ok], targets[ok, j], n_perm=probe_perm, seed=seed)
            out[f"probe_r2/{program}"], out[f"probe_p/{program}"] = float(res["r2"][0]), float(res["p"][0])
    return out, labels


def _map_summary(amap: AssociationMap | None) -> dict[str, float]:
    if amap is None:
        return {"n_significant": np.nan, "n_cells": np.nan, "max_abs_rho": np.nan}
    defined = np.isfinite(amap.rho)
    return {"n_significant": float(amap.significant.sum()), "n_cells": float(defined.sum()),
            "max_abs_rho": float(np.abs(amap.rho[defined]).max()) if defined.any() else np.nan}


def _top_links(amap: AssociationMap | None, n: int = 5) -> list[dict]:
    if amap is None:
        return []
    cells = sorted(np.argwhere(amap.significant), key=lambda rc: -abs(amap.rho[rc[0], rc[1]]))[:n]
    return [{"row": amap.row_names[r], "feature": amap.col_names[c], "rho": float(amap.rho[r, c]),
             "q": float(amap.q[r, c])} for r, c in cells]


def _put(metrics: dict[str, float], split: str, who: str, group: str, values: dict[str, float]) -> None:
    metrics |= {metric_name(split, who, group, k): float(v) for k, v in values.items()}


# ---------------------------------------------------------------------------------------------
# The stages of one split: each takes what it uses and returns its metrics (and what later stages read).


def synthesis_metrics(split: str, idx: np.ndarray, data: EvalData, real: RealNodules, models: list[Model],
                      synth: dict[str, Synthesis], n_perm: int, seed: int, device: torch.device) -> dict[str, float]:
    """Realism, background fidelity, gene-swap retrieval and the truth-free map agreement of each model."""
    S, rows, out = len(idx), real.slice_split == split, {}
    # The realism floor: the same distance between this split's real nodules and as many of the other splits' (a
    # fixed draw), what two disjoint real sets score; it gives the synthetic distances below a scale.
    others = np.flatnonzero(~rows)
    others = np.sort(np.random.default_rng(seed).permutation(others)[:int(rows.sum())])
    floor = _realism(real.features[rows], real.features[others], data.masks[rows], data.masks[others], seed)
    _put(out, split, "real", "realism", {"frechet_radiomic": floor["frechet_radiomic"]})
    for m in models:
        sy = synth[m.label]
        K = sy.features.shape[1]
        flat = lambda a: a[idx].reshape(S * K, *a.shape[2:])  # noqa: E731 - (S, K, ...) -> (S * K, ...)
        _put(out, split, m.label, "realism", _realism(real.features[rows], flat(sy.features), data.masks[rows],
                                                      flat(sy.swap.masks), seed))
        bg = np.tile(data.backgrounds, (S, 1, 1))  # (S * K, H, W): row s * K + k is background k, as flat()
        _put(out, split, m.label, "background", background_fidelity(flat(sy.swap.images), bg, flat(sy.swap.masks)))
        _put(out, split, m.label, "conditioning", _conditioning(real.means[idx], sy.means[idx], n_perm, seed))
        value = np.nan
        if S >= MIN_SUBJECTS:
            value = agreement(Synthesizer(m.G, data.backgrounds, seed, str(device)), sy.genes[idx], real.proxies[idx])
        _put(out, split, m.label, "map", {"agreement": value})
    return out


@dataclass
class CodeMaps:
    """A split's representations, their clusters and association maps (Fig. 4 and the heatmaps read them)."""

    codes: dict[str, np.ndarray]
    clusters: dict[str, np.ndarray | None]
    amaps: dict[str, AssociationMap | None]


def code_metrics(split: str, idx: np.ndarray, real: RealNodules, models: list[Model], synth: dict[str, Synthesis],
                 genes: np.ndarray, n_clusters: int, n_metagenes: int, probe_perm: int, n_perm: int,
                 seed: int) -> tuple[dict[str, float], dict[str, list[dict]], CodeMaps]:
    """Cluster quality and feature probes of each representation; learned and classical association maps."""
    features, pheno = real.means[idx], [real.names.index(PHENOTYPE_FEATURES[p]) for p in PROGRAMS]
    codes = {m.label: synth[m.label].swap.codes[idx] for m in models}
    if len(idx) >= 2:
        codes["genes_pca"] = pca_codes(genes[idx], models[0].cfg.generator.code_dim, seed=seed)
    out: dict[str, float] = {}
    clusters: dict[str, np.ndarray | None] = {}
    for who, x in codes.items():
        res, clusters[who] = _code(x, features[:, pheno], n_clusters, probe_perm, seed)
        _put(out, split, who, "code", res)
    enough = lambda x: int((np.isfinite(x).all(1) & np.isfinite(features).all(1)).sum()) >= MIN_SUBJECTS  # noqa
    amaps: dict[str, AssociationMap | None] = {}
    for m in models:
        x, labels = codes[m.label], clusters[m.label]
        amaps[m.label] = association_map(x, features, row_names=[f"code_{j}" for j in range(x.shape[1])],
                                         col_names=real.names, n_perm=n_perm, seed=seed) if enough(x) else None
        n_sig = np.nan
        if labels is not None and enough(x):
            onehot = (labels[:, None] == np.arange(n_clusters)).astype(float)
            n_sig = association_map(onehot, features, row_names=[f"cluster_{j}" for j in range(n_clusters)],
                                    col_names=real.names, n_perm=n_perm, seed=seed).significant.sum()
        _put(out, split, m.label, "map", {"clusters_n_significant": n_sig})
    amaps["classical"] = None
    if enough(genes[idx]):
        amaps["classical"] = classical_pipeline(genes[idx], features, feature_names=real.names,
                                                n_metagenes=min(n_metagenes, genes.shape[1]), n_perm=n_perm,
                                                seed=seed)[1]
    top = {}
    for who, amap in amaps.items():
        _put(out, split, who, "map", _map_summary(amap))
        top[f"{split}/{who}"] = _top_links(amap)
    return out, top, CodeMaps(codes, clusters, amaps)


def truth_metrics(split: str, idx: np.ndarray, real: RealNodules, models: list[Model], synth: dict[str, Synthesis],
                  codes: dict[str, np.ndarray], genes: np.ndarray, programs: np.ndarray, n_metagenes: int,
                  probe_perm: int, seed: int) -> dict[str, float]:
    """Program response of each model's gene swap (and the real nodules) and probes of the true programs."""
    enough, out = len(idx) >= MIN_SUBJECTS, {}
    measures = {m.label: nanmean(nodule_measures(synth[m.label].swap.images[idx], synth[m.label].swap.masks[idx]),
                                 axis=1) for m in models}                            # (S, 4): mean over backgrounds
    measures["real"] = real.measures[idx]
    for who, x in measures.items():  # "real": the ceiling, what the real nodules show
        res = program_response(x, programs[idx], PROGRAMS) if enough else {
            f"response/{k}": np.nan for k in (*PROGRAMS, "decoy")}
        _put(out, split, who, "truth", res)
    inputs = {m.label: codes[m.label] for m in models}
    if enough:
        inputs["classical"] = metagenes(genes[idx], min(n_metagenes, genes.shape[1]), seed=seed)[1]
        inputs["genes_pca"] = codes["genes_pca"]
    for who in [*(m.label for m in models), "classical", "genes_pca"]:
        if who in inputs and enough:
            res = program_probe(inputs[who], programs[idx], PROGRAMS, n_perm=probe_perm, seed=seed)
        else:
            res = {f"probe_{k}/{p}": np.nan for k in ("r2", "p") for p in PROGRAMS}
        _put(out, split, who, "truth", res)
    return out


# ---------------------------------------------------------------------------------------------


def evaluate(data: EvalData, model: Model, baseline: Model | None = None, *, figures_dir: str | Path,
             truth=None, n_perm: int = 1000, probe_perm: int = 100, n_clusters: int = 3, n_metagenes: int = 8,
             seed: int = 0, device: torch.device | str = "cpu", estimators: Sequence[str] = tuple(ESTIMATORS),
             map_backgrounds: int = 4, budget: Budget = Budget(),
             log: Callable[[str], None] = print) -> Evaluation:
    """Every metric of docs/design.md §5 for `model` (and `baseline`) on the training and held-out subjects.

    truth: a truth_table.Truth checked against the dataset, for the link metrics, program responses and
    probes of the true programs. n_perm: permutations of the retrieval and map tests; probe_perm: of each
    linear-probe null. estimators: the map estimators of the table (fitted on the training subjects), the
    generator's over the first `map_backgrounds` backgrounds. Figures are written into figures_dir.
    """
    models = [m for m in (model, baseline) if m is not None]
    device, figures_dir = torch.device(device), Path(figures_dir)
    ev = Evaluation()
    real = real_nodules(data)
    ev.feature_names = real.names
    log(f"real nodules: {len(data.images)} slices of {len(data.subjects)} subjects, {len(real.names)} features")
    synth = {m.label: synthesise(m, data, device, seed) for m in models}
    log(f"gene swap: {len(data.subjects)} subjects x {len(data.backgrounds)} backgrounds for "
        + ", ".join(models_desc(models)))
    genes = synth["model"].genes  # normalised as the evaluated model reads them
    slice_of = eval_figures.representative_slices(data.images, data.masks, data.slice_subject)
    ev.figures |= eval_figures.paper_figures(figures_dir, data.backgrounds, data.subjects, data.indices("heldout"),
                                             data.indices("train"), synth["model"].swap,
                                             synth["baseline"].swap if baseline is not None else None, slice_of)
    links = programs = None
    if truth is not None:
        links, programs = truth.link_matrix(data.gene_names, PROGRAMS), truth.programs_of(data.subjects, PROGRAMS)
    for split in SPLITS:
        idx = data.indices(split)
        ev.metrics[metric_name(split, "n_subjects")] = float(len(idx))
        ev.metrics[metric_name(split, "n_slices")] = float((real.slice_split == split).sum())
        if not len(idx):
            log(f"{split}: no subjects, skipped")
            continue
        ev.metrics |= synthesis_metrics(split, idx, data, real, models, synth, n_perm, seed, device)
        log(f"{split}: realism, background, conditioning, map agreement on {len(idx)} subjects")
        values, top, maps = code_metrics(split, idx, real, models, synth, genes, n_clusters, n_metagenes, probe_perm,
                                         n_perm, seed)
        ev.metrics |= values
        ev.top_links |= top
        log(f"{split}: code structure and maps (n_perm {n_perm}, probe null {probe_perm})")
        if truth is not None:
            ev.metrics |= truth_metrics(split, idx, real, models, synth, maps.codes, genes, programs, n_metagenes,
                                        probe_perm, seed)
            log(f"{split}: ground truth (program probes, program response)")
        panels = {"raw genes": "genes_pca", **({"baseline code": "baseline"} if baseline else {}),
                  "proposed code": "model"}
        heat = {"learned: proposed code": maps.amaps["model"],
                **({"learned: baseline code": maps.amaps["baseline"]} if baseline else {}),
                "classical: metagenes": maps.amaps["classical"]}
        ev.figures |= eval_figures.split_figures(
            figures_dir, split, {t: maps.codes[w] for t, w in panels.items() if w in maps.codes},
            {t: maps.clusters.get(w) for t, w in panels.items()},
            {t: ev.metrics.get(metric_name(split, w, "code", "silhouette"), np.nan) for t, w in panels.items()},
            [data.subjects[i] for i in idx], slice_of, heat, n_clusters, n_perm, seed)
    values, ev.estimators = estimators_table(
        genes_raw=data.genes_raw, gene_names=data.gene_names, phenotype=real.proxies, train=data.indices("train"),
        heldout=data.indices("heldout"), models=models, links=links, backgrounds=data.backgrounds[:map_backgrounds],
        names=estimators, budget=budget, seed=seed, device=device, log=log)
    ev.metrics |= values
    return ev


def models_desc(models: list[Model]) -> list[str]:
    return [f"{m.label} ({m.cfg.generator.arch})" for m in models]
