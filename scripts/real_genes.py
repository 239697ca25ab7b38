"""The gene side of radiogen's evaluation on the real GSE103584-derived table (no images are paired).

    python scripts/real_genes.py [--out runs/real_genes] [--metagenes 4 8 16] [--n-perm-map 1000] ...

Inputs (defaults under ../shared/data/real/nsclc_radiogenomics): the third-party expression table
`expression/split_dev_df_zscore_100patients.csv` (comma-separated, genes x subjects: first column the
gene symbol, header the R01 ids, values log10(x+1) z-scored per gene, empty cells where GEO had NA),
the GEO series matrix (GSM <-> R01 ids, histology, gender) and the TCIA clinical table.

Stages (one printed line each):
1. Read the table with the project's own reader (data_prep.gene_table.read_gene_table, orientation
   genes-x-samples, which also handles commas and empty cells as NA) and its NA policy `drop`
   (select_genes + drop_constant): genes with any empty cell are dropped, as the paper does. Subjects
   become rows. The genes are z-scored again over the subjects kept (they already are, up to the
   subjects the third party z-scored over).
2. R01 ids are matched against the GEO sample titles and the clinical `Case ID`; histology and
   gender are cross-checked between GEO and the clinical table.
3. Metagenes (radiogen.evaluation.radiomap.metagenes, Ward clustering on 1 - r) for each count in
   --metagenes: cluster sizes, the mean within-cluster gene-gene Pearson r (over all within-cluster
   gene pairs, and per cluster) against two nulls: (a) random gene groups of the same sizes
   (permutation of the labels; p per map and per cluster), which only says the clusters are not
   random groups, and (b) the same clustering run on a matrix whose genes were shuffled
   independently across subjects (no co-expression left), which says whether the modules are
   stronger than what Ward clustering extracts from noise.
4. Subject structure: PCA explained variance of the first components against the gene-shuffled
   matrix (parallel analysis), KMeans silhouette for k = 2..6 (radiogen.evaluation.codes.cluster_codes)
   against the same null, the adjusted Rand index of the k = 2 clusters with histology, and a t-SNE
   figure coloured by histology.
5. The association step of the classical pipeline with clinical variables in place of image features:
   Spearman rho of every metagene with every binary clinical variable
   (radiogen.evaluation.radiomap.association_map, pooled permutation null). association_map leaves out
   a subject with a NaN anywhere in its row, so one call over all variables would keep only subjects
   for whom every variable is known (EGFR/KRAS are unknown for about a quarter); it is therefore
   called once per variable on the subjects where that variable is known, and Benjamini-Hochberg is
   applied over all cells of the map (metagenes x variables) of one metagene count. Effect sizes:
   rho, AUC (probability that a class-1 subject has the higher metagene expression) and the mean
   difference in metagene expression (z units).
6. Cross-validated linear probes (radiogen.evaluation.codes.linear_probe: ridge, 5-fold, permutation
   p) from the metagene expression and from raw-gene PCA of the same dimension to each binary
   variable. Metagenes and PCA are fitted on all subjects without the labels (unsupervised).

Writes OUT/real_genes.json, OUT/summary.md and the figures OUT/gene_correlation.png,
OUT/subjects.png, OUT/association_map.png; prints the markdown summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

REAL = REPO.parent / "shared" / "data" / "real" / "nsclc_radiogenomics"
EXPRESSION = REAL / "expression" / "split_dev_df_zscore_100patients.csv"
GEO = REAL / "geo" / "GSE103584_series_matrix.txt"
CLINICAL = REAL / "clinical" / "NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv"
R01_ID = re.compile(r"^R01-\d{3}$")

# Binary clinical variables: name -> (clinical column, values coded 1, values coded 0, description).
# Any other value (Unknown, Not collected, NOS histology, ...) is missing for that variable only.
VARIABLES = {
    "histology_squamous": ("Histology", {"Squamous cell carcinoma"}, {"Adenocarcinoma"},
                           "squamous cell carcinoma (1) vs adenocarcinoma (0)"),
    "ever_smoker": ("Smoking status", {"Current", "Former"}, {"Nonsmoker"}, "current or former (1) vs never (0)"),
    "current_smoker": ("Smoking status", {"Current"}, {"Former", "Nonsmoker"}, "current (1) vs former or never (0)"),
    "egfr_mutant": ("EGFR mutation status", {"Mutant"}, {"Wildtype"}, "EGFR mutant (1) vs wildtype (0)"),
    "kras_mutant": ("KRAS mutation status", {"Mutant"}, {"Wildtype"}, "KRAS mutant (1) vs wildtype (0)"),
    "male": ("Gender", {"Male"}, {"Female"}, "male (1) vs female (0)"),
    # Not a phenotype: the recruiting site (Stanford or the Palo Alto VA). VA patients are almost all
    # men and more often smokers with squamous tumours, and site is a major axis of the expression,
    # so it is mapped too and every association is re-tested within site.
    "site_va": ("Patient affiliation", {"VA"}, {"Stanford"}, "VA (1) vs Stanford (0) recruitment"),
}
SITE_COLUMN = "Patient affiliation"


def stage(msg: str) -> None:
    print(f"[real_genes {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.str_):
        return str(obj)
    return obj


def zscore(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    sd = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)


def shuffle_genes(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each gene (column) permuted independently across subjects: marginals kept, co-expression gone."""
    return np.take_along_axis(z, rng.random(z.shape).argsort(axis=0), axis=0)


# ---------------------------------------------------------------------------------------------- inputs
def read_expression(path: Path) -> dict:
    from data_prep.gene_table import NaPolicy, drop_constant, read_gene_table, select_genes

    table = read_gene_table(path, orientation="genes-x-samples")
    subjects = [str(s) for s in table.subjects]
    bad = [s for s in subjects if not R01_ID.match(s)]
    if bad or table.duplicate_subjects:
        raise SystemExit(f"{path}: expected one column per R01 subject (genes x subjects); "
                         f"odd ids {bad[:5]}, duplicates {table.duplicate_subjects[:5]}")
    empty_cells = int(np.isnan(table.values).sum())
    genes_with_empty = int(np.isnan(table.values).any(axis=0).sum())
    sel = select_genes(table, subjects, train=subjects, policy=NaPolicy(0.0))
    constant = drop_constant(sel, list(range(len(subjects))))
    values = np.asarray(sel.values, dtype=np.float64)
    return {"subjects": subjects, "genes": list(map(str, sel.names)), "values": values,
            "n_genes_table": len(table.genes), "n_subjects_table": len(subjects), "empty_cells": empty_cells,
            "genes_with_empty_cells": genes_with_empty, "n_constant_dropped": len(constant),
            "dropped": {k: len(v) for k, v in sel.dropped.items()}, "reader_warnings": list(table.warnings),
            "raw_gene_mean_abs_max": float(np.abs(values.mean(0)).max()),
            "raw_gene_std_range": [float(values.std(0).min()), float(values.std(0).max())]}


def read_geo(path: Path) -> dict[str, dict]:
    """R01 id -> {gsm, histology, gender, ...} from the !Sample_ lines of a GEO series matrix."""
    rows: dict[str, list[list[str]]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(("!Sample_title", "!Sample_geo_accession", "!Sample_characteristics_ch1")):
                fields = next(csv.reader([line.rstrip("\n")], delimiter="\t"))
                rows.setdefault(fields[0], []).append([x.strip() for x in fields[1:]])
    titles, gsm = rows["!Sample_title"][0], rows["!Sample_geo_accession"][0]
    if len(set(titles)) != len(titles):
        raise SystemExit(f"{path}: duplicate sample titles")
    out: dict[str, dict] = {t: {"gsm": g} for t, g in zip(titles, gsm)}
    for chars in rows.get("!Sample_characteristics_ch1", []):
        for t, cell in zip(titles, chars):
            key, sep, value = cell.partition(":")
            if sep:
                out[t][key.strip()] = value.strip()
    return out


def read_clinical(path: Path) -> dict[str, dict]:
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [c.strip() for c in frame.columns]  # "Histology " has a trailing space
    frame = frame.apply(lambda col: col.str.strip())
    if frame["Case ID"].duplicated().any():
        raise SystemExit(f"{path}: duplicate Case IDs {frame['Case ID'][frame['Case ID'].duplicated()].tolist()[:5]}")
    return {r["Case ID"]: r for r in frame.to_dict("records")}


def encode(clinical: dict[str, dict], subjects: list[str], min_class: int) -> tuple[dict, dict]:
    """Binary variables (N,) with NaN where missing; those with < min_class subjects in a class are left out."""
    kept, info = {}, {}
    for name, (column, ones, zeros, desc) in VARIABLES.items():
        raw = [clinical[s].get(column, "") if s in clinical else "" for s in subjects]
        y = np.array([1.0 if v in ones else 0.0 if v in zeros else np.nan for v in raw])
        n1, n0 = int((y == 1).sum()), int((y == 0).sum())
        missing = sorted({v or "(empty)" for v in raw if v not in ones and v not in zeros})
        info[name] = {"column": column, "coding": desc, "n1": n1, "n0": n0, "n_missing": int(np.isnan(y).sum()),
                      "missing_values": missing, "used": min(n1, n0) >= min_class}
        if info[name]["used"]:
            kept[name] = y
    return kept, info


# ---------------------------------------------------------------------------------------------- analyses
def _within_sums(r: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: sum of r over ordered within-cluster gene pairs (i != j) and their number."""
    onehot = np.zeros((len(labels), k))
    onehot[np.arange(len(labels)), labels] = 1.0
    sizes = onehot.sum(0)
    sums = np.einsum("gk,gk->k", onehot, r @ onehot) - sizes  # drop the diagonal (r_ii = 1)
    return sums, sizes * (sizes - 1)


def metagene_stage(z: np.ndarray, genes: list[str], counts: list[int], *, n_perm_groups: int,
                   n_perm_recluster: int, seed: int) -> tuple[dict, dict]:
    from radiogen.evaluation.radiomap import metagenes

    n = len(z)
    r = z.T @ z / n
    results, expressions = {}, {}
    for k in counts:
        labels, expr = metagenes(z, k, seed=seed)
        expressions[k] = (labels, expr)
        sums, pairs = _within_sums(r, labels, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_cluster = sums / pairs
        overall = float(sums.sum() / pairs.sum())
        rng = np.random.default_rng(seed + k)
        null_overall = np.empty(n_perm_groups)
        null_cluster = np.empty((n_perm_groups, k))
        for i in range(n_perm_groups):
            s, pr = _within_sums(r, rng.permutation(labels), k)
            null_overall[i] = s.sum() / pr.sum()
            with np.errstate(invalid="ignore", divide="ignore"):
                null_cluster[i] = s / pr
        p_groups = (1 + (null_overall >= overall - 1e-12).sum()) / (1 + n_perm_groups)
        p_cluster = (1 + (null_cluster >= per_cluster - 1e-12).sum(0)) / (1 + n_perm_groups)
        p_cluster[~np.isfinite(per_cluster)] = np.nan
        null_shuffled = np.empty(n_perm_recluster)
        for i in range(n_perm_recluster):
            zs = zscore(shuffle_genes(z, rng))
            lab_s, _ = metagenes(zs, k, seed=seed)
            s, pr = _within_sums(zs.T @ zs / n, lab_s, k)
            null_shuffled[i] = s.sum() / pr.sum()
        p_shuffled = (1 + (null_shuffled >= overall - 1e-12).sum()) / (1 + n_perm_recluster)
        # The genes that follow each metagene most closely (correlation with its expression).
        corr = zscore(z).T @ zscore(expr) / n  # (G, k)
        top = []
        for c in range(k):
            members = np.flatnonzero(labels == c)
            order = members[np.argsort(-corr[members, c])]
            top.append([genes[g] for g in order[:6]])
        results[k] = {"sizes": np.bincount(labels, minlength=k).tolist(), "within_r": overall,
                      "within_r_per_cluster": per_cluster, "null_random_groups_mean": float(null_overall.mean()),
                      "null_random_groups_q95": float(np.quantile(null_overall, 0.95)), "p_random_groups": p_groups,
                      "p_random_groups_per_cluster": p_cluster,
                      "null_shuffled_genes_mean": float(null_shuffled.mean()) if n_perm_recluster else None,
                      "null_shuffled_genes_max": float(null_shuffled.max()) if n_perm_recluster else None,
                      "p_shuffled_genes": p_shuffled if n_perm_recluster else None, "top_genes": top}
    return results, expressions


def subject_stage(z: np.ndarray, histology: np.ndarray, variables: dict[str, np.ndarray], *, n_perm_null: int,
                  n_components: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from scipy import stats
    from sklearn.metrics import adjusted_rand_score

    from radiogen.evaluation.codes import cluster_codes

    rng = np.random.default_rng(seed)
    nc = min(n_components, len(z) - 1)
    pca = PCA(n_components=nc, random_state=seed).fit(z)
    evr = pca.explained_variance_ratio_
    scores = pca.transform(z)[:, :3]
    # Which known variable does each leading component follow? (Spearman rho on subjects where it is known)
    pc_rho = {v: [float(stats.spearmanr(scores[np.isfinite(y), c], y[np.isfinite(y)])[0])
                  for c in range(scores.shape[1])] for v, y in variables.items()}
    ks = list(range(2, 7))
    sil, labels2 = {}, None
    for k in ks:
        lab, s = cluster_codes(z, k, seed=seed)
        sil[k] = s
        if k == 2:
            labels2 = lab
    null_evr = np.empty((n_perm_null, nc))
    null_sil = np.empty((n_perm_null, len(ks)))
    for i in range(n_perm_null):
        zs = zscore(shuffle_genes(z, rng))
        null_evr[i] = PCA(n_components=nc, random_state=seed).fit(zs).explained_variance_ratio_
        null_sil[i] = [cluster_codes(zs, k, seed=seed)[1] for k in ks]
    known = np.isfinite(histology)
    ari = float(adjusted_rand_score(histology[known].astype(int), labels2[known]))
    n_signal = int(np.argmin(np.append(evr > null_evr.max(0), False))) if n_perm_null else None
    pca20 = PCA(n_components=min(20, len(z) - 1), random_state=seed).fit_transform(z)
    tsne = TSNE(n_components=2, perplexity=min(20.0, (len(z) - 1) / 3), init="pca", method="exact",
                random_state=seed).fit_transform(pca20)
    out = {"pca_explained_variance_ratio": evr, "pca_cumulative": np.cumsum(evr),
           "pca_null_explained_variance_ratio_mean": null_evr.mean(0) if n_perm_null else None,
           "pca_null_explained_variance_ratio_max": null_evr.max(0) if n_perm_null else None,
           "pca_components_above_null_max": n_signal, "pc1_3_spearman_with_variables": pc_rho,
           "silhouette": {k: sil[k] for k in ks},
           "silhouette_null_mean": dict(zip(ks, null_sil.mean(0))) if n_perm_null else None,
           "silhouette_null_max": dict(zip(ks, null_sil.max(0))) if n_perm_null else None,
           "kmeans2_sizes": np.bincount(labels2).tolist(),
           "kmeans2_vs_histology_ari": ari,
           "kmeans2_vs_histology_table": [[int(((labels2 == c) & (histology == h)).sum()) for h in (0, 1)]
                                          for c in range(2)]}
    return out, tsne, labels2


def within_strata(x: np.ndarray, y: np.ndarray, strata: np.ndarray, *, n_perm: int,
                  rng: np.random.Generator) -> dict:
    """Spearman rho of x and y inside each stratum, their subject-weighted mean, and a two-sided
    permutation p of that mean with x shuffled within strata (a stratum where x or y is constant, or
    with fewer than 4 subjects, is left out)."""
    from scipy import stats

    units, by = [], {}
    for s in np.unique(strata):
        m = strata == s
        if m.sum() < 4:
            continue
        a, b = stats.rankdata(x[m]), stats.rankdata(y[m])
        a, b = a - a.mean(), b - b.mean()
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na < 1e-12 or nb < 1e-12:
            continue
        units.append((a / na, b / nb, int(m.sum())))
        by[str(s)] = {"rho": float(units[-1][0] @ units[-1][1]), "n": int(m.sum())}
    if not units:
        return {"rho": float("nan"), "p": float("nan"), "by_stratum": by}
    w = np.array([n for _, _, n in units], dtype=float) / sum(n for _, _, n in units)
    observed = float(sum(wi * (a @ b) for wi, (a, b, _) in zip(w, units)))
    exceed = 0
    for _ in range(n_perm):
        null = sum(wi * (a[rng.permutation(len(a))] @ b) for wi, (a, b, _) in zip(w, units))
        exceed += abs(null) >= abs(observed) - 1e-12
    return {"rho": observed, "p": (1 + exceed) / (1 + n_perm), "by_stratum": by}


def association_stage(expressions: dict, variables: dict[str, np.ndarray], *, n_perm: int, alpha: float,
                      seed: int, strata: np.ndarray | None = None,
                      strata_variable: str = "site_va") -> tuple[dict, dict]:
    from scipy import stats

    from radiogen.evaluation.radiomap import AssociationMap, association_map

    names = list(variables)
    results, maps = {}, {}
    for k, (_, expr) in expressions.items():
        rows = [f"metagene_{c}" for c in range(k)]
        rho = np.full((k, len(names)), np.nan)
        p = np.full_like(rho, np.nan)
        auc = np.full_like(rho, np.nan)
        diff = np.full_like(rho, np.nan)
        n_used = {}
        for j, v in enumerate(names):
            y = variables[v]
            ok = np.isfinite(y)
            am = association_map(expr[ok], y[ok][:, None], row_names=rows, col_names=[v], n_perm=n_perm,
                                 alpha=alpha, seed=seed + 1000 * k + j, null="pooled")
            rho[:, j], p[:, j] = am.rho[:, 0], am.p[:, 0]
            n_used[v] = int(ok.sum())
            x1, x0 = expr[ok & (y == 1)], expr[ok & (y == 0)]
            for c in range(k):
                u = stats.mannwhitneyu(x1[:, c], x0[:, c], alternative="two-sided").statistic
                auc[c, j] = u / (len(x1) * len(x0))
                diff[c, j] = x1[:, c].mean() - x0[:, c].mean()
        q = np.full_like(p, np.nan)
        defined = np.isfinite(p)
        q[defined] = stats.false_discovery_control(p[defined], method="bh")
        sig = defined & (np.nan_to_num(q, nan=1.0) < alpha)
        maps[k] = AssociationMap(rho=rho, p=p, q=q, significant=sig, row_names=rows, col_names=names, alpha=alpha)
        hits = [{"metagene": rows[c], "variable": names[j], "rho": rho[c, j], "auc": auc[c, j],
                 "mean_diff": diff[c, j], "p": p[c, j], "q": q[c, j], "n": n_used[names[j]]}
                for c, j in zip(*np.nonzero(sig))]
        hits.sort(key=lambda h: (h["q"], -abs(h["rho"])))
        if strata is not None:  # is the association there within each site?
            rng = np.random.default_rng(seed + 7 * k)
            for h in hits:
                if h["variable"] == strata_variable:
                    continue
                y = variables[h["variable"]]
                ok = np.isfinite(y)
                w = within_strata(expr[ok, rows.index(h["metagene"])], y[ok], strata[ok], n_perm=n_perm, rng=rng)
                h.update(rho_within_site=w["rho"], p_within_site=w["p"], rho_by_site=w["by_stratum"])
        best = {v: {"metagene": rows[int(np.nanargmax(np.abs(rho[:, j])))],
                    "rho": float(rho[int(np.nanargmax(np.abs(rho[:, j]))), j]),
                    "q": float(np.nanmin(q[:, j]))} for j, v in enumerate(names)}
        results[k] = {"rows": rows, "cols": names, "n": n_used, "rho": rho, "p": p, "q": q, "auc": auc,
                      "mean_diff": diff, "significant": sig, "hits": hits, "strongest_per_variable": best}
    return results, maps


def probe_stage(codes: dict[str, np.ndarray], variables: dict[str, np.ndarray], *, n_perm: int, seed: int) -> dict:
    from radiogen.evaluation.codes import linear_probe

    out: dict[str, dict] = {}
    for cname, x in codes.items():
        out[cname] = {}
        for v, y in variables.items():
            ok = np.isfinite(y)
            res = linear_probe(x[ok], y[ok], n_splits=5, n_perm=n_perm, seed=seed)
            out[cname][v] = {"r2": float(res["r2"][0]), "p": float(res["p"][0]),
                             "null_mean": float(res["null_mean"][0]), "n": int(ok.sum())}
    return out


# ---------------------------------------------------------------------------------------------- figures
def figure_gene_correlation(z: np.ndarray, labels: np.ndarray, k: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = np.argsort(labels, kind="stable")
    r = (z.T @ z / len(z))[np.ix_(order, order)]
    fig = Figure(figsize=(6.0, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(r, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    edges = np.cumsum(np.bincount(labels, minlength=k))[:-1] - 0.5
    for e in edges:
        ax.axhline(e, color="black", lw=0.5)
        ax.axvline(e, color="black", lw=0.5)
    ax.set_title(f"gene-gene Pearson r, genes ordered by {k} metagenes (Ward)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8, label="r")
    return fig


def figure_subjects(structure: dict, tsne: np.ndarray, histology: np.ndarray, labels2: np.ndarray,
                    site: np.ndarray):
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax0, ax1, ax2, ax3 = fig.subplots(1, 4)
    evr = np.asarray(structure["pca_explained_variance_ratio"])
    comp = np.arange(1, len(evr) + 1)
    ax0.plot(comp, evr, "o-", label="observed")
    if structure["pca_null_explained_variance_ratio_mean"] is not None:
        ax0.plot(comp, structure["pca_null_explained_variance_ratio_max"], "s--", color="grey",
                 label="genes shuffled (max)")
    ax0.set_xlabel("principal component")
    ax0.set_ylabel("explained variance ratio")
    ax0.set_title("PCA of subjects (complete genes)", fontsize=9)
    ax0.legend(fontsize=7)
    groups = ((0.0, "adenocarcinoma", "tab:blue"), (1.0, "squamous cell", "tab:red"),
              (np.nan, "other / unknown", "tab:grey"))
    for value, name, color in groups:
        m = np.isnan(histology) if np.isnan(value) else histology == value
        if m.any():
            ax1.scatter(tsne[m, 0], tsne[m, 1], s=16, color=color, label=f"{name} ({int(m.sum())})")
    ax1.set_title("t-SNE of subjects by histology", fontsize=9)
    ax1.legend(fontsize=7)
    cmap = colormaps["tab10"]
    for c in np.unique(labels2):
        m = labels2 == c
        ax2.scatter(tsne[m, 0], tsne[m, 1], s=16, color=cmap(int(c) + 2), label=f"KMeans cluster {int(c)}")
    ax2.set_title(f"t-SNE by KMeans k=2 (silhouette {structure['silhouette'][2]:.3f}, "
                  f"ARI with histology {structure['kmeans2_vs_histology_ari']:.2f})", fontsize=9)
    ax2.legend(fontsize=7)
    for i, name in enumerate(sorted(set(site.tolist()))):
        m = site == name
        ax3.scatter(tsne[m, 0], tsne[m, 1], s=16, color=cmap(i + 4), label=f"{name or 'unknown'} ({int(m.sum())})")
    ax3.set_title("t-SNE by recruiting site", fontsize=9)
    ax3.legend(fontsize=7)
    for ax in (ax1, ax2, ax3):
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


# ---------------------------------------------------------------------------------------------- summary
def _f(x, nd=3) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _p(x) -> str:
    return "nan" if x is None or not np.isfinite(x) else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def summarise(res: dict, maps_k: list[int], probe_k: int) -> str:
    s = res["subjects"]
    g = res["genes"]
    lines = ["# Gene-side analyses on the real GSE103584-derived table", "",
             f"- Subjects: {s['expression']} in the expression table; {s['matched_geo']} match a GEO sample title, "
             f"{s['matched_clinical']} a clinical Case ID; {s['used']} used. GEO vs clinical histology agree for "
             f"{s['geo_clinical_histology_agree']}/{s['matched_both']}, gender for {s['geo_clinical_gender_agree']}/"
             f"{s['matched_both']}.",
             f"- Genes: {g['in_table']} in the table, {g['genes_with_empty_cells']} with an empty cell "
             f"({g['empty_cells']} cells) dropped, {g['constant_dropped']} constant dropped: "
             f"**{g['kept']} genes kept**.",
             "- Variables: " + "; ".join(f"{v} {i['n1']}/{i['n0']}" + ("" if i["used"] else " (too few, left out)")
                                         for v, i in res["variables"].items()) + " (class 1 / class 0).", "",
             "## Metagenes (Ward on 1 - r)", "",
             "| metagenes | sizes | within-cluster r (per cluster) | random groups mean (p) | "
             "genes shuffled, reclustered mean/max (p) |",
             "|---|---|---|---|---|"]
    for k, m in res["metagenes"].items():
        lines.append(f"| {k} | {', '.join(map(str, m['sizes']))} | {_f(m['within_r'])} "
                     f"({', '.join(_f(r, 2) for r in m['within_r_per_cluster'])}) | "
                     f"{_f(m['null_random_groups_mean'])} ({_p(m['p_random_groups'])}) | "
                     f"{_f(m['null_shuffled_genes_mean'])}/{_f(m['null_shuffled_genes_max'])} "
                     f"({_p(m['p_shuffled_genes'])}) |")
    st = res["structure"]
    evr = st["pca_explained_variance_ratio"]
    lines += ["", "## Subject structure", "",
              f"- PCA explained variance PC1-5: {', '.join(_f(e) for e in evr[:5])} (cumulative {_f(sum(evr[:5]))}); "
              + (f"gene-shuffled max PC1 {_f(st['pca_null_explained_variance_ratio_max'][0])}; "
                 f"{st['pca_components_above_null_max']} leading components above the shuffled max."
                 if st["pca_null_explained_variance_ratio_max"] is not None else ""),
              "- Spearman rho of PC1 / PC2 / PC3 scores with: " + "; ".join(
                  f"{v} {'/'.join(_f(r, 2) for r in rs)}" for v, rs in st["pc1_3_spearman_with_variables"].items()),
              "- KMeans silhouette k=2..6: " + ", ".join(f"{k}: {_f(v)}" for k, v in st["silhouette"].items())
              + ("" if st["silhouette_null_mean"] is None else
                 "; gene-shuffled mean " + ", ".join(f"{_f(v)}" for v in st["silhouette_null_mean"].values())),
              f"- KMeans k=2 clusters vs histology (adeno, squamous) per cluster: {st['kmeans2_vs_histology_table']}, "
              f"ARI {_f(st['kmeans2_vs_histology_ari'], 2)}.", "",
              "## Association map: metagene expression vs clinical variables (Spearman, pooled permutation p, "
              "BH over each map)", ""]
    for k in maps_k:
        a = res["association"][k]
        lines.append(f"- **{k} metagenes**: {len(a['hits'])} of {np.size(a['rho'])} cells at "
                     f"q < {res['params']['alpha']}"
                     + (":" if a["hits"] else "."))
        for h in a["hits"]:
            lines.append(f"  - {h['metagene']} ~ {h['variable']}: rho {_f(h['rho'], 2)}, AUC {_f(h['auc'], 2)}, "
                         f"mean diff {_f(h['mean_diff'], 2)} z, q {_p(h['q'])} (n={h['n']})"
                         + ("" if "rho_within_site" not in h else
                            f"; within site rho {_f(h['rho_within_site'], 2)} (p {_p(h['p_within_site'])}; "
                            + ", ".join(f"{st} {_f(d['rho'], 2)} n={d['n']}" for st, d in h["rho_by_site"].items())
                            + ")") + "; top genes "
                         f"{', '.join(res['metagenes'][k]['top_genes'][int(h['metagene'].split('_')[1])][:5])}")
        none = [v for v in a["cols"] if not any(h["variable"] == v for h in a["hits"])]
        if none:
            lines.append("  - nothing for " + ", ".join(
                f"{v} (strongest |rho| {_f(abs(a['strongest_per_variable'][v]['rho']), 2)}, min q "
                f"{_p(a['strongest_per_variable'][v]['q'])})" for v in none))
    lines += ["", f"## Linear probes (ridge, 5-fold CV, {res['params']['n_perm_probe']} permutations)", "",
              "| variable | n | " + " | ".join(f"{c} R² (p)" for c in res["probes"]) + " |",
              "|---|---|" + "---|" * len(res["probes"])]
    for v in next(iter(res["probes"].values())):
        n = next(iter(res["probes"].values()))[v]["n"]
        lines.append(f"| {v} | {n} | " + " | ".join(f"{_f(res['probes'][c][v]['r2'])} ({_p(res['probes'][c][v]['p'])})"
                                                   for c in res["probes"]) + " |")
    lines += ["", "## What it shows", ""] + [f"- {t}" for t in interpret(res, maps_k, probe_k)]
    return "\n".join(lines)


def _held_within_site(res: dict, maps_k: list[int]) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for k in maps_k:
        for h in res["association"][k]["hits"]:
            if "p_within_site" in h:
                held = h["p_within_site"] is not None and h["p_within_site"] < 0.05 and \
                    np.sign(h["rho_within_site"]) == np.sign(h["rho"])
                t = out.setdefault(h["variable"], [0, 0])
                t[0] += int(held)
                t[1] += 1
    return {v: (a, b) for v, (a, b) in out.items()}


def interpret(res: dict, maps_k: list[int], probe_k: int) -> list[str]:
    out = []
    m = res["metagenes"]
    beats_shuffle = [k for k, v in m.items()
                     if v["null_shuffled_genes_max"] is not None and v["within_r"] > v["null_shuffled_genes_max"]]
    random_mean = np.mean([v["null_random_groups_mean"] for v in m.values()])
    out.append(f"Metagenes are co-expression modules: within-cluster r "
               f"{', '.join(_f(v['within_r'], 2) for v in m.values())} "
               f"for {', '.join(map(str, m))} metagenes vs about {_f(random_mean, 3)} "
               f"for random groups; above every one of {res['params']['n_perm_recluster']} reclustered gene-shuffled "
               f"matrices (within r up to {_f(max((v['null_shuffled_genes_max'] or 0) for v in m.values()), 3)}) for "
               f"{', '.join(map(str, beats_shuffle)) or 'no'} metagene count(s). The random-group p is small by "
               f"construction (the clusters were chosen for correlation); the shuffled null is the informative one.")
    weak = {k: [f"metagene_{c} ({v['sizes'][c]} genes, r {_f(v['within_r_per_cluster'][c], 2)})"
                for c, pc in enumerate(v["p_random_groups_per_cluster"]) if pc is None or pc >= 0.05]
            for k, v in m.items()}
    if any(weak.values()):
        out.append("Not every metagene is a module: "
                   + "; ".join(f"{k} metagenes: {', '.join(w)}" for k, w in weak.items() if w)
                   + " are no more co-expressed than random gene groups of their size "
                     "(a bin of weakly correlated genes).")
    st = res["structure"]
    sil = st["silhouette"]
    kbest = max(sil, key=lambda k: sil[k])
    out.append(("Subjects form no well-separated groups" if sil[kbest] < 0.25 else "Subjects form groups")
               + f": best silhouette {_f(sil[kbest])} (k={kbest})"
               + ("" if st["silhouette_null_mean"] is None else
                  f" vs {_f(st['silhouette_null_mean'][kbest])} for gene-shuffled data")
               + f"; PC1 explains {_f(st['pca_explained_variance_ratio'][0] * 100, 1)}% of the variance and follows "
               + ", ".join(f"{v} (rho {_f(rs[0], 2)})" for v, rs in sorted(
                   st["pc1_3_spearman_with_variables"].items(), key=lambda kv: -abs(kv[1][0]))[:3])
               + "; the k=2 "
               f"clusters {'track' if st['kmeans2_vs_histology_ari'] > 0.2 else 'do not track'} histology "
               f"(ARI {_f(st['kmeans2_vs_histology_ari'], 2)}).")
    for k in maps_k:
        a = res["association"][k]
        found = sorted({h["variable"] for h in a["hits"]})
        missing = [v for v in a["cols"] if v not in found]
        txt = f"{k} metagenes: "
        if found:
            txt += "; ".join(
                f"{v} with " + ", ".join(f"{h['metagene']} (rho {_f(h['rho'], 2)}, AUC {_f(h['auc'], 2)})"
                                         for h in a["hits"] if h["variable"] == v)
                for v in found)
        else:
            txt += "no metagene-variable association at q < " + str(res["params"]["alpha"])
        if missing:
            txt += f"; null for {', '.join(missing)}"
        tested = [h for h in a["hits"] if "p_within_site" in h]
        if tested:
            lost = [f"{h['metagene']}~{h['variable']}" for h in tested
                    if not (h["p_within_site"] < 0.05 and np.sign(h["rho_within_site"]) == np.sign(h["rho"]))]
            txt += (f"; within site (Stanford, VA; x shuffled within site) {len(tested) - len(lost)} of {len(tested)} "
                    f"hits stay at p < 0.05" + (f", not {', '.join(lost)}" if lost else ""))
        out.append(txt + ".")
    site_info = res["variables"].get("site_va")
    if site_info and site_info["used"]:
        counts = {k: sum(h["variable"] == "site_va" for h in res["association"][k]["hits"]) for k in maps_k}
        out.append("Recruiting site (VA vs Stanford)"
                   + (" is a major axis of this table" if any(counts.values()) else "")
                   + ": it associates with "
                   + ", ".join(f"{n} of {k}" for k, n in counts.items()) + " metagenes at q < "
                   + f"{res['params']['alpha']} (probe R² "
                   + ", ".join(f"{_f(pr['site_va']['r2'], 2)}" for pr in res["probes"].values())
                   + f"); VA patients are {res['site_crosstab']['VA_male']}/{res['site_crosstab']['VA']} men "
                   f"(Stanford {res['site_crosstab']['Stanford_male']}/{res['site_crosstab']['Stanford']}), so "
                   "an association with gender may be site. Hits (all maps) still at p < 0.05 within site: "
                   + ", ".join(f"{v} {held}/{tot}" for v, (held, tot) in _held_within_site(res, maps_k).items()) + ".")
    floor = 1 / (1 + res["params"]["n_perm_probe"])
    if floor >= 0.05:
        out.append(f"With {res['params']['n_perm_probe']} probe permutations no probe p can go below {_f(floor, 3)}: "
                   "the probe lines below cannot call anything decodable.")
    for c, pr in res["probes"].items():
        good = [f"{v} R² {_f(r['r2'], 2)} (p {_p(r['p'])})" for v, r in pr.items() if r["p"] < 0.05 and r["r2"] > 0]
        out.append(f"Probe from {c}: " + ("; ".join(good) if good else "nothing decodable at p < 0.05")
                   + "; R² <= 0 or p >= 0.05 for " + (", ".join(v for v, r in pr.items()
                                                              if not (r["p"] < 0.05 and r["r2"] > 0)) or "none") + ".")
    out.append("No images are paired with these genes: the clinical variables stand in for image features, so "
               "this checks the gene side of the pipeline on real data, not a radiogenomic map.")
    return out


# ---------------------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict:
    from radiogen.evaluation.codes import pca_codes
    from radiogen.figures import map_heatmap, save_figure

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    expr = read_expression(Path(args.expression))
    stage(f"expression: {expr['n_genes_table']} genes x {expr['n_subjects_table']} subjects read (genes x subjects, "
          f"comma-separated; data_prep.gene_table); {expr['genes_with_empty_cells']} genes with an empty cell "
          f"({expr['empty_cells']} cells) dropped, {expr['n_constant_dropped']} constant: {len(expr['genes'])} kept")
    geo = read_geo(Path(args.geo))
    clinical = read_clinical(Path(args.clinical))
    subjects_all = expr["subjects"]
    in_geo = [s for s in subjects_all if s in geo]
    in_clin = [s for s in subjects_all if s in clinical]
    both = [s for s in in_geo if s in clinical]
    hist_agree = sum(geo[s].get("histology", "") == clinical[s].get("Histology", "") for s in both)
    gender_agree = sum(geo[s].get("gender", "") == clinical[s].get("Gender", "") for s in both)
    stage(f"ids: {len(subjects_all)} expression subjects; {len(in_geo)} in GEO ({len(geo)} samples), {len(in_clin)} in "
          f"the clinical table ({len(clinical)} cases); histology agrees for {hist_agree}/{len(both)}, gender "
          f"{gender_agree}/{len(both)}")
    if not in_clin:
        raise SystemExit("no expression subject matches a clinical Case ID")
    rows = [subjects_all.index(s) for s in in_clin]
    subjects = in_clin
    z = zscore(expr["values"][rows])
    variables, var_info = encode(clinical, subjects, args.min_class)
    histology = np.array([{"Adenocarcinoma": 0.0, "Squamous cell carcinoma": 1.0}.get(
        clinical[s].get("Histology", ""), np.nan) for s in subjects])
    stage("variables: " + ", ".join(f"{v} {i['n1']}/{i['n0']}{'' if i['used'] else ' (left out)'}"
                                    for v, i in var_info.items()))

    counts = sorted(set(args.metagenes) | {args.probe_metagenes})
    mg, expressions = metagene_stage(z, expr["genes"], counts, n_perm_groups=args.n_perm_groups,
                                     n_perm_recluster=args.n_perm_recluster, seed=args.seed)
    stage("metagenes: " + "; ".join(f"{k}: within r {_f(v['within_r'])} (random {_f(v['null_random_groups_mean'])}, "
                                    f"shuffled {_f(v['null_shuffled_genes_mean'])}, p {_p(v['p_shuffled_genes'])})"
                                    for k, v in mg.items()))

    structure, tsne, labels2 = subject_stage(z, histology, variables, n_perm_null=args.n_perm_null, n_components=10,
                                             seed=args.seed)
    stage(f"subjects: PC1-3 {', '.join(_f(e) for e in structure['pca_explained_variance_ratio'][:3])}; silhouette "
          + ", ".join(f"k={k} {_f(v)}" for k, v in structure["silhouette"].items())
          + f"; k=2 vs histology ARI {_f(structure['kmeans2_vs_histology_ari'], 2)}")

    map_counts = sorted(set(args.metagenes))
    site = np.array([clinical[s].get(SITE_COLUMN, "") for s in subjects])
    assoc, maps = association_stage({k: expressions[k] for k in map_counts}, variables, n_perm=args.n_perm_map,
                                    alpha=args.alpha, seed=args.seed, strata=site)
    stage("association: " + "; ".join(f"{k} metagenes: {len(a['hits'])} cells at q < {args.alpha}"
                                      for k, a in assoc.items()))

    k = args.probe_metagenes
    codes = {f"metagenes_{k}": expressions[k][1], f"pca_{k}": pca_codes(z, k, seed=args.seed)}
    probes = probe_stage(codes, variables, n_perm=args.n_perm_probe, seed=args.seed)
    stage("probes: " + "; ".join(f"{c}: " + ", ".join(f"{v} R² {_f(r['r2'], 2)} p {_p(r['p'])}" for v, r in pr.items())
                                 for c, pr in probes.items()))

    figures = {
        "gene_correlation": save_figure(figure_gene_correlation(z, expressions[k][0], k), out / "gene_correlation.png"),
        "subjects": save_figure(figure_subjects(structure, tsne, histology, labels2, site), out / "subjects.png"),
        "association_map": save_figure(map_heatmap({f"{c} metagenes": maps[c] for c in map_counts}),
                                       out / "association_map.png"),
    }
    stage("figures: " + ", ".join(str(p) for p in figures.values()))

    res = {
        "inputs": {"expression": str(args.expression), "geo": str(args.geo), "clinical": str(args.clinical)},
        "params": {"metagenes": map_counts, "probe_metagenes": k, "n_perm_map": args.n_perm_map,
                   "n_perm_groups": args.n_perm_groups, "n_perm_recluster": args.n_perm_recluster,
                   "n_perm_probe": args.n_perm_probe, "n_perm_null": args.n_perm_null, "alpha": args.alpha,
                   "min_class": args.min_class, "seed": args.seed},
        "subjects": {"expression": len(subjects_all), "geo_samples": len(geo), "clinical_cases": len(clinical),
                     "matched_geo": len(in_geo), "matched_clinical": len(in_clin), "matched_both": len(both),
                     "used": len(subjects), "geo_clinical_histology_agree": hist_agree,
                     "geo_clinical_gender_agree": gender_agree, "ids": subjects},
        "genes": {"in_table": expr["n_genes_table"], "genes_with_empty_cells": expr["genes_with_empty_cells"],
                  "empty_cells": expr["empty_cells"], "constant_dropped": expr["n_constant_dropped"],
                  "kept": len(expr["genes"]), "names": expr["genes"], "reader_warnings": expr["reader_warnings"],
                  "input_gene_mean_abs_max": expr["raw_gene_mean_abs_max"],
                  "input_gene_std_range": expr["raw_gene_std_range"]},
        "variables": var_info,
        "site_crosstab": {**{st: int((site == st).sum()) for st in ("VA", "Stanford")},
                          **{f"{st}_male": int(((site == st) & (variables.get("male", np.zeros(len(site))) == 1)).sum())
                             for st in ("VA", "Stanford")}},
        "metagenes": mg,
        "structure": structure,
        "association": assoc,
        "probes": probes,
        "figures": {name: str(p) for name, p in figures.items()},
    }
    res["summary_md"] = summarise(res, map_counts, k)
    res["elapsed_s"] = round(time.time() - t0, 1)
    res = _json_safe(res)
    (out / "real_genes.json").write_text(json.dumps(res, indent=1))
    (out / "summary.md").write_text(res["summary_md"] + "\n")
    return res


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/real_genes")
    ap.add_argument("--expression", default=str(EXPRESSION))
    ap.add_argument("--geo", default=str(GEO))
    ap.add_argument("--clinical", default=str(CLINICAL))
    ap.add_argument("--metagenes", type=int, nargs="+", default=[4, 8, 16], help="metagene counts (maps)")
    ap.add_argument("--probe-metagenes", type=int, default=8, help="metagene count (and PCA size) of the probes")
    ap.add_argument("--n-perm-map", type=int, default=1000, help="permutations of the association map")
    ap.add_argument("--n-perm-groups", type=int, default=1000, help="random gene groups per metagene count")
    ap.add_argument("--n-perm-recluster", type=int, default=100, help="gene-shuffled reclusterings per count")
    ap.add_argument("--n-perm-probe", type=int, default=200, help="permutations of each linear probe")
    ap.add_argument("--n-perm-null", type=int, default=10, help="gene-shuffled matrices for PCA/silhouette")
    ap.add_argument("--min-class", type=int, default=10, help="fewest subjects per class to keep a variable")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    res = run(args)
    print()
    print(res["summary_md"])
    print(f"\n(wrote {Path(args.out) / 'real_genes.json'}, {Path(args.out) / 'summary.md'} and 3 figures; "
          f"{res['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
