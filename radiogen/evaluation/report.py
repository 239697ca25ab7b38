"""The evaluation report: metric names, the key-metric summary lines, and the markdown report.

Metrics are flat: `eval/<split>/<who>/<group>/<name>` (`metric_name`), split "train" or "heldout"
(val + test subjects), who one of WHO. The report is self-contained markdown that links its figures
as `figures/<name>.png` beside it; a value that is undefined (too few subjects, no nodule drawn) is
NaN in the metrics and "n/a" in the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

WHO = {
    "data": "genes and real phenotype (no generator)",
    "model": "proposed (evaluated model)",
    "baseline": "baseline (MC-GAN)",
    "genes_pca": "raw genes (PCA)",
    "classical": "classical pipeline (metagenes)",
    "genes_direct": "single genes vs real phenotype (reference)",
    "real": "real nodules (ceiling)",
}
PROGRAMS = ("size", "density", "irregularity", "texture")


def metric_name(split: str, who: str, *parts: str) -> str:
    return "/".join(("eval", split, who, *parts))


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if float(value).is_integer() and abs(value) < 10**6:
        return str(int(value))  # counts
    if value != 0 and (abs(value) >= 10**4 or abs(value) < 10**-3):
        return f"{value:.2e}"
    return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


MIN_SPLIT_SUBJECTS = 8
"""Below this many subjects a split's rank correlations, AUROCs and p values are reported with a warning: the
null SD of a rank correlation over n subjects is 1/sqrt(n - 1), 0.38 at 8 and 0.71 at 3."""


def small_split_warning(split: str, n: int) -> str | None:
    """The warning for a split of `n` subjects, or None when it has enough."""
    if not 0 < n < MIN_SPLIT_SUBJECTS:
        return None
    spread = f"a rank correlation over {n} subjects has a null SD of {1 / math.sqrt(n - 1):.2f}" if n > 1 else \
        "no rank correlation exists over 1 subject"
    return (f"warning: the {split} split has {n} subject{'s' if n > 1 else ''}, fewer than {MIN_SPLIT_SUBJECTS}: its "
            f"rank correlations, AUROCs and p values are not meaningful ({spread}); evaluate more subjects")


def key_metrics(metrics: dict[str, float], splits: Sequence[str] = ("train", "heldout")) -> list[str]:
    """One line per split with the headline numbers (printed last by `radiogen eval`)."""
    lines = []
    for split in splits:
        m = lambda *p: metrics.get(metric_name(split, *p), math.nan)  # noqa: E731
        n = metrics.get(metric_name(split, "n_subjects"), 0)
        if not n > 0:
            continue
        line = (f"{split} ({int(n)} subjects): "
                f"frechet {fmt(m('model', 'realism', 'frechet_radiomic'))} "
                f"(real-vs-real floor {fmt(m('real', 'realism', 'frechet_radiomic'))}), "
                f"mask area ratio {fmt(m('model', 'realism', 'mask_area_ratio'))}, "
                f"background L1 {fmt(m('model', 'background', 'l1'))}, "
                f"retrieval top1 {fmt(m('model', 'conditioning', 'top1'))} "
                f"(chance {fmt(m('model', 'conditioning', 'chance_top1'))}, "
                f"p {fmt(m('model', 'conditioning', 'p_top1'))}), "
                f"map agreement {fmt(m('model', 'map', 'agreement'))}, "
                f"map cells significant {fmt(m('model', 'map', 'n_significant'))} "
                f"(classical {fmt(m('classical', 'map', 'n_significant'))})")
        if metric_name(split, "model", "truth", "response/size") in metrics:
            line += (f", program response size {fmt(m('model', 'truth', 'response/size'))} density "
                     f"{fmt(m('model', 'truth', 'response/density'))} decoy "
                     f"{fmt(m('model', 'truth', 'response/decoy'))}")
        lines.append(line)
        if (warning := small_split_warning(split, int(n))) is not None:
            lines.append(warning)
    return lines


def _cell(rows: dict, key: str, digits: int = 2) -> str:
    return fmt(rows.get(key), digits)


def estimator_lines(rows: Sequence, programs: Sequence[str] = ("size", "density")) -> list[str]:
    """The short estimators table `radiogen eval` and the demo print: one line per map."""
    lines = []
    for r in rows:
        name = r.estimator if r.who in ("data", "model") else f"{r.estimator} ({WHO[r.who].split(' (')[0]})"
        if r.undefined:
            lines.append(f"  {name}: {r.undefined}")
            continue
        m = r.metrics
        ranking = ", ".join(f"{p} {_cell(m, f'auroc/{p}')} / {_cell(m, f'auprc/{p}')} (prevalence "
                            f"{_cell(m, f'prevalence/{p}', 3)})" for p in programs if f"auroc/{p}" in m)
        calls = (f"calls at q 0.05: {fmt(m['calls/q0.05'])}" + (f" (FDP {_cell(m, 'fdp/q0.05')}, power "
                                                                 f"{_cell(m, 'power/q0.05')})" if "fdp/q0.05" in m
                                                                else "")) if "calls/q0.05" in m else "no calls"
        head = f"AUROC / AUPRC {ranking}; pooled AUROC {_cell(m, 'auroc/pooled')}; " if ranking else ""
        lines.append(f"  {name}: {head}{calls}")
    return lines


def estimators_section(rows: Sequence, programs: Sequence[str] = PROGRAMS) -> list[str]:
    """The markdown estimators table: per program AUROC / AUPRC with the prevalence, pooled AUROC, calls."""
    out = ["", "## Radiogenomic map estimators", "",
           "Every estimator is fitted on the training subjects only (their genes, normalised as the model reads them, "
           "and their real nodules' phenotype proxies: soft mask area, mean intensity inside the mask, isoperimetric "
           "ratio, interior local RMS); the held-out subjects serve only the calibration of the model-based maps "
           "(holdout randomisation test). direct: per-gene Spearman, permutation p. classical: metagenes (k by "
           "silhouette, or fixed), hierarchical gene-level calls. regressor-*: lasso / kernel ridge from genes to the "
           "real phenotype, read by +1 SD gene shifts. synthesis-*: the generator over fixed backgrounds and noise "
           "(correlation: the earlier learned score; intervention: +1 SD of one gene or one co-expression module; "
           "gradient: Captum integrated gradients). Calls: Benjamini-Hochberg over the whole map at q. A map read off "
           "mostly empty synthetic masks is undefined.", ""]
    prev = rows[0].metrics if rows else {}
    header = ["map", "fitted by", *(f"{p} AUROC / AUPRC (prev. {_cell(prev, f'prevalence/{p}', 3)})" for p in programs
                                    if f"auroc/{p}" in prev),
              "pooled AUROC", "calls q 0.05 (FDP, power)", "calls q 0.10 (FDP, power)", "how"]
    table = []
    for r in rows:
        m = r.metrics
        if r.undefined:
            table.append([r.estimator, WHO[r.who], *(["-"] * (len(header) - 4)), r.undefined, r.note])
            continue
        calls = [f"{fmt(m.get(f'calls/q{q}'))} ({_cell(m, f'fdp/q{q}')}, {_cell(m, f'power/q{q}')})"
                 if f"calls/q{q}" in m else "-" for q in ("0.05", "0.1")]
        table.append([r.estimator, WHO[r.who], *(f"{_cell(m, f'auroc/{p}')} / {_cell(m, f'auprc/{p}')}"
                                                 for p in programs if f"auroc/{p}" in prev),
                      _cell(m, "auroc/pooled"), *calls, r.note])
    return out + [_table(header, table)]


def render_report(*, context: dict[str, str], metrics: dict[str, float], figures: dict[str, dict],
                  top_links: dict[str, list[dict]], has_baseline: bool, estimators: Sequence = (),
                  splits: Sequence[str] = ("train", "heldout")) -> str:
    """The markdown report.

    context: ordered "what was evaluated" entries (model, baseline, dataset, fingerprint, settings);
    figures: file name -> {"caption", ...} (from pipeline.Evaluation); top_links: "<split>/<who>" ->
    strongest significant map cells.
    """
    splits = [s for s in splits if metrics.get(f"eval/{s}/n_subjects", 0) > 0]
    models = ["model"] + (["baseline"] if has_baseline else [])
    has_truth = any(metric_name(s, "model", "truth", "response/size") in metrics for s in splits)

    def val(split: str, *parts: str) -> str:
        return fmt(metrics.get(metric_name(split, *parts)))

    def r2_p(split: str, who: str, group: str, program: str) -> str:
        return f"{val(split, who, group, f'probe_r2/{program}')} (p {val(split, who, group, f'probe_p/{program}')})"

    cols = [f"{WHO[w].split(' (')[0]}, {s}" for s in splits for w in models]
    out = ["# radiogen evaluation", ""]
    out += [f"- **{k}**: {v}" for k, v in context.items()]
    out += ["", "## Summary", ""] + [f"- {line}" for line in key_metrics(metrics, splits)]
    counts = [[label, *(fmt(metrics.get(metric_name(s, key))) for s in splits)]
              for key, label in (("n_subjects", "subjects"), ("n_slices", "real nodule slices"))]
    out += ["", _table(["", *splits], counts)]

    out += ["", "## Realism", "",
            "Radiomic Fréchet distance and KID between pyradiomics features (first order, 2D shape, GLCM) of real "
            "and synthetic nodules, z-scored on the real set (no pretrained network: values compare runs on the "
            "same real set only). Synthetic nodules are the gene swap: every subject's genes over the same "
            "fixed backgrounds. Background fidelity: L1 and SSIM to the input background outside the dilated mask.",
            ""]
    rows = [("frechet_radiomic", "realism", "Fréchet (radiomic)"), ("kid_radiomic", "realism", "KID (radiomic)"),
            ("empty_mask_fraction", "realism", "empty synthetic masks"),
            ("mask_area_ratio", "realism", "mask area synthetic / real"),
            ("l1", "background", "background L1"), ("ssim", "background", "background SSIM")]
    table = [[label, *(val(s, w, g, k) for s in splits for w in models)] for k, g, label in rows]
    table.insert(1, ["Fréchet floor: real vs real (other splits)",
                     *(val(s, "real", "realism", "frechet_radiomic") for s in splits for _ in models)])
    out.append(_table(["metric", *cols], table))

    out += ["", "## Conditioning", "",
            "Gene swap over fixed backgrounds and noise: does a subject's synthetic nodule (features averaged over "
            "the backgrounds) retrieve that subject's real nodule among all subjects? Both sets are z-scored across "
            "subjects on their own, so only how subjects differ counts (realism covers the offset). Chance = "
            "k / subjects; p from permuting the subject pairing. Map agreement (the truth-free map objective): mean "
            "over the four phenotype proxies of Spearman rho between subjects' synthetic and real values.", ""]
    rows = [("top1", "top-1 retrieval"), ("chance_top1", "chance top-1"), ("p_top1", "p top-1"),
            ("top5", "top-5 retrieval"), ("chance_top5", "chance top-5"), ("p_top5", "p top-5")]
    table = [[label, *(val(s, w, "conditioning", k) for s in splits for w in models)] for k, label in rows]
    table.append(["map agreement", *(val(s, w, "map", "agreement") for s in splits for w in models)])
    out.append(_table(["metric", *cols], table))

    reps = ["genes_pca", *models]
    out += ["", "## Code structure", "",
            "Silhouette of KMeans clusters of each representation; cross-validated ridge probe (R², permutation p) "
            "from the representation to each program's real nodule feature "
            "(size: shape2D_PixelSurface, density: firstorder_Mean, irregularity: shape2D_Sphericity, texture: "
            "firstorder_Entropy).", ""]
    header = ["representation", *(f"{h}, {s}" for s in splits for h in ("silhouette", *PROGRAMS))]
    out.append(_table(header, [[WHO[w], *(cell for s in splits for cell in
                                         [val(s, w, "code", "silhouette"),
                                          *(r2_p(s, w, "code", p) for p in PROGRAMS)])] for w in reps]))

    out += ["", "## Radiogenomic map", "",
            "Spearman rho across subjects between each code dimension (learned) or metagene (classical: Ward "
            "clusters of co-expressed genes, then the same features, then the same test) and each nodule feature; "
            "two-sided permutation p, Benjamini-Hochberg FDR over all cells, significant at q < 0.05. Cluster rows: "
            "membership of each code cluster vs the features.", ""]
    whos = [*models, "classical"]
    header = ["map", *(f"{h}, {s}" for s in splits for h in ("significant / cells", "max |rho|", "cluster rows sig."))]
    out.append(_table(header, [[WHO[w], *(cell for s in splits for cell in
                                         [f"{val(s, w, 'map', 'n_significant')} / {val(s, w, 'map', 'n_cells')}",
                                          val(s, w, "map", "max_abs_rho"),
                                          val(s, w, "map", "clusters_n_significant") if w != "classical" else "-"])]
                               for w in whos]))
    for s in splits:
        for w in whos:
            cells = top_links.get(f"{s}/{w}", [])
            if cells:
                listed = [f"{c['row']} ~ {c['feature']} (rho {fmt(c['rho'])}, q {fmt(c['q'])})" for c in cells]
                out += ["", f"Strongest significant cells, {WHO[w]}, {s}: " + "; ".join(listed)]

    out += estimators_section(estimators)
    if has_truth:
        out += ["", "## Ground truth (synthetic cohort)", "",
                "Probe: cross-validated R² of each true program from the representation (p from a permutation null). "
                "The link metrics of every map are in the estimators table above.", ""]
        out += ["", "Program response: every subject's genes over the same fixed backgrounds; Spearman rho across "
                "subjects of the synthetic nodules' mean mask area with the true size program, of their mean "
                "intensity inside the mask with the density program, of their isoperimetric ratio with the "
                "irregularity program and of their high-frequency RMS inside the mask with the texture program "
                "(radiogen.evaluation.truth); decoy: the larger |rho| of area or intensity with the texture program, "
                "which drives neither. Real nodules: the same on the subjects' real slices (the ceiling).", ""]
        response = (*PROGRAMS, "decoy")
        out.append(_table(["nodules", *(f"{r}, {s}" for s in splits for r in response)],
                          [[WHO[w], *(val(s, w, "truth", f"response/{r}") for s in splits for r in response)]
                           for w in [*models, "real"]]))
        out += [""]
        header = ["representation", *(f"{p}, {s}" for s in splits for p in PROGRAMS)]
        out.append(_table(header, [[WHO[w], *(r2_p(s, w, "truth", p) for s in splits for p in PROGRAMS)]
                                   for w in [*models, "classical", "genes_pca"]]))

    out += ["", "## Figures", ""]
    for name, info in figures.items():
        out += [f"![{name}](figures/{name})", "", f"*{info['caption']}*", ""]
    return "\n".join(out).rstrip() + "\n"
