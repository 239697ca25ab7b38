"""The radiogenomic-map benchmark: can the generator's map tell drivers from passengers where co-expression
cannot? Designs x map estimators x cohort seeds x training seeds, with intervals and paired differences.

    python scripts/bench_map.py --out runs/bench_map [--designs aligned,weak,drivers,interaction,null,mixed]
        [--cohort-seeds 0 1 2] [--train-seeds 0 1 2] [--subjects 120] [--steps 1500]
        [--variants stable,group-lasso] [--lasso-designs drivers] [--estimators a,b,...] [--quick]

Per design and cohort seed: `radiogen cohort --design D` (matrix 128) and `radiogen prep` at 32 px; per
variant and training seed: `radiogen train --local` of ablations/stable_tiny.yaml (variant `group-lasso`:
plus loss.phi_group_lasso, the sparsity prior on phi's gene weights, trained on the --lasso-designs only, where
sparsity is meant to help). Every map estimator of
radiogen.evaluation.estimators is fitted on the training subjects (genes normalised as the generator reads
them, the real nodules' phenotype proxies) and calibrated on the held-out ones; the maps without a generator
once per cohort seed, the generator's once per trained model. Each map is scored against the cohort's truth
(radiogen.evaluation.link_metrics). Beside the maps, each trained generator's fidelity: the Spearman rho
across subjects between the phenotype proxy it draws from a subject's genes and the subject's true program
(training and held-out subjects), with the real nodules' own rho as the ceiling.

Summaries over units (cohort seed, training seed): mean and a hierarchical bootstrap 95% interval (cohort
seeds resampled, then training seeds within each); for every model-based map (synthesis-*, regressor-*) the
paired difference of its per-program AUPRC against the better of `direct` and `classical` on that design
(chosen by mean AUPRC per program), with its interval; achieved FDP and power at q 0.05 and 0.10; on `null`
the family-wise error rate (share of units with any call) and the share of tested p-values below 0.05.
Writes OUT/bench_map.md (tables), OUT/bench_map.json (every unit's metrics and the summaries),
OUT/bench_map.png (per-program AUPRC with intervals, one panel per design) and prints the tables and the
wall-clock seconds of every stage. A re-run reuses cohorts, datasets, trainings and fitted maps (OUT/maps/*.json).
`--quick` is the reduced end-to-end form for tests (drivers and null, 16 subjects, 10 steps, one seed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STABLE_TINY = REPO / "ablations" / "stable_tiny.yaml"
VARIANTS = {"stable": [], "group-lasso": ["loss.phi_group_lasso=0.01"]}
PROGRAMS = ("size", "density", "irregularity", "texture")
FOLLOWED = ("size", "density")  # the programs the generator follows (the targets are stated on these)
BASELINES = ("direct", "classical")
LEVELS = ("0.05", "0.1")


def stage(msg: str) -> None:
    print(f"[bench_map {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare(out: Path, design: str, seed: int, subjects: int, matrix: int, bg_slices: int) -> tuple[Path, Path, dict]:
    """Cohort and 32 px dataset of one design and cohort seed (reused); returns their folders and timings."""
    from ray_jobs.cli import main as radiogen

    cohort, data, times = out / "cohorts" / f"{design}-c{seed}", out / "data" / f"{design}-c{seed}", {}
    if not (cohort / "truth.json").is_file():
        t = time.perf_counter()
        assert radiogen(["cohort", "--out", str(cohort), "--subjects", str(subjects), "--seed", str(seed),
                         "--matrix", str(matrix), "--design", design]) == 0
        times["cohort"] = time.perf_counter() - t
    if not (data / "manifest.json").is_file():
        t = time.perf_counter()
        assert radiogen(["prep", "--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"),
                         "--out", str(data), "--image-size", "32", "--bg-slices", str(bg_slices), "--workers",
                         "0"]) == 0
        times["prep"] = time.perf_counter() - t
    return cohort, data, times


def train(out: Path, data: Path, name: str, sets: list[str], seed: int, steps: int) -> tuple[Path, float]:
    """A finished `radiogen train --local` run of the stable tiny config (reused); (checkpoint, seconds)."""
    from ray_jobs.train import main as train_main

    runs = out / "runs"
    ckpt = runs / name / "checkpoints" / f"step_{steps:08d}" / "state.pt"
    if ckpt.is_file():
        return ckpt, 0.0
    t = time.perf_counter()
    argv = ["--config", str(STABLE_TINY), "--data", str(data), "--local", "--runs-dir", str(runs), "--name", name,
            "--max-steps", str(steps), "--set", "data.n_genes=null", "--set", f"train.seed={seed}",
            "--log-every", str(max(1, steps // 10)), "--val-every", str(steps), "--checkpoint-every", str(steps),
            "--tracking-uri", f"sqlite:///{runs.resolve() / 'mlflow.db'}"]
    for s in sets:
        argv += ["--set", s]
    assert train_main(argv) == 0, f"training {name} failed"
    return ckpt, time.perf_counter() - t


def fit_maps(cache: Path, data_dir: Path, truth_path: Path, names: list[str], budget, backgrounds: int,
             checkpoint: Path | None, seed: int) -> list[dict]:
    """Fit the named estimators (the generator's when a checkpoint is given) and score them; cached as JSON."""
    if cache.is_file():
        return json.loads(cache.read_text())
    import torch

    from radiogen import schema
    from radiogen.checkpoint import load_generator
    from radiogen.evaluation.estimators import MapInputs, Synthesizer, run
    from radiogen.evaluation.link_metrics import link_metrics
    from radiogen.evaluation.phenotype import proxies_np
    from radiogen.evaluation.pipeline import load_data
    from radiogen.evaluation.features import subject_means
    from radiogen.evaluation.truth_table import load_truth
    from radiogen.genes import apply_gene_stats

    torch.set_num_threads(1)  # small batches; the second core runs the other shard
    data = load_data(data_dir, backgrounds, seed)
    truth = load_truth(truth_path)
    truth.check(data.gene_names, data.subjects)
    links = truth.link_matrix(data.gene_names, PROGRAMS)
    means, ids = subject_means(proxies_np(data.images, data.masks), data.slice_subject)
    phenotype = means[[ids.index(s) for s in data.subjects]]
    manifest = schema.read_manifest(data_dir)
    synth, norm = None, "log_zscore"
    if checkpoint is not None:
        G, cfg = load_generator(checkpoint)
        synth, norm = Synthesizer(G, torch.as_tensor(data.backgrounds)[:, None], seed), cfg.data.gene_norm
    genes = apply_gene_stats(schema.gene_stats(manifest, norm), data.genes_raw)
    tr, ho = data.indices("train"), data.indices("heldout")
    inputs = MapInputs(genes[tr], phenotype[tr], data.gene_names, genes[ho], phenotype[ho], synth, seed)
    records = []
    if synth is not None:  # how well G follows the programs at all: its maps cannot be better than this
        from radiogen.evaluation.radiomap import spearman_matrix

        drawn, programs = synth.phenotype_np(genes), truth.programs_of(data.subjects, PROGRAMS)
        response = {}
        for split, idx in (("train", tr), ("heldout", ho)):
            for j, p in enumerate(PROGRAMS):
                for who, values in (("generator", drawn), ("real", phenotype)):
                    rho = spearman_matrix(values[idx, j:j + 1], programs[idx, j:j + 1])[0, 0] if len(idx) > 2 else 0
                    response[f"response/{who}/{split}/{p}"] = float(np.nan_to_num(rho))
    for name in names:
        t = time.perf_counter()
        est = run(inputs, [name], budget)[name]
        metrics = link_metrics(est, links, PROGRAMS)
        if est.pvalues is not None:
            tested = est.pvalues[np.isfinite(est.pvalues)]
            metrics["p_below_0.05"] = float(np.mean(tested < 0.05)) if len(tested) else math.nan
        records.append({"estimator": name, "metrics": metrics, "undefined": est.undefined, "note": est.note,
                        "seconds": time.perf_counter() - t})
    if synth is not None:
        records.append({"estimator": "program-response", "metrics": response, "undefined": None,
                        "note": "Spearman of the drawn (real) proxy with the true program", "seconds": 0.0})
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(records, default=lambda v: None) + "\n")
    return records


# ---------------------------------------------------------------------------------------------
# Summaries


def hierarchical_interval(by_cohort: dict[int, list[float]], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean: cohort seeds resampled, then training seeds within each."""
    groups = [np.asarray([v for v in vals if math.isfinite(v)]) for vals in by_cohort.values()]
    groups = [g for g in groups if len(g)]
    if sum(len(g) for g in groups) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    for i in range(n):
        picked = [groups[j] for j in rng.integers(len(groups), size=len(groups))]
        means[i] = np.mean(np.concatenate([g[rng.integers(len(g), size=len(g))] for g in picked]))
    return tuple(np.percentile(means, [2.5, 97.5]))  # type: ignore[return-value]


def summarise(units: list[dict]) -> dict:
    """design -> map -> metric -> {"mean", "low", "high", "n"}, plus paired differences against the baseline."""
    out: dict = {}
    for design in sorted({u["design"] for u in units}):
        rows = [u for u in units if u["design"] == design]
        maps = sorted({u["map"] for u in rows}, key=lambda m: [u["map"] for u in rows].index(m))
        table: dict = {}

        def values(map_name: str, key: str) -> dict[int, list[float]]:
            by: dict[int, list[float]] = {}
            for u in rows:
                if u["map"] == map_name:
                    v = u["metrics"].get(key)
                    by.setdefault(u["cohort_seed"], []).append(math.nan if v is None else float(v))
            return by

        keys = sorted({k for u in rows for k in u["metrics"]})
        for m in maps:
            table[m] = {}
            for k in keys:
                by = values(m, k)
                flat = [v for vs in by.values() for v in vs if math.isfinite(v)]
                low, high = hierarchical_interval(by)
                table[m][k] = {"mean": float(np.mean(flat)) if flat else math.nan, "low": low, "high": high,
                               "n": len(flat)}
            table[m]["undefined"] = sum(1 for u in rows if u["map"] == m and u["undefined"])
        for p in PROGRAMS:  # the better baseline per program, by mean AUPRC
            key = f"auprc/{p}"
            options = [b for b in BASELINES
                       if b in table and math.isfinite(table[b].get(key, {}).get("mean", math.nan))]
            if not options:
                continue
            best = max(options, key=lambda b: table[b][key]["mean"])
            base = {(u["cohort_seed"], u["train_seed"]): u["metrics"].get(key) for u in rows if u["map"] == best}
            for m in maps:
                if not m.startswith(("synthesis-", "regressor-")):
                    continue
                diff: dict[int, list[float]] = {}
                for u in rows:
                    if u["map"] == m:
                        ref = base.get((u["cohort_seed"], None), base.get((u["cohort_seed"], u["train_seed"])))
                        v = u["metrics"].get(key)
                        d = (v - ref) if v is not None and ref is not None else math.nan
                        diff.setdefault(u["cohort_seed"], []).append(d)
                flat = [v for vs in diff.values() for v in vs if math.isfinite(v)]
                low, high = hierarchical_interval(diff)
                table[m][f"diff/{p}"] = {"mean": float(np.mean(flat)) if flat else math.nan, "low": low,
                                         "high": high, "n": len(flat), "against": best}
        out[design] = table
    return out


def _ci(cell: dict | None, digits: int = 2) -> str:
    if not cell or not math.isfinite(cell.get("mean", math.nan)):
        return "n/a"
    if math.isfinite(cell.get("low", math.nan)):
        return f"{cell['mean']:.{digits}f} [{cell['low']:.{digits}f}, {cell['high']:.{digits}f}]"
    return f"{cell['mean']:.{digits}f}"


def response_table(summary: dict) -> str:
    """Each design's generators: Spearman of the phenotype drawn from a subject's genes with its true program."""
    lines = ["| design | generator | subjects | " + " | ".join(PROGRAMS) + " |", "|" + "---|" * (3 + len(PROGRAMS))]
    for design, table in summary.items():
        for m, t in table.items():
            if not m.startswith("program-response"):
                continue
            for split in ("train", "heldout"):
                for who in ("generator", "real"):
                    if who == "real" and "[" in m:
                        continue  # the ceiling is the same for every variant
                    variant = m[m.index("[") + 1:-1] if "[" in m else "stable"
                    label = variant if who == "generator" else "real nodules"
                    cells = [_ci(t.get(f"response/{who}/{split}/{p}")) for p in PROGRAMS]
                    lines.append(f"| {design} | {label} | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tables(summary: dict) -> str:
    lines = []
    for design, table in summary.items():
        table = {m: t for m, t in table.items() if not m.startswith("program-response")}
        first = next(iter(table.values()))
        linked = math.isfinite(first.get("auroc/pooled", {}).get("mean", math.nan)) or any(
            math.isfinite(t.get("auroc/pooled", {}).get("mean", math.nan)) for t in table.values())
        lines += ["", f"### {design}", ""]
        if linked:
            prev = {p: first.get(f"prevalence/{p}", {}).get("mean", math.nan) for p in PROGRAMS}
            header = ["map", *(f"AUPRC {p} (prev. {prev[p]:.3f})" for p in PROGRAMS), "pooled AUROC",
                      *(f"FDP / power q {q}" for q in LEVELS), *(f"Δ AUPRC {p} vs best of direct, classical"
                                                                 for p in FOLLOWED)]
        else:
            header = ["map", *(f"FWER q {q}" for q in LEVELS), "tested p < 0.05", "calls q 0.05"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for m, t in table.items():
            if linked:
                cells = [*(_ci(t.get(f"auprc/{p}")) for p in PROGRAMS), _ci(t.get("auroc/pooled")),
                         *(f"{_ci(t.get(f'fdp/q{q}'))} / {_ci(t.get(f'power/q{q}'))}" if f"fdp/q{q}" in t else "-"
                           for q in LEVELS),
                         *(_ci(t.get(f"diff/{p}")) + (f" (vs {t[f'diff/{p}']['against']})" if f"diff/{p}" in t else "")
                           for p in FOLLOWED)]
            else:
                cells = [*(_ci(t.get(f"fwer/q{q}")) if f"fwer/q{q}" in t else "-" for q in LEVELS),
                         _ci(t.get("p_below_0.05"), 3) if "p_below_0.05" in t else "-", _ci(t.get("calls/q0.05"), 1)]
            note = f" ({t['undefined']} units undefined)" if t.get("undefined") else ""
            lines.append("| " + " | ".join([m + note, *cells]) + " |")
    return "\n".join(lines).strip() + "\n"


def figure(summary: dict, path: Path) -> None:
    """Per-program AUPRC (size, density) of every map with its interval, one panel per design."""
    from matplotlib.figure import Figure

    from radiogen.figures import save_figure

    designs = list(summary)
    cols = min(3, len(designs))  # a grid that a README page can show at a readable size
    rows = math.ceil(len(designs) / cols)
    fig = Figure(figsize=(5.5 * cols, 4.6 * rows))
    for i, design in enumerate(designs):
        ax = fig.add_subplot(rows, cols, i + 1)
        table = {m: t for m, t in summary[design].items() if not m.startswith("program-response")}
        maps = list(table)
        x = np.arange(len(maps))
        for j, (p, colour) in enumerate(zip(FOLLOWED, ("tab:blue", "tab:orange"))):
            cells = [table[m].get(f"auprc/{p}", {}) for m in maps]
            mean = np.array([c.get("mean", math.nan) for c in cells])
            err = np.array([[c.get("mean", math.nan) - c.get("low", math.nan) for c in cells],
                            [c.get("high", math.nan) - c.get("mean", math.nan) for c in cells]])
            ax.bar(x + (j - 0.5) * 0.38, np.nan_to_num(mean), 0.38, yerr=np.nan_to_num(err), color=colour,
                   label=f"{p}", capsize=2)
            prev = table[maps[0]].get(f"prevalence/{p}", {}).get("mean", math.nan)
            if math.isfinite(prev) and prev > 0:
                ax.axhline(prev, color=colour, linestyle="--", linewidth=0.8)
        if not any(math.isfinite(table[m].get("auprc/size", {}).get("mean", math.nan)) for m in maps):
            ax.text(0.5, 0.5, "no true links:\nsee the FWER table", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(design)
        ax.set_xticks(x, maps, rotation=75, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("AUPRC (dashed: prevalence)" if i % cols == 0 else "")
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from radiogen.evaluation.estimators import ESTIMATORS, GENERATOR_ESTIMATORS, Budget

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="benchmark folder (reused on a re-run)")
    ap.add_argument("--designs", default="aligned,weak,drivers,interaction,null,mixed")
    ap.add_argument("--cohort-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--subjects", type=int, default=120)
    ap.add_argument("--steps", type=int, default=1500, help="training steps per model (default 1500)")
    ap.add_argument("--variants", default="stable,group-lasso", help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--lasso-designs", default="drivers",
                    help="designs the group-lasso variant is trained on (default drivers, the design it is meant for)")
    ap.add_argument("--estimators", default=",".join(ESTIMATORS))
    ap.add_argument("--backgrounds", type=int, default=2, help="fixed backgrounds of the generator's maps")
    ap.add_argument("--quick", action="store_true", help="reduced end-to-end form for tests")
    args = ap.parse_args(argv)
    budget, matrix, bg_slices = Budget(), 128, 10
    if args.quick:
        args.designs, args.cohort_seeds, args.train_seeds, args.subjects, args.steps = "drivers,null", [0], [0], 16, 10
        args.variants, args.backgrounds, matrix, bg_slices = "stable", 2, 64, 4
        budget = Budget(n_perm=20, readout=4, hrt_top=2, hrt_resamples=3, hrt_backgrounds=1, ig_steps=4)
    designs, variants = args.designs.split(","), args.variants.split(",")
    names = args.estimators.split(",")
    free = [n for n in names if n not in GENERATOR_ESTIMATORS]
    generator = [n for n in names if n in GENERATOR_ESTIMATORS]
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the benchmark keeps its own sqlite store under --out
    out = Path(args.out).resolve()
    start, spent = time.perf_counter(), {"cohort": 0.0, "prep": 0.0, "train": 0.0, "maps": 0.0}
    units: list[dict] = []
    for design in designs:
        for c in args.cohort_seeds:
            cohort, data, times = prepare(out, design, c, args.subjects, matrix, bg_slices)
            for k, v in times.items():
                spent[k] += v
            stage(f"{design} c{c}: maps without a generator")
            cache = out / "maps" / f"{design}-c{c}-data.json"
            fresh = not cache.is_file()
            for r in fit_maps(cache, data, cohort / "truth.json", free, budget, args.backgrounds, None, 0):
                spent["maps"] += r["seconds"] if fresh else 0.0
                units.append({"design": design, "cohort_seed": c, "train_seed": None, "map": r["estimator"], **r})
            for variant in variants:
                if variant == "group-lasso" and design not in args.lasso_designs.split(","):
                    continue
                for t in args.train_seeds:
                    name = f"{design}-c{c}-{variant}-s{t}-{args.steps}"
                    stage(f"{name}: train and fit the generator's maps")
                    ckpt, seconds = train(out, data, name, VARIANTS[variant], t, args.steps)
                    spent["train"] += seconds
                    cache = out / "maps" / f"{name}.json"
                    fresh = not cache.is_file()
                    for r in fit_maps(cache, data, cohort / "truth.json", generator, budget, args.backgrounds, ckpt,
                                      t):
                        spent["maps"] += r["seconds"] if fresh else 0.0
                        label = r["estimator"] + ("" if variant == "stable" else f" [{variant}]")
                        units.append({"design": design, "cohort_seed": c, "train_seed": t, "map": label, **r})
    summary = summarise(units)
    text = tables(summary) + "\n### generator fidelity (Spearman of the drawn proxy with the true program)\n\n" \
        + response_table(summary)
    wall = time.perf_counter() - start
    # Wall-clock seconds per stage (perf_counter), not CPU time: with shards sharing the cores they run longer.
    budget_line = (f"stage seconds this run (wall clock, one process; reused stages count 0): cohort "
                   f"{spent['cohort']:.0f}, prep {spent['prep']:.0f}, train {spent['train']:.0f}, maps "
                   f"{spent['maps']:.0f}; wall {wall:.0f}")
    header = (f"bench_map: designs {designs}, cohort seeds {args.cohort_seeds}, training seeds {args.train_seeds}, "
              f"{args.subjects} subjects, {args.steps} steps, variants {variants}; mean [hierarchical bootstrap 95% "
              f"interval] over units (cohort seed, training seed)")
    print(header + "\n\n" + text + "\n" + budget_line)
    (out / "bench_map.md").write_text(f"{header}\n\n{text}\n{budget_line}\n")
    figure(summary, out / "bench_map.png")
    result = {"settings": {"designs": designs, "cohort_seeds": args.cohort_seeds, "train_seeds": args.train_seeds,
                           "subjects": args.subjects, "steps": args.steps, "variants": variants, "estimators": names,
                           "budget": vars(budget) if hasattr(budget, "__dict__") else str(budget),
                           "quick": args.quick},
              "stage_seconds": spent, "wall_seconds": wall, "summary": summary, "units": units}
    clean = json.loads(json.dumps(result, default=lambda v: None), parse_constant=lambda c: None)  # NaN -> null
    (out / "bench_map.json").write_text(json.dumps(clean, indent=1) + "\n")
    print(f"written: {out / 'bench_map.md'}, {out / 'bench_map.png'}, {out / 'bench_map.json'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
