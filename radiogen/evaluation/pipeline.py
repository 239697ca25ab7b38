"""The evaluation of a trained generator on a prepared dataset (docs/design.md §5), without any tracking.

`evaluate` runs every measurement of the metric library on one model (and optionally the MC-GAN
baseline) for the training subjects and for the held-out subjects (val + test) separately, draws the
paper's figures, and returns flat metrics named by `report.metric_name`. `ray_jobs/eval.py` loads the
models, logs to MLflow and writes the report; the learnability benchmark calls it too.

Every nodule feature is a pyradiomics feature (features.radiomic_features), averaged per subject:
the real side over the subject's real nodule slices, the synthetic side over the subject's gene
swap (its genes drawn over the same K fixed backgrounds and noise vectors as every other subject).
Groups are fitted within a split (PCA, clusters, metagenes, probes), so a held-out number never
borrows from the training subjects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from radiogen import schema
from radiogen.config import ExperimentConfig
from radiogen.data import read_records
from radiogen.figures import fig2_grid, fig3_grid, fig4_tsne, map_heatmap, save_figure
from radiogen.genes import GeneStats, apply_gene_stats

from .codes import cluster_codes, linear_probe, pca_codes
from .conditioning import retrieval
from .features import PHENOTYPE_FEATURES, radiomic_features, subject_means
from .radiomap import AssociationMap, association_map, classical_pipeline, metagenes
from .realism import MIN_ROWS, background_fidelity, frechet_distance, kid, normalise_on
from .report import metric_name
from .synthesis import SwapResult, cheap_phenotype_by_subject, gene_swap, map_quality, nanmean
from .truth import (gene_phenotype_scores, link_auroc, metagene_scores, program_probe, program_response,
                    size_intensity, true_links)

SPLITS = {"train": ("train",), "heldout": ("val", "test")}
"""Evaluated subject sets: the training split, and the subjects training never saw."""
PROGRAMS = tuple(PHENOTYPE_FEATURES)
MIN_SUBJECTS = 3
"""Fewer subjects than this in a split: maps, probes, clusters and t-SNE are not computed (NaN)."""
FIG_COLUMNS = 7  # gene sources in Fig. 3, as in the paper


@dataclass
class EvalData:
    """What an evaluation reads from a prepared dataset."""

    root: Path
    subjects: list[str]          # sorted ids of subjects that have genes and nodule slices
    split_of: dict[str, str]     # subject -> "train" | "heldout"
    genes_raw: np.ndarray        # (S, G) raw values, rows in `subjects` order
    gene_names: list[str]
    images: np.ndarray           # (N, H, W) real nodule slices in [-1, 1]
    masks: np.ndarray            # (N, H, W) {0, 1}
    slice_subject: np.ndarray    # (N,) subject id of each slice
    backgrounds: np.ndarray      # (K, H, W) the fixed backgrounds of every gene swap
    spacing_mm: float
    fingerprint: str

    def indices(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.subjects) if self.split_of[s] == split], dtype=int)


def load_data(root: str | Path, n_backgrounds: int = 8, seed: int = 0) -> EvalData:
    """Real nodule slices of every split, the gene table, and K fixed backgrounds drawn with `seed`
    (held-out lung slices when there are K, so training backgrounds are not reused; see `_background_pool`)."""
    root = Path(root)
    manifest = schema.read_manifest(root)
    size = manifest["image"]["size"]
    matrix = schema.read_genes(root)
    images, masks, ids, bg_rows = [], [], [], {}
    for split in schema.SPLITS:
        rec = read_records(root, split, "nodule")
        images.append(schema.decode_images(rec["image"], size))
        masks.append(schema.decode_masks(rec["mask"], size).astype(np.float32))
        ids += [str(s) for s in rec["subject_id"]]
        bg_rows[split] = schema.decode_images(read_records(root, split, "background")["image"], size)
    pool = _background_pool([np.concatenate([bg_rows["val"], bg_rows["test"]]), bg_rows["train"]], n_backgrounds)
    pick = np.sort(np.random.default_rng(seed).choice(len(pool), n_backgrounds, replace=False))
    with_slices = set(ids)
    order = sorted(s for s in matrix.subject_ids if s in with_slices)
    row = {s: i for i, s in enumerate(matrix.subject_ids)}
    split_of = {s: next(k for k, v in SPLITS.items() if matrix.splits[row[s]] in v) for s in order}
    return EvalData(root, order, split_of, matrix.values[[row[s] for s in order]], list(matrix.gene_names),
                    np.concatenate(images), np.concatenate(masks), np.asarray(ids), pool[pick],
                    float(manifest["image"]["pixel_spacing_mm"]), schema.dataset_fingerprint(root))


LUNG_LEVEL = -0.2     # [-1, 1] units: -400 HU, below it a pixel is aerated lung
MIN_LUNG_FRACTION = 0.25


def _background_pool(sources: list[np.ndarray], n: int) -> np.ndarray:
    """Background slices to draw the fixed K from: the first source (held-out) that holds n slices showing
    lung (>= MIN_LUNG_FRACTION of pixels below -400 HU), else the lung slices of all, else all slices.

    A background VOI's far planes can leave the lung (a uniform soft-tissue slice); a nodule drawn there
    says little about the lung nodules the map is about, so such slices are used only when nothing else is.
    """
    lung = [s[(s < LUNG_LEVEL).mean(axis=(1, 2)) >= MIN_LUNG_FRACTION] for s in sources]
    for pool in (lung[0], np.concatenate(lung), np.concatenate(sources)):
        if len(pool) >= n:
            return pool
    raise ValueError(f"the dataset has {sum(map(len, sources))} background slices, fewer than --backgrounds {n}")


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
class Evaluation:
    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, dict] = field(default_factory=dict)
    """file name -> {"caption", "width", "height"} of each PNG under the figures folder."""
    top_links: dict[str, list[dict]] = field(default_factory=dict)
    """"<split>/<who>" -> strongest significant map cells [{"row", "feature", "rho", "q"}]."""
    feature_names: list[str] = field(default_factory=list)


def synthesise(model: Model, data: EvalData, device: torch.device, seed: int) -> Synthesis:
    genes = apply_gene_stats(model.stats, data.genes_raw)
    swap = gene_swap(model.G, data.backgrounds, genes, device, seed=seed)
    S, K, H, W = swap.images.shape
    feats, _ = radiomic_features(swap.images.reshape(S * K, H, W), swap.masks.reshape(S * K, H, W),
                                 spacing_mm=data.spacing_mm)
    feats = feats.reshape(S, K, -1)
    return Synthesis(genes, swap, feats, nanmean(feats, axis=1))


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
    cells = np.argwhere(amap.significant)
    cells = sorted(cells, key=lambda rc: -abs(amap.rho[rc[0], rc[1]]))[:n]
    return [{"row": amap.row_names[r], "feature": amap.col_names[c], "rho": float(amap.rho[r, c]),
             "q": float(amap.q[r, c])} for r, c in cells]


def _complete(x: np.ndarray, features: np.ndarray) -> int:
    return int((np.isfinite(x).all(axis=1) & np.isfinite(features).all(axis=1)).sum())


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(x, dtype=np.float64))


def _representative_slices(data: EvalData) -> dict[str, np.ndarray]:
    """Each subject's real slice with the largest nodule area (the image shown for it in Fig. 3/4)."""
    area = data.masks.sum(axis=(1, 2))
    best: dict[str, int] = {}
    for i, s in enumerate(data.slice_subject):
        if s not in best or area[i] > area[best[s]]:
            best[s] = i
    return {s: data.images[i] for s, i in best.items()}


def _save(ev: Evaluation, folder: Path, name: str, fig, caption: str) -> None:
    save_figure(fig, folder / name)
    width, height = (fig.get_size_inches() * 100).round().astype(int)  # save_figure writes at dpi 100
    ev.figures[name] = {"caption": caption, "width": int(width), "height": int(height)}


# ---------------------------------------------------------------------------------------------


def evaluate(data: EvalData, model: Model, baseline: Model | None = None, *, figures_dir: str | Path,
             truth: dict | None = None, n_perm: int = 1000, probe_perm: int = 100, n_clusters: int = 3,
             n_metagenes: int = 8, seed: int = 0, device: torch.device | str = "cpu",
             log: Callable[[str], None] = print) -> Evaluation:
    """Every metric of docs/design.md §5 for `model` (and `baseline`) on the training and held-out subjects.

    truth: the synthetic cohort's truth.json (parsed), for link AUROCs and probes of the true programs.
    n_perm: permutations of the retrieval and map tests; probe_perm: of each linear-probe null.
    Figures are written into figures_dir; their file names, captions and pixel sizes are returned.
    """
    run = _Run(data, [m for m in (model, baseline) if m is not None], truth, Path(figures_dir), n_perm, probe_perm,
               n_clusters, n_metagenes, seed, torch.device(device), log)
    _paper_figures(run.ev, data, run.synth, baseline is not None, run.slice_of, run.figures_dir)
    for split in SPLITS:
        idx = data.indices(split)
        run.ev.metrics[metric_name(split, "n_subjects")] = float(len(idx))
        run.ev.metrics[metric_name(split, "n_slices")] = float(run.real_rows(split).sum())
        if not len(idx):
            log(f"{split}: no subjects, skipped")
            continue
        run.synthesis_metrics(split, idx)
        run.codes_and_maps(split, idx)
        if truth is not None:
            run.truth_metrics(split, idx)
        run.split_figures(split, idx)
    return run.ev


class _Run:
    """One evaluation's shared state; each method adds one stage's metrics of one split to `ev`."""

    def __init__(self, data: EvalData, models: list[Model], truth: dict | None, figures_dir: Path, n_perm: int,
                 probe_perm: int, n_clusters: int, n_metagenes: int, seed: int, device: torch.device,
                 log: Callable[[str], None]):
        self.data, self.models, self.figures_dir, self.log = data, models, figures_dir, log
        self.n_perm, self.probe_perm, self.n_clusters = n_perm, probe_perm, n_clusters
        self.seed, self.device = seed, device
        self.ev = Evaluation()
        self.real_f, names = radiomic_features(data.images, data.masks, spacing_mm=data.spacing_mm)
        self.names = self.ev.feature_names = names
        means, ids = subject_means(self.real_f, data.slice_subject)
        self.real_means = means[[ids.index(s) for s in data.subjects]]                # (S, F)
        self.pheno_cols = [names.index(PHENOTYPE_FEATURES[p]) for p in PROGRAMS]
        self.real_cheap = cheap_phenotype_by_subject(data.images, data.masks, data.slice_subject, data.subjects)
        per_slice, ids = subject_means(size_intensity(data.images, data.masks), data.slice_subject)
        self.real_measures = per_slice[[ids.index(s) for s in data.subjects]]  # (S, 2) area, intensity
        self.slice_of = _representative_slices(data)
        self.slice_split = np.array([data.split_of[s] for s in data.slice_subject])
        log(f"real nodules: {len(data.images)} slices of {len(data.subjects)} subjects, {len(names)} features")
        self.synth = {m.label: synthesise(m, data, device, seed) for m in models}
        log(f"gene swap: {len(data.subjects)} subjects x {len(data.backgrounds)} backgrounds for "
            + ", ".join(models_desc(models)))
        self.genes = self.synth["model"].genes  # normalised as the evaluated model reads them
        self.k_meta = min(n_metagenes, self.genes.shape[1])
        self.links = self.programs = None
        if truth is not None:
            missing = [s for s in data.subjects if s not in truth["subjects"]]
            if missing:
                raise ValueError(f"truth file lacks subjects {missing[:3]} of the dataset; pass the truth.json of "
                                 f"the cohort this dataset was prepared from")
            self.links = true_links([truth["gene_programs"].get(g) for g in data.gene_names], PROGRAMS)
            self.programs = np.array([[truth["subjects"][s]["programs"][p] for p in PROGRAMS] for s in data.subjects])
        self.codes: dict[str, np.ndarray] = {}
        self.clusters: dict[str, np.ndarray | None] = {}
        self.amaps: dict[str, AssociationMap | None] = {}
        self.gene_labels: np.ndarray | None = None

    def real_rows(self, split: str) -> np.ndarray:
        return self.slice_split == split

    def put(self, split: str, who: str, group: str, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.ev.metrics[metric_name(split, who, group, k)] = float(v)

    def synthesis_metrics(self, split: str, idx: np.ndarray) -> None:
        """Realism, background fidelity, gene-swap retrieval and map quality of each model."""
        S, data, rows = len(idx), self.data, self.real_rows(split)
        self.codes = {}
        for m in self.models:
            sy = self.synth[m.label]
            K = sy.features.shape[1]
            flat = lambda a: a[idx].reshape(S * K, *a.shape[2:])  # noqa: E731 - (S, K, ...) -> (S * K, ...)
            self.put(split, m.label, "realism", _realism(self.real_f[rows], flat(sy.features), data.masks[rows],
                                                         flat(sy.swap.masks), self.seed))
            bg = np.tile(data.backgrounds, (S, 1, 1))  # (S * K, H, W): row s * K + k is background k, as flat()
            self.put(split, m.label, "background", background_fidelity(flat(sy.swap.images), bg, flat(sy.swap.masks)))
            self.put(split, m.label, "conditioning",
                     _conditioning(self.real_means[idx], sy.means[idx], self.n_perm, self.seed))
            quality = map_quality(m.G, data.backgrounds, sy.genes[idx], self.real_cheap[idx], self.device,
                                  seed=self.seed) if S >= MIN_SUBJECTS else np.nan
            self.put(split, m.label, "map", {"quality": quality})
            self.codes[m.label] = sy.swap.codes[idx]
        if S >= 2:
            self.codes["genes_pca"] = pca_codes(self.genes[idx], self.models[0].cfg.generator.code_dim, seed=self.seed)
        self.log(f"{split}: realism, background, conditioning on {S} subjects")

    def codes_and_maps(self, split: str, idx: np.ndarray) -> None:
        """Cluster quality and feature probes of each representation; learned and classical association maps."""
        features = self.real_means[idx]
        self.clusters, self.amaps, self.gene_labels = {}, {}, None
        for who, x in self.codes.items():
            res, self.clusters[who] = _code(x, features[:, self.pheno_cols], self.n_clusters, self.probe_perm,
                                            self.seed)
            self.put(split, who, "code", res)
        enough = lambda x: _complete(x, features) >= MIN_SUBJECTS  # noqa: E731
        for m in self.models:
            x, labels = self.codes[m.label], self.clusters[m.label]
            self.amaps[m.label] = association_map(
                x, features, row_names=[f"code_{j}" for j in range(x.shape[1])], col_names=self.names,
                n_perm=self.n_perm, seed=self.seed) if enough(x) else None
            n_sig = np.nan
            if labels is not None and enough(x):
                onehot = (labels[:, None] == np.arange(self.n_clusters)).astype(float)
                n_sig = association_map(onehot, features, row_names=[f"cluster_{j}" for j in range(self.n_clusters)],
                                        col_names=self.names, n_perm=self.n_perm, seed=self.seed).significant.sum()
            self.put(split, m.label, "map", {"clusters_n_significant": n_sig})
        self.amaps["classical"] = None
        if enough(self.genes[idx]):
            self.gene_labels, self.amaps["classical"] = classical_pipeline(
                self.genes[idx], features, feature_names=self.names, n_metagenes=self.k_meta, n_perm=self.n_perm,
                seed=self.seed)
        for who, amap in self.amaps.items():
            self.put(split, who, "map", _map_summary(amap))
            self.ev.top_links[f"{split}/{who}"] = _top_links(amap)
        self.log(f"{split}: code structure and maps (n_perm {self.n_perm}, probe null {self.probe_perm})")

    def truth_metrics(self, split: str, idx: np.ndarray) -> None:
        """Link AUROC of each map against the true gene -> program links; probes of the true programs."""
        enough = len(idx) >= MIN_SUBJECTS
        genes, pheno = self.genes[idx], self.pheno_cols
        scores = {m.label: gene_phenotype_scores(genes, self.synth[m.label].means[idx][:, pheno]) for m in self.models}
        scores["genes_direct"] = gene_phenotype_scores(genes, self.real_means[idx][:, pheno])
        if self.gene_labels is not None:
            scores["classical"] = metagene_scores(self.gene_labels, self.amaps["classical"], pheno)
        for who in ("classical", *scores):
            ok = who in scores and enough
            self.put(split, who, "truth", {"auroc": link_auroc(scores[who], self.links) if ok else np.nan})
        inputs = {m.label: self.codes[m.label] for m in self.models}
        if enough:
            inputs["classical"] = metagenes(genes, self.k_meta, seed=self.seed)[1]
            inputs["genes_pca"] = self.codes["genes_pca"]
        measures = {m.label: nanmean(size_intensity(self.synth[m.label].swap.images[idx],
                                                    self.synth[m.label].swap.masks[idx]), axis=1)
                    for m in self.models}                                            # (S, 2): mean over backgrounds
        measures["real"] = self.real_measures[idx]
        for who, x in measures.items():  # "real": the ceiling, what the real nodules show
            res = program_response(x, self.programs[idx], PROGRAMS) if enough else {
                f"response/{k}": np.nan for k in ("size", "density", "decoy")}
            self.put(split, who, "truth", res)
        for who in [*(m.label for m in self.models), "classical", "genes_pca"]:
            if who in inputs and enough:
                res = program_probe(inputs[who], self.programs[idx], PROGRAMS, n_perm=self.probe_perm, seed=self.seed)
            else:
                res = {f"probe_{k}/{p}": np.nan for k in ("r2", "p") for p in PROGRAMS}
            self.put(split, who, "truth", res)
        self.log(f"{split}: ground truth (link AUROC, program probes, program response)")

    def split_figures(self, split: str, idx: np.ndarray) -> None:
        """Fig. 4 (t-SNE by cluster, example nodules per proposed-code cluster) and the map heatmaps."""
        if len(idx) < MIN_SUBJECTS:
            return
        has_baseline = len(self.models) > 1
        panels = {"raw genes": ("genes_pca", self.genes[idx])}
        if has_baseline:
            panels["baseline code"] = ("baseline", self.codes["baseline"])
        panels["proposed code"] = ("model", self.codes["model"])
        labels = {t: self.clusters.get(who) for t, (who, _) in panels.items()}
        if all(v is not None for v in labels.values()):
            subjects = [self.data.subjects[i] for i in idx]
            own = labels["proposed code"]
            examples = [np.stack([self.slice_of[subjects[i]] for i in np.flatnonzero(own == c)[:6]])
                        for c in range(self.n_clusters) if (own == c).any()]
            emb = {t: _tsne(x, self.seed) for t, (_, x) in panels.items()}
            sil = {t: self.ev.metrics[metric_name(split, who, "code", "silhouette")] for t, (who, _) in panels.items()}
            _save(self.ev, self.figures_dir, f"fig4_tsne_{split}.png",
                  fig4_tsne(emb, labels, examples, sil, "real nodules of each proposed-code cluster"),
                  f"Fig. 4 ({split}): t-SNE of " + ", ".join(panels) + f", coloured by {self.n_clusters} KMeans "
                  f"clusters of each (raw genes clustered on their PCA); below, real nodules of the subjects in each "
                  f"proposed-code cluster")
        maps = {"learned: proposed code": self.amaps["model"]}
        if has_baseline:
            maps["learned: baseline code"] = self.amaps["baseline"]
        maps["classical: metagenes"] = self.amaps["classical"]
        if all(v is not None for v in maps.values()):
            _save(self.ev, self.figures_dir, f"map_{split}.png", map_heatmap(maps),
                  f"Radiogenomic map ({split}): Spearman rho of code dimensions and of metagenes with nodule "
                  f"features across subjects; dots: BH FDR q < 0.05 against {self.n_perm} permutations")
        self.log(f"{split}: figures")


def models_desc(models: list[Model]) -> list[str]:
    return [f"{m.label} ({m.cfg.generator.arch})" for m in models]


def _paper_figures(ev: Evaluation, data: EvalData, synth: dict[str, Synthesis], with_baseline: bool,
                   slice_of: dict[str, np.ndarray], figures_dir: Path) -> None:
    """Fig. 2 on held-out subjects (training ones when there are none) and Fig. 3 with training gene sources."""
    K = len(data.backgrounds)
    rows = data.indices("heldout")
    rows = rows if len(rows) else data.indices("train")
    rows = rows[:4]
    sw = synth["model"].swap
    cols = np.arange(len(rows)) % K  # subject j on background j
    _save(ev, figures_dir, "fig2_synthesis.png",
          fig2_grid(data.backgrounds[cols], sw.images[rows, cols],
                    None if sw.weights is None else sw.weights[rows, cols], sw.masks[rows, cols]),
          "Fig. 2: (a) background, (b) synthetic image, (c) background weight map, (d) mask; one held-out "
          "subject's genes per row")
    src = data.indices("train")
    src = (src if len(src) else data.indices("heldout"))[:FIG_COLUMNS]
    cols = np.arange(len(src)) % K
    base = synth["baseline"].swap.images[src, cols] if with_baseline else None
    _save(ev, figures_dir, "fig3_gene_swap.png",
          fig3_grid(np.stack([slice_of[data.subjects[i]] for i in src]), data.backgrounds[cols],
                    sw.images[src, cols], base, [data.subjects[i] for i in src]),
          "Fig. 3: columns are gene sources (training subjects); rows: the source's training image, the "
          "background, " + ("the baseline's synthesis, " if with_baseline else "")
          + "the proposed model's synthesis from that source's genes")
