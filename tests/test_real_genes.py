"""scripts/real_genes.py on the real GSE103584-derived gene table (../shared/data/real), few permutations."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def _load_script():
    spec = importlib.util.spec_from_file_location("real_genes_script", REPO / "scripts" / "real_genes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(matrix):
    return [v for row in matrix for v in row]


def _rows(lines, first_cells):
    """The markdown table rows of the report that start with these cells."""
    head = "| " + " | ".join(map(str, first_cells)) + " |"
    return [line for line in lines if line.startswith(head)]


def _check_report_tables(script, res, lines):
    """The report is tables of the numbers in real_genes.json, with no conclusions written in words."""
    import real_genes_report  # beside the script, which put scripts/ on sys.path

    for module in (script, real_genes_report):
        assert not hasattr(module, "interpret") and not hasattr(module, "_held_within_site")
    words = [line for line in lines if line and not line.startswith(("#", "|"))]
    assert len(words) == 4, words  # one note per section: which nulls / how many permutations
    for header in ("| quantity | value |", "| metagenes | within r | random groups mean |",
                   "| metagenes | metagene | genes | within r | p random groups | top genes |",
                   "| PC | explained variance |", "| KMeans k | silhouette | shuffled mean |",
                   "| metagene | variable | n | rho | AUC | mean diff | p | q | q < 0.05 |",
                   "| variable | n | metagenes_8 R² | metagenes_8 null mean | metagenes_8 p | pca_8 R² |"):
        assert any(line.startswith(header) for line in lines), header
    assert _rows(lines, ["genes kept", res["genes"]["kept"]])
    for k, m in res["metagenes"].items():
        assert _rows(lines, [k, f"{m['within_r']:.3f}", f"{m['null_random_groups_mean']:.3f}"]), k
        assert len([line for line in lines if line.startswith(f"| {k} | metagene_")]) == int(k)
    st = res["structure"]
    assert _rows(lines, [1, f"{st['pca_explained_variance_ratio'][0]:.3f}"])
    assert _rows(lines, [2, f"{st['silhouette']['2']:.3f}", f"{st['silhouette_null_mean']['2']:.3f}"])
    for k, a in res["association"].items():  # every cell of the map is a row; the q < alpha column marks the hits
        start = lines.index(f"### {k} metagenes") + 4  # heading, blank, header, separator
        n_cells = len(a["rows"]) * len(a["cols"])
        cells = lines[start:start + n_cells]
        assert all(line.startswith("| metagene_") for line in cells) and lines[start + n_cells] == ""
        assert sum(line.split(" | ")[8] == "yes" for line in cells) == len(a["hits"]) > 0
        for h in a["hits"]:
            assert _rows(cells, [h["metagene"], h["variable"], h["n"], f"{h['rho']:.2f}", f"{h['auc']:.2f}"]), h
    for variable, r in res["probes"]["metagenes_8"].items():
        assert _rows(lines, [variable, r["n"], f"{r['r2']:.3f}", f"{r['null_mean']:.3f}"]), variable


def test_real_genes_on_real_table(real_data, tmp_path, capsys):
    root = real_data / "nsclc_radiogenomics"
    out = tmp_path / "real_genes"
    script = _load_script()
    rc = script.main([
        "--out", str(out),
        "--expression", str(root / "expression" / "split_dev_df_zscore_100patients.csv"),
        "--geo", str(root / "geo" / "GSE103584_series_matrix.txt"),
        "--clinical", str(root / "clinical" / "NSCLCR01Radiogenomic_DATA_LABELS_2018-05-22_1500-shifted.csv"),
        "--metagenes", "4", "8", "--probe-metagenes", "8", "--n-perm-map", "200", "--n-perm-groups", "50",
        "--n-perm-recluster", "3", "--n-perm-probe", "19", "--n-perm-null", "2",
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "real_genes.json").read_text())
    assert {"inputs", "params", "subjects", "genes", "variables", "metagenes", "structure", "association",
            "probes", "figures", "summary_md"} <= set(res)
    summary = (out / "summary.md").read_text()
    assert summary == res["summary_md"]
    # Quiet: one line per stage and where the tables are, not the tables themselves.
    lines = printed.strip().splitlines()
    assert len(lines) <= 10 and lines[-1].startswith(f"wrote {out / 'summary.md'}"), printed
    assert summary.startswith("# Gene-side analyses on the real GSE103584-derived table")
    _check_report_tables(script, res, summary.splitlines())

    # The table: 1000 genes x 100 R01 subjects, 534 genes with an empty cell, every subject in GEO and TCIA.
    s, g = res["subjects"], res["genes"]
    assert s["expression"] == 100 and s["matched_geo"] == 100 and s["matched_clinical"] == 100 and s["used"] == 100
    assert len(s["ids"]) == 100 and all(i.startswith("R01-") for i in s["ids"])
    assert s["geo_clinical_histology_agree"] == 100 and s["geo_clinical_gender_agree"] == 100
    assert g["in_table"] == 1000 and g["genes_with_empty_cells"] == 534 and g["kept"] == 466
    assert g["kept"] + g["genes_with_empty_cells"] + g["constant_dropped"] == g["in_table"]
    assert len(g["names"]) == 466 and len(set(g["names"])) == 466
    # Binary variables: counts as in the clinical table; classes add up to at most the subjects.
    v = res["variables"]
    assert (v["histology_squamous"]["n1"], v["histology_squamous"]["n0"]) == (25, 72)
    assert all(x["n1"] + x["n0"] + x["n_missing"] == 100 for x in v.values())

    for k in ("4", "8"):
        m = res["metagenes"][k]
        assert len(m["sizes"]) == int(k) and sum(m["sizes"]) == 466 and min(m["sizes"]) >= 1
        assert -1 <= m["within_r"] <= 1 and 0 < m["p_random_groups"] <= 1 and 0 < m["p_shuffled_genes"] <= 1
        a = res["association"][k]
        assert len(a["rows"]) == int(k) and a["cols"] == [n for n, x in v.items() if x["used"]]
        for name in ("rho", "p", "q", "auc"):
            assert len(a[name]) == int(k) and all(len(row) == len(a["cols"]) for row in a[name])
        qs, ps, rhos = _cells(a["q"]), _cells(a["p"]), _cells(a["rho"])
        assert all(q is not None and 0.0 <= q <= 1.0 for q in qs)
        assert all(p is not None and 0.0 < p <= 1.0 for p in ps)
        assert all(r is not None and -1.0 <= r <= 1.0 for r in rhos)
        assert all(h["q"] < res["params"]["alpha"] for h in a["hits"])
    # Squamous vs adenocarcinoma is the strongest known expression difference in NSCLC: the 8-metagene
    # map must find it even with 200 permutations.
    assert any(h["variable"] == "histology_squamous" for h in res["association"]["8"]["hits"])

    st = res["structure"]
    assert len(st["pca_explained_variance_ratio"]) == 10 and 0 < sum(st["pca_explained_variance_ratio"]) <= 1
    assert set(st["silhouette"]) == {"2", "3", "4", "5", "6"}
    assert all(-1 <= x <= 1 for x in st["silhouette"].values())

    assert set(res["probes"]) == {"metagenes_8", "pca_8"}
    for probe in res["probes"].values():
        for r in probe.values():
            assert math.isfinite(r["r2"]) and r["r2"] <= 1 and 0 < r["p"] <= 1 and r["n"] >= 20

    assert set(res["figures"]) == {"gene_correlation", "subjects", "association_map"}
    for path in res["figures"].values():
        data = Path(path).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, path
