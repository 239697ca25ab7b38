"""Learnability: does training recover the synthetic cohort's known gene -> phenotype map, and better than
the classical pipeline? Cohort -> prep at 32 px -> `radiogen train --local` per config and seed -> `radiogen eval`.

    python scripts/bench_learnability.py --out runs/learnability [--subjects 120] [--steps 3000] [--seeds 0 1 2]
        [--config LABEL=CONFIG[:key=value,...]] ... [--quick]

Defaults compare the paper's method with the stable configuration, both at the tiny size:
`paper=ablations/tiny.yaml` and `stable=ablations/stable_tiny.yaml` (add e.g.
`--config mcgan=ablations/tiny.yaml:generator.arch=mcgan` for the baseline).
The first table holds the targets, mean +- SD over seeds, on training and held-out (val + test) subjects:
program response (Spearman of the gene-swapped nodules' area with the size program and mean intensity with
the density program; decoy = max |rho| of either with the texture program), mask area ratio (synthetic /
real) and the fraction of empty masks, the radiomic Fréchet distance at the first and the last validation
during training, link AUROC of the learned map (synthesis-correlation, the score this benchmark was built
with) beside the classical pipeline's (8 metagenes), both fitted on the training subjects (no held-out
value: the estimators of `radiogen eval` are never refitted on held-out subjects; scripts/bench_map.py
compares every map estimator), and the training time. The cohort is of the aligned design, as measured.
The second: per-program probe R² of the true programs from the learned code, the classical metagenes
and raw-gene PCA, and gene-swap retrieval. The classical and PCA rows do not depend on the model.

Everything lands under --out (cohort/, data/, runs/ with a sqlite MLflow store, eval/<run>/report.md)
and is reused on a re-run: finished trainings and evaluations are not repeated. The markdown table
is printed and written with all per-run numbers to OUT/learnability.json. `--quick` is a reduced
end-to-end form for tests (10 subjects, 10 steps, one seed, few permutations).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "ablations" / "tiny.yaml")
STABLE_TINY = str(REPO / "ablations" / "stable_tiny.yaml")
DEFAULT_CONFIGS = [f"paper={TINY}", f"stable={STABLE_TINY}"]
VALIDATIONS = 4  # validations per training run: the Fréchet distance's course
PROGRAMS = ("size", "density", "irregularity", "texture")
SPLITS = ("train", "heldout")


def parse_config(spec: str) -> tuple[str, str, list[str]]:
    """LABEL=CONFIG[:key=value,...] -> (label, config path, --set overrides)."""
    label, sep, rest = spec.partition("=")
    if not sep or not label:
        raise SystemExit(f"--config {spec!r}: expected LABEL=CONFIG[:key=value,...]")
    path, _, sets = rest.partition(":")
    return label, path, [s for s in sets.split(",") if s]


def stage(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare(out: Path, subjects: int, seed: int, workers: int) -> Path:
    from ray_jobs.cli import main as radiogen

    cohort, data = out / "cohort", out / "data"
    if not (cohort / "truth.json").is_file():
        stage(f"cohort: {subjects} subjects")
        assert radiogen(["cohort", "--out", str(cohort), "--subjects", str(subjects), "--seed", str(seed),
                         "--matrix", "128", "--design", "aligned"]) == 0
    if not (data / "manifest.json").is_file():
        stage("prep at 32 px")
        assert radiogen(["prep", "--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"),
                         "--out", str(data), "--image-size", "32", "--bg-slices", "10", "--workers", str(workers)]) == 0
    return data


def train_and_eval(out: Path, data: Path, label: str, config: str, sets: list[str], seed: int, steps: int,
                   eval_args: list[str]) -> dict:
    from ray_jobs.eval import main as evaluate
    from ray_jobs.train import main as train

    name = f"{label}-s{seed}-{steps}"
    runs, report = out / "runs", out / "eval" / name
    if not (report / "metrics.json").is_file():
        if not (runs / name / "checkpoints" / f"step_{steps:08d}" / "state.pt").is_file():
            stage(f"train {name}")
            argv = ["--config", config, "--data", str(data), "--local", "--runs-dir", str(runs), "--name", name,
                    "--max-steps", str(steps), "--set", "data.n_genes=null", "--set", f"train.seed={seed}",
                    "--log-every", str(max(1, steps // 10)), "--val-every", str(max(1, steps // VALIDATIONS)),
                    "--checkpoint-every", str(steps),
                    "--tracking-uri", f"sqlite:///{runs.resolve() / 'mlflow.db'}"]
            for s in sets:
                argv += ["--set", s]
            assert train(argv) == 0, f"training {name} failed"
        stage(f"eval {name}")
        assert evaluate(["--checkpoint", str(runs / name), "--data", str(data), "--truth",
                         str(out / "cohort" / "truth.json"), "--out", str(report), "--no-mlflow", "--seed", str(seed),
                         *eval_args]) == 0, f"evaluating {name} failed"
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    return metrics | training_course(runs, name)


def training_course(runs: Path, name: str) -> dict[str, float]:
    """From the run's MLflow record: val/frechet_radiomic at the first and the last validation, and the
    training's wall time (s)."""
    from mlflow.tracking import MlflowClient

    from ray_jobs.tracking import RUN_NAME_TAG

    client = MlflowClient(tracking_uri=f"sqlite:///{runs.resolve() / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(exps, f"tags.`{RUN_NAME_TAG}` = '{name}'")
    if not found:
        return {}
    run = found[0]
    history = sorted(client.get_metric_history(run.info.run_id, "val/frechet_radiomic"), key=lambda m: m.step)
    out = {"train/seconds": (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else math.nan}
    if history:
        out |= {"train/frechet_first": history[0].value, "train/frechet_last": history[-1].value}
    return out


def pick(metrics: dict, split: str, who: str, *parts: str) -> float:
    value = metrics.get("/".join(("eval", split, who, *parts)))
    return math.nan if value is None else float(value)


def summary_of(metrics: dict) -> dict[str, float]:
    """The benchmark's numbers of one run, flat: "<split>/<quantity>"."""
    out = {}
    for split in SPLITS:
        row = {"auroc/learned": pick(metrics, split, "model", "links", "synthesis-correlation", "auroc", "pooled"),
               "auroc/classical": pick(metrics, split, "data", "links", "classical-k8", "auroc", "pooled"),
               "top1": pick(metrics, split, "model", "conditioning", "top1"),
               "top1_chance": pick(metrics, split, "model", "conditioning", "chance_top1"),
               "frechet": pick(metrics, split, "model", "realism", "frechet_radiomic"),
               "mask_area_ratio": pick(metrics, split, "model", "realism", "mask_area_ratio"),
               "empty": pick(metrics, split, "model", "realism", "empty_mask_fraction"),
               "map_agreement": pick(metrics, split, "model", "map", "agreement")}
        for who in ("model", "real"):
            for r in ("size", "density", "decoy"):
                row[f"response/{who}/{r}"] = pick(metrics, split, who, "truth", f"response/{r}")
        for who, key in (("model", "learned"), ("classical", "classical"), ("genes_pca", "pca")):
            for p in PROGRAMS:
                row[f"probe_r2/{key}/{p}"] = pick(metrics, split, who, "truth", f"probe_r2/{p}")
        out |= {f"{split}/{k}": v for k, v in row.items()}
    for k in ("frechet_first", "frechet_last", "seconds"):
        out[f"course/{k}"] = float(metrics.get(f"train/{k}", math.nan))
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def cell(values: list[float]) -> str:
    m, sd = mean_sd(values)
    if not math.isfinite(m):
        return "n/a"
    return f"{m:.2f}" if len(values) < 2 else f"{m:.2f} ± {sd:.2f}"


def targets_table(per_config: dict[str, list[dict]]) -> str:
    """Markdown: the issue's targets, one row per config and split, plus what the real nodules show."""
    cols = ["size ρ", "density ρ", "decoy |ρ|", "mask area ratio", "empty masks", "Fréchet first → last (val)",
            "link AUROC learned", "link AUROC classical", "train s"]
    lines = ["| config | subjects | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    runs0 = next(iter(per_config.values()))
    for split in SPLITS:
        for label, runs in per_config.items():
            col = lambda k: [r[f"{split}/{k}"] for r in runs]  # noqa: E731
            course = lambda k: [r[f"course/{k}"] for r in runs]  # noqa: E731
            lines.append(f"| {label} | {split} | " + " | ".join(
                [cell(col(f"response/model/{r}")) for r in ("size", "density", "decoy")]
                + [cell(col("mask_area_ratio")), cell(col("empty")),
                   f"{cell(course('frechet_first'))} → {cell(course('frechet_last'))}",
                   cell(col("auroc/learned")), cell(col("auroc/classical")), cell(course("seconds"))]) + " |")
        real = lambda k: [r[f"{split}/response/real/{k}"] for r in runs0]  # noqa: E731
        lines.append(f"| real nodules | {split} | " + " | ".join(
            [cell(real(r)) for r in ("size", "density", "decoy")] + ["1", "0", "-", "-", "-", "-"]) + " |")
    return "\n".join(lines)


def table(per_config: dict[str, list[dict]]) -> str:
    """Markdown: one row per config (learned) plus the model-free classical and PCA rows, per split."""
    cols = ["link AUROC", *(f"R² {p}" for p in PROGRAMS), "top-1 (chance)", "Fréchet", "mask area ratio"]
    lines = []
    for split in SPLITS:
        lines += [f"\n**{split}**\n", "| representation | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for label, runs in per_config.items():
            col = lambda k: [r[f"{split}/{k}"] for r in runs]  # noqa: E731
            chance = mean_sd(col("top1_chance"))[0]
            lines.append(f"| {label} (learned code) | {cell(col('auroc/learned'))} | "
                         + " | ".join(cell(col(f"probe_r2/learned/{p}")) for p in PROGRAMS)
                         + f" | {cell(col('top1'))} ({chance:.2f}) | {cell(col('frechet'))} | "
                           f"{cell(col('mask_area_ratio'))} |")
        runs = next(iter(per_config.values()))
        col = lambda k: [r[f"{split}/{k}"] for r in runs]  # noqa: E731
        lines.append(f"| classical metagenes | {cell(col('auroc/classical'))} | "
                     + " | ".join(cell(col(f"probe_r2/classical/{p}")) for p in PROGRAMS) + " | - | - | - |")
        lines.append("| raw genes (PCA) | - | " + " | ".join(cell(col(f"probe_r2/pca/{p}")) for p in PROGRAMS)
                     + " | - | - | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="benchmark folder (reused on a re-run)")
    ap.add_argument("--subjects", type=int, default=120, help="cohort size (default 120; >= 100 for real numbers)")
    ap.add_argument("--cohort-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3000, help="training steps per config and seed (default 3000)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", dest="configs", action="append", default=None, metavar="LABEL=CONFIG[:k=v,...]")
    ap.add_argument("--n-perm", type=int, default=1000)
    ap.add_argument("--probe-perm", type=int, default=100)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="prep workers (0 = in-process)")
    ap.add_argument("--quick", action="store_true", help="reduced end-to-end form for tests")
    args = ap.parse_args(argv)
    maps = ["--estimators", "synthesis-correlation,classical-k8"]  # this benchmark's two maps (bench_map: all)
    eval_args = ["--n-perm", str(args.n_perm), "--probe-perm", str(args.probe_perm), *maps]
    if args.quick:
        args.subjects, args.steps, args.seeds, args.workers = 10, 10, [0], 0
        eval_args = ["--n-perm", "50", "--probe-perm", "5", "--backgrounds", "4", "--clusters", "2", *maps]
    elif args.subjects < 100:
        print(f"note: {args.subjects} subjects; the benchmark's numbers are meant for >= 100", file=sys.stderr)
    configs = [parse_config(s) for s in (args.configs or DEFAULT_CONFIGS)]
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the benchmark keeps its own sqlite store under --out

    out = Path(args.out).resolve()
    start = time.perf_counter()
    data = prepare(out, args.subjects, args.cohort_seed, args.workers)
    per_config: dict[str, list[dict]] = {}
    raw: dict[str, dict] = {}
    for label, config, sets in configs:
        for seed in args.seeds:
            metrics = train_and_eval(out, data, label, config, sets, seed, args.steps, eval_args)
            raw[f"{label}/s{seed}"] = metrics
            per_config.setdefault(label, []).append(summary_of(metrics))
    text = "targets\n\n" + targets_table(per_config) + "\n\nrepresentations\n" + table(per_config)
    header = (f"learnability: {args.subjects} subjects, {args.steps} steps, seeds {args.seeds}, "
              f"configs {[c[0] for c in configs]} ({time.perf_counter() - start:.0f} s)")
    print(header + "\n" + text)
    result = {"settings": {"subjects": args.subjects, "steps": args.steps, "seeds": args.seeds,
                           "configs": {label: {"config": c, "set": s} for label, c, s in configs},
                           "quick": args.quick},
              "summary": {label: {k: dict(zip(("mean", "sd"), mean_sd([r[k] for r in runs]))) for k in runs[0]}
                          for label, runs in per_config.items()},
              "runs": {k: summary_of(v) for k, v in raw.items()}, "table": text}
    clean = json.loads(json.dumps(result), parse_constant=lambda c: None)  # NaN -> null: strict JSON
    (out / "learnability.json").write_text(json.dumps(clean, indent=1) + "\n")
    print(f"written: {out / 'learnability.json'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
