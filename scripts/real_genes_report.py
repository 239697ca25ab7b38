"""The outputs of scripts/real_genes.py: real_genes.json, the markdown tables of summary.md, the figures.

`summarise` writes tables of the measured values only (no conclusions in words), so the text cannot claim
more than the numbers beside it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def json_safe(obj):
    """Plain JSON types: string keys, lists for arrays, None for NaN and infinities."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return str(obj) if isinstance(obj, np.str_) else obj


def write(res: dict, out: Path) -> dict:
    """real_genes.json and summary.md in out; returns the JSON-safe result with its summary_md."""
    res = json_safe(res)
    res["summary_md"] = summarise(res)
    (out / "real_genes.json").write_text(json.dumps(res, indent=1))
    (out / "summary.md").write_text(res["summary_md"])
    return res


def fmt(x, nd: int = 3) -> str:
    """x to nd decimals; "nan" for None (a NaN in the JSON) and non-finite values."""
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def fmt_p(x) -> str:
    """A p or q value: 3 decimals, scientific below 0.001."""
    return "nan" if x is None or not np.isfinite(x) else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def _table(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""])


def _section(title: str, *notes: str) -> list[str]:
    return [f"## {title}", "", *notes, *([""] if notes else [])]


def inputs_tables(res: dict) -> list[str]:
    s, g = res["subjects"], res["genes"]
    both = s["matched_both"]
    rows = [("subjects in the expression table", s["expression"]), ("GEO samples", s["geo_samples"]),
            ("clinical cases", s["clinical_cases"]), ("expression subjects in GEO", s["matched_geo"]),
            ("expression subjects in the clinical table", s["matched_clinical"]), ("subjects used", s["used"]),
            ("GEO / clinical histology agree", f"{s['geo_clinical_histology_agree']}/{both}"),
            ("GEO / clinical gender agree", f"{s['geo_clinical_gender_agree']}/{both}"),
            ("genes in the table", g["in_table"]), ("genes with an empty cell (dropped)", g["genes_with_empty_cells"]),
            ("empty cells", g["empty_cells"]), ("constant genes dropped", g["constant_dropped"]),
            ("genes kept", g["kept"])]
    out = _section("Inputs") + _table(("quantity", "value"), rows)
    out += _table(("variable", "coding", "class 1", "class 0", "missing", "used"),
                  [(v, i["coding"], i["n1"], i["n0"], i["n_missing"], "yes" if i["used"] else "no")
                   for v, i in res["variables"].items()])
    ct = res["site_crosstab"]
    return out + _table(("site", "subjects", "male"), [(st, ct[st], ct[f"{st}_male"]) for st in ("VA", "Stanford")])


def metagene_tables(res: dict) -> list[str]:
    m = res["metagenes"]
    out = _section("Metagenes (Ward on 1 - r): mean within-cluster gene-gene Pearson r",
                   f"Nulls: {res['params']['n_perm_groups']} random gene groups of the same sizes; "
                   f"{res['params']['n_perm_recluster']} gene-shuffled matrices, reclustered.")
    out += _table(("metagenes", "within r", "random groups mean", "random groups q95", "p random groups",
                   "shuffled mean", "shuffled max", "p shuffled"),
                  [(k, fmt(v["within_r"]), fmt(v["null_random_groups_mean"]), fmt(v["null_random_groups_q95"]),
                    fmt_p(v["p_random_groups"]), fmt(v["null_shuffled_genes_mean"]), fmt(v["null_shuffled_genes_max"]),
                    fmt_p(v["p_shuffled_genes"])) for k, v in m.items()])
    return out + _table(("metagenes", "metagene", "genes", "within r", "p random groups", "top genes"),
                        [(k, f"metagene_{c}", size, fmt(v["within_r_per_cluster"][c], 2),
                          fmt_p(v["p_random_groups_per_cluster"][c]), ", ".join(v["top_genes"][c][:5]))
                         for k, v in m.items() for c, size in enumerate(v["sizes"])])


def structure_tables(res: dict) -> list[str]:
    st = res["structure"]
    evr = st["pca_explained_variance_ratio"]
    null_mean = st["pca_null_explained_variance_ratio_mean"] or [None] * len(evr)
    null_max = st["pca_null_explained_variance_ratio_max"] or [None] * len(evr)
    out = _section("Subject structure", f"Null: {res['params']['n_perm_null']} gene-shuffled matrices.")
    out += _table(("quantity", "value"),
                  [("leading PCs above the shuffled max", fmt(st["pca_components_above_null_max"], 0)),
                   ("KMeans k=2 cluster sizes", ", ".join(map(str, st["kmeans2_sizes"]))),
                   ("KMeans k=2 vs histology ARI", fmt(st["kmeans2_vs_histology_ari"]))])
    out += _table(("PC", "explained variance", "cumulative", "shuffled mean", "shuffled max"),
                  [(i + 1, fmt(e), fmt(c), fmt(a), fmt(b))
                   for i, (e, c, a, b) in enumerate(zip(evr, st["pca_cumulative"], null_mean, null_max))])
    pcs = st["pc1_3_spearman_with_variables"]
    out += _table(("Spearman rho with", *(f"PC{i + 1}" for i in range(len(next(iter(pcs.values()), []))))),
                  [(v, *(fmt(r, 2) for r in rs)) for v, rs in pcs.items()])
    sil_mean, sil_max = st["silhouette_null_mean"] or {}, st["silhouette_null_max"] or {}
    out += _table(("KMeans k", "silhouette", "shuffled mean", "shuffled max"),
                  [(k, fmt(s), fmt(sil_mean.get(k)), fmt(sil_max.get(k))) for k, s in st["silhouette"].items()])
    return out + _table(("KMeans k=2 cluster", "adenocarcinoma", "squamous"),
                        [(c, *row) for c, row in enumerate(st["kmeans2_vs_histology_table"])])


def _cell(a: dict, c: int, j: int, within: dict) -> tuple:
    """One row of the association table: map cell (metagene c, variable j), with its within-site test if any."""
    mg, v = a["rows"][c], a["cols"][j]
    h = within.get((mg, v))
    site = ("", "", "") if h is None else (fmt(h["rho_within_site"], 2), fmt_p(h["p_within_site"]), ", ".join(
        f"{s} {fmt(d['rho'], 2)} (n={d['n']})" for s, d in h["rho_by_site"].items()))
    return (mg, v, a["n"][v], *(fmt(a[key][c][j], 2) for key in ("rho", "auc", "mean_diff")), fmt_p(a["p"][c][j]),
            fmt_p(a["q"][c][j]), "yes" if a["significant"][c][j] else "no", *site)


def association_tables(res: dict) -> list[str]:
    alpha = res["params"]["alpha"]
    out = _section("Association map: metagene expression vs clinical variables",
                   f"Spearman rho, pooled permutation p ({res['params']['n_perm_map']} permutations), BH q over "
                   "each map; AUC: probability that a class-1 subject has the higher expression; mean diff in z "
                   f"units; rows by q. Within-site columns (x permuted within site) for cells with q < {alpha}.")
    for k, a in res["association"].items():
        within = {(h["metagene"], h["variable"]): h for h in a["hits"] if "p_within_site" in h}

        def order(cell: tuple[int, int]) -> tuple[float, float]:
            q, rho = a["q"][cell[0]][cell[1]], a["rho"][cell[0]][cell[1]]
            return (math.inf if q is None else q, -abs(rho or 0.0))

        cells = sorted(((c, j) for c in range(len(a["rows"])) for j in range(len(a["cols"]))), key=order)
        out += [f"### {k} metagenes", ""]
        out += _table(("metagene", "variable", "n", "rho", "AUC", "mean diff", "p", "q", f"q < {alpha}",
                       "rho within site", "p within site", "rho per site"), [_cell(a, c, j, within) for c, j in cells])
    return out


def probe_tables(res: dict) -> list[str]:
    n_perm = res["params"]["n_perm_probe"]
    probes = res["probes"]
    out = _section("Linear probes (ridge, 5-fold CV, cross-validated R²)",
                   f"{n_perm} permutations per probe: the smallest attainable p is {fmt_p(1 / (1 + n_perm))}.")
    variables = next(iter(probes.values()), {})
    return out + _table(("variable", "n", *(f"{c} {x}" for c in probes for x in ("R²", "null mean", "p"))),
                        [(v, variables[v]["n"], *(s for c in probes for s in (
                            fmt(probes[c][v]["r2"]), fmt(probes[c][v]["null_mean"]), fmt_p(probes[c][v]["p"]))))
                         for v in variables])


def summarise(res: dict) -> str:
    lines = ["# Gene-side analyses on the real GSE103584-derived table", ""]
    for part in (inputs_tables, metagene_tables, structure_tables, association_tables, probe_tables):
        lines += part(res)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- figures
def save_figures(out: Path, *, z: np.ndarray, labels: np.ndarray, k: int, structure: dict, seed: int,
                 histology: np.ndarray, labels2: np.ndarray, site: np.ndarray, maps: dict) -> dict[str, Path]:
    """gene_correlation.png (genes ordered by the k metagenes), subjects.png (PCA against the null, t-SNE of
    the subjects by histology, KMeans k=2 and site), association_map.png (the maps); name -> path."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from radiogen.figures import map_heatmap, save_figure

    out.mkdir(parents=True, exist_ok=True)
    pca20 = PCA(n_components=min(20, len(z) - 1), random_state=seed).fit_transform(z)
    tsne = TSNE(n_components=2, perplexity=min(20.0, (len(z) - 1) / 3), init="pca", method="exact",
                random_state=seed).fit_transform(pca20)
    return {"gene_correlation": save_figure(figure_gene_correlation(z, labels, k), out / "gene_correlation.png"),
            "subjects": save_figure(figure_subjects(structure, tsne, histology, labels2, site), out / "subjects.png"),
            "association_map": save_figure(map_heatmap({f"{c} metagenes": m for c, m in maps.items()}),
                                           out / "association_map.png")}


def figure_gene_correlation(z: np.ndarray, labels: np.ndarray, k: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = np.argsort(labels, kind="stable")
    r = (z.T @ z / len(z))[np.ix_(order, order)]
    fig = Figure(figsize=(6.0, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(r, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    for e in np.cumsum(np.bincount(labels, minlength=k))[:-1] - 0.5:
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
    if structure["pca_null_explained_variance_ratio_max"] is not None:
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
