"""The gene side of radiogen's evaluation on the real GSE103584-derived table (no images are paired).

    python scripts/real_genes.py [--out runs/real_genes] [--metagenes 4 8 16] [--n-perm-map 1000] ...

Inputs (defaults under ../shared/data/real/nsclc_radiogenomics): the third-party expression table (genes x
subjects, z-scored log10(x+1), empty cells where GEO had NA), the GEO series matrix and the TCIA clinical table.
Stages: read the table with data_prep.gene_table (genes with an empty cell dropped, as in the paper); match R01
ids to GEO and clinical records; metagenes (radiomap.metagenes, Ward on 1 - r) per count, their within-cluster
gene-gene r against random gene groups and against reclustered gene-shuffled matrices; subject structure (PCA,
KMeans silhouette k = 2..6, both against gene-shuffled matrices; ARI of k = 2 with histology); the association
map of metagenes with binary clinical variables (radiomap.association_map per variable on the subjects where it
is known, BH over each map, cells with q < alpha re-tested within recruiting site); linear probes
(codes.linear_probe) from metagenes and from PCA of the same size.

Prints one line per stage; writes OUT/summary.md (tables of every measured value; real_genes_report.py),
OUT/real_genes.json and the figures gene_correlation.png, subjects.png (PCA, t-SNE), association_map.png.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.preprocessing import scale as zscore  # per column; a constant column keeps scale 1

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(REPO), str(REPO / "scripts")) if p not in sys.path]  # + real_genes_report

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
    # Not a phenotype: the recruiting site (Stanford or the Palo Alto VA). Its patients differ in gender,
    # smoking and histology, so it is mapped too and associations are re-tested within site.
    "site_va": ("Patient affiliation", {"VA"}, {"Stanford"}, "VA (1) vs Stanford (0) recruitment"),
}
SITE_COLUMN = "Patient affiliation"


def stage(msg: str) -> None:
    print(f"[real_genes {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def shuffle_genes(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each gene (column) permuted independently across subjects: marginals kept, co-expression gone."""
    return np.take_along_axis(z, rng.random(z.shape).argsort(axis=0), axis=0)


# ---------------------------------------------------------------------------------------------- inputs
def read_expression(path: Path) -> tuple[dict, np.ndarray, list[str]]:
    """(the genes part of real_genes.json, values (subjects, genes kept), subject ids) of a genes x subjects table."""
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
    genes = {"in_table": len(table.genes), "genes_with_empty_cells": genes_with_empty, "empty_cells": empty_cells,
             "constant_dropped": len(constant), "kept": len(sel.names), "names": list(map(str, sel.names)),
             "reader_warnings": list(table.warnings), "input_gene_mean_abs_max": float(np.abs(values.mean(0)).max()),
             "input_gene_std_range": [float(values.std(0).min()), float(values.std(0).max())]}
    return genes, values, subjects


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
        labels, expr = expressions[k] = metagenes(z, k, seed=seed)
        sums, pairs = _within_sums(r, labels, k)
        overall = float(sums.sum() / pairs.sum())
        rng = np.random.default_rng(seed + k)
        null = [_within_sums(r, rng.permutation(labels), k) for _ in range(n_perm_groups)]
        null_overall = np.array([s.sum() / pr.sum() for s, pr in null])
        with np.errstate(invalid="ignore", divide="ignore"):  # a one-gene cluster has no pairs: NaN
            per_cluster = sums / pairs
            null_cluster = np.array([s / pr for s, pr in null]).reshape(n_perm_groups, k)
        p_groups = (1 + (null_overall >= overall - 1e-12).sum()) / (1 + n_perm_groups)
        p_cluster = (1 + (null_cluster >= per_cluster - 1e-12).sum(0)) / (1 + n_perm_groups)
        p_cluster[~np.isfinite(per_cluster)] = np.nan
        null_shuffled = np.empty(n_perm_recluster)
        for i in range(n_perm_recluster):
            zs = zscore(shuffle_genes(z, rng))
            s, pr = _within_sums(zs.T @ zs / n, metagenes(zs, k, seed=seed)[0], k)
            null_shuffled[i] = s.sum() / pr.sum()
        p_shuffled = (1 + (null_shuffled >= overall - 1e-12).sum()) / (1 + n_perm_recluster)
        # The genes that follow each metagene most closely (correlation with its expression).
        corr = z.T @ zscore(expr) / n  # (G, k)
        top = [[genes[g] for g in sorted(np.flatnonzero(labels == c), key=lambda g: -corr[g, c])[:6]]
               for c in range(k)]
        results[k] = {"sizes": np.bincount(labels, minlength=k).tolist(), "within_r": overall,
                      "within_r_per_cluster": per_cluster, "null_random_groups_mean": float(null_overall.mean()),
                      "null_random_groups_q95": float(np.quantile(null_overall, 0.95)), "p_random_groups": p_groups,
                      "p_random_groups_per_cluster": p_cluster,
                      "null_shuffled_genes_mean": float(null_shuffled.mean()) if n_perm_recluster else None,
                      "null_shuffled_genes_max": float(null_shuffled.max()) if n_perm_recluster else None,
                      "p_shuffled_genes": p_shuffled if n_perm_recluster else None, "top_genes": top}
    return results, expressions


def subject_stage(z: np.ndarray, histology: np.ndarray, variables: dict[str, np.ndarray], *, n_perm_null: int,
                  n_components: int, seed: int) -> tuple[dict, np.ndarray]:
    from scipy import stats
    from sklearn.decomposition import PCA
    from sklearn.metrics.cluster import adjusted_rand_score, contingency_matrix

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
    clusters = {k: cluster_codes(z, k, seed=seed) for k in ks}
    labels2 = clusters[2][0]
    nulls = [zscore(shuffle_genes(z, rng)) for _ in range(n_perm_null)]
    null_evr = np.array([PCA(n_components=nc, random_state=seed).fit(zs).explained_variance_ratio_
                         for zs in nulls]).reshape(-1, nc)
    null_sil = np.array([[cluster_codes(zs, k, seed=seed)[1] for k in ks] for zs in nulls]).reshape(-1, len(ks))
    known = np.isfinite(histology)
    ari = float(adjusted_rand_score(histology[known].astype(int), labels2[known]))
    n_signal = int(np.argmin(np.append(evr > null_evr.max(0), False))) if n_perm_null else None
    out = {"pca_explained_variance_ratio": evr, "pca_cumulative": np.cumsum(evr),
           "pca_null_explained_variance_ratio_mean": null_evr.mean(0) if n_perm_null else None,
           "pca_null_explained_variance_ratio_max": null_evr.max(0) if n_perm_null else None,
           "pca_components_above_null_max": n_signal, "pc1_3_spearman_with_variables": pc_rho,
           "silhouette": {k: clusters[k][1] for k in ks},
           "silhouette_null_mean": dict(zip(ks, null_sil.mean(0))) if n_perm_null else None,
           "silhouette_null_max": dict(zip(ks, null_sil.max(0))) if n_perm_null else None,
           "kmeans2_sizes": np.bincount(labels2).tolist(), "kmeans2_vs_histology_ari": ari,
           # rows: the two clusters; columns: adenocarcinoma, squamous
           "kmeans2_vs_histology_table": contingency_matrix(labels2[known], histology[known])}
    return out, labels2


def within_strata(x: np.ndarray, y: np.ndarray, strata: np.ndarray, *, n_perm: int,
                  rng: np.random.Generator) -> dict:
    """Spearman rho of x and y inside each stratum, their subject-weighted mean, and a two-sided
    permutation p of that mean with x shuffled within strata (a stratum where x or y is constant, or
    with fewer than 4 subjects, is left out)."""
    from scipy import stats

    units = []  # (stratum, centred ranks of x and of y scaled to unit norm)
    for s in np.unique(strata):
        m = strata == s
        a, b = (stats.rankdata(v[m]) - (m.sum() + 1) / 2 for v in (x, y))
        if m.sum() >= 4 and np.linalg.norm(a) > 1e-12 and np.linalg.norm(b) > 1e-12:
            units.append((str(s), a / np.linalg.norm(a), b / np.linalg.norm(b)))
    by = {s: {"rho": float(a @ b), "n": len(a)} for s, a, b in units}
    if not units:
        return {"rho": float("nan"), "p": float("nan"), "by_stratum": by}
    w = np.array([len(a) for _, a, _ in units], dtype=float)
    w /= w.sum()
    observed = float(sum(wi * (a @ b) for wi, (_, a, b) in zip(w, units)))
    null = np.array([sum(wi * (a[rng.permutation(len(a))] @ b) for wi, (_, a, b) in zip(w, units))
                     for _ in range(n_perm)])
    return {"rho": observed, "p": (1 + (np.abs(null) >= abs(observed) - 1e-12).sum()) / (1 + n_perm),
            "by_stratum": by}


def association_stage(expressions: dict, variables: dict[str, np.ndarray], *, n_perm: int, alpha: float,
                      seed: int, strata: np.ndarray | None = None,
                      strata_variable: str = "site_va") -> tuple[dict, dict]:
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    from radiogen.evaluation.radiomap import AssociationMap, association_map

    names = list(variables)
    results, maps = {}, {}
    for k, (_, expr) in expressions.items():
        rows = [f"metagene_{c}" for c in range(k)]
        rho, p, auc, diff = (np.full((k, len(names)), np.nan) for _ in range(4))
        n_used = {}
        for j, v in enumerate(names):
            y = variables[v]
            ok = np.isfinite(y)
            am = association_map(expr[ok], y[ok][:, None], row_names=rows, col_names=[v], n_perm=n_perm,
                                 alpha=alpha, seed=seed + 1000 * k + j, null="pooled")
            rho[:, j], p[:, j] = am.rho[:, 0], am.p[:, 0]
            n_used[v] = int(ok.sum())
            auc[:, j] = [roc_auc_score(y[ok], expr[ok, c]) for c in range(k)]
            diff[:, j] = expr[ok & (y == 1)].mean(0) - expr[ok & (y == 0)].mean(0)
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
            for h in (h for h in hits if h["variable"] != strata_variable):
                y = variables[h["variable"]]
                ok = np.isfinite(y)
                w = within_strata(expr[ok, rows.index(h["metagene"])], y[ok], strata[ok], n_perm=n_perm, rng=rng)
                h.update(rho_within_site=w["rho"], p_within_site=w["p"], rho_by_site=w["by_stratum"])
        strongest = np.nanargmax(np.abs(rho), axis=0)
        best = {v: {"metagene": rows[c], "rho": float(rho[c, j]), "q": float(np.nanmin(q[:, j]))}
                for j, (v, c) in enumerate(zip(names, strongest))}
        results[k] = {"rows": rows, "cols": names, "n": n_used, "rho": rho, "p": p, "q": q, "auc": auc,
                      "mean_diff": diff, "significant": sig, "hits": hits, "strongest_per_variable": best}
    return results, maps


def probe_stage(codes: dict[str, np.ndarray], variables: dict[str, np.ndarray], *, n_perm: int, seed: int) -> dict:
    from radiogen.evaluation.codes import linear_probe

    def probe(x: np.ndarray, y: np.ndarray) -> dict:
        ok = np.isfinite(y)
        res = linear_probe(x[ok], y[ok], n_splits=5, n_perm=n_perm, seed=seed)
        return {**{key: float(res[key][0]) for key in ("r2", "p", "null_mean")}, "n": int(ok.sum())}

    return {c: {v: probe(x, y) for v, y in variables.items()} for c, x in codes.items()}


# ---------------------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict:
    import real_genes_report as report
    from radiogen.evaluation.codes import pca_codes

    t0 = time.time()
    f = report.fmt
    genes, values, subjects_all = read_expression(Path(args.expression))
    stage(f"expression: {genes['in_table']} genes x {len(subjects_all)} subjects; {genes['genes_with_empty_cells']} "
          f"genes with an empty cell and {genes['constant_dropped']} constant dropped: {genes['kept']} kept")
    geo, clinical = read_geo(Path(args.geo)), read_clinical(Path(args.clinical))
    in_geo = [s for s in subjects_all if s in geo]
    subjects = [s for s in subjects_all if s in clinical]
    both = [s for s in in_geo if s in clinical]
    ids = {"expression": len(subjects_all), "geo_samples": len(geo), "clinical_cases": len(clinical),
           "matched_geo": len(in_geo), "matched_clinical": len(subjects), "matched_both": len(both),
           "used": len(subjects), **{f"geo_clinical_{key}_agree": sum(  # GEO "histology", clinical "Histology"
               geo[s].get(key, "") == clinical[s].get(key.capitalize(), "") for s in both)
               for key in ("histology", "gender")}}
    stage("subjects: " + ", ".join(f"{key} {n}" for key, n in ids.items()))
    if not subjects:
        raise SystemExit("no expression subject matches a clinical Case ID")
    z = zscore(values[[subjects_all.index(s) for s in subjects]])
    variables, var_info = encode(clinical, subjects, args.min_class)
    histology = np.array([{"Adenocarcinoma": 0.0, "Squamous cell carcinoma": 1.0}.get(
        clinical[s].get("Histology", ""), np.nan) for s in subjects])
    site = np.array([clinical[s].get(SITE_COLUMN, "") for s in subjects])
    stage("variables (class 1/class 0): " + ", ".join(f"{v} {i['n1']}/{i['n0']}{'' if i['used'] else ' (left out)'}"
                                                      for v, i in var_info.items()))

    map_counts, k = sorted(set(args.metagenes)), args.probe_metagenes
    mg, expressions = metagene_stage(z, genes["names"], sorted(set(map_counts) | {k}), seed=args.seed,
                                     n_perm_groups=args.n_perm_groups, n_perm_recluster=args.n_perm_recluster)
    stage("metagenes: within r " + ", ".join(f"{c}: {f(v['within_r'])}" for c, v in mg.items()))
    structure, labels2 = subject_stage(z, histology, variables, n_perm_null=args.n_perm_null, n_components=10,
                                       seed=args.seed)
    stage(f"structure: PC1 {f(structure['pca_explained_variance_ratio'][0])}, silhouette k=2 "
          f"{f(structure['silhouette'][2])}, k=2 vs histology ARI {f(structure['kmeans2_vs_histology_ari'])}")
    assoc, maps = association_stage({c: expressions[c] for c in map_counts}, variables, n_perm=args.n_perm_map,
                                    alpha=args.alpha, seed=args.seed, strata=site)
    stage("association: " + ", ".join(f"{c} metagenes {len(a['hits'])} cells at q < {args.alpha}"
                                      for c, a in assoc.items()))
    codes = {f"metagenes_{k}": expressions[k][1], f"pca_{k}": pca_codes(z, k, seed=args.seed)}
    probes = probe_stage(codes, variables, n_perm=args.n_perm_probe, seed=args.seed)
    stage(f"probes: {len(codes)} codes x {len(variables)} variables")
    out = Path(args.out)
    figures = report.save_figures(out, z=z, labels=expressions[k][0], k=k, structure=structure, seed=args.seed,
                                  histology=histology, labels2=labels2, site=site, maps=maps)
    stage("figures: " + ", ".join(str(p) for p in figures.values()))

    male = variables.get("male", np.zeros(len(site))) == 1
    res = {"inputs": {"expression": str(args.expression), "geo": str(args.geo), "clinical": str(args.clinical)},
           "params": {"metagenes": map_counts, **{a: getattr(args, a) for a in (
               "probe_metagenes", "n_perm_map", "n_perm_groups", "n_perm_recluster", "n_perm_probe", "n_perm_null",
               "alpha", "min_class", "seed")}},
           "subjects": {**ids, "ids": subjects}, "genes": genes, "variables": var_info,
           "site_crosstab": {**{st: int((site == st).sum()) for st in ("VA", "Stanford")},
                             **{f"{st}_male": int(((site == st) & male).sum()) for st in ("VA", "Stanford")}},
           "metagenes": mg, "structure": structure, "association": assoc, "probes": probes,
           "figures": {name: str(p) for name, p in figures.items()}, "elapsed_s": round(time.time() - t0, 1)}
    return report.write(res, out)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/real_genes")
    for name, default in (("expression", EXPRESSION), ("geo", GEO), ("clinical", CLINICAL)):
        ap.add_argument(f"--{name}", default=str(default))
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
    # One line per stage (printed above) and where the tables are: quiet by default.
    print(f"wrote {Path(args.out) / 'summary.md'} (tables of every measured value), "
          f"{Path(args.out) / 'real_genes.json'} and {len(res['figures'])} figures in {res['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
