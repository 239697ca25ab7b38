"""What ASHA saves: the same sweep (space, trials, seeds) run twice, with ASHA and with every trial trained to the
end, on a synthetic cohort prepared at 32 px. Reports the compute in trial-steps (sum over trials of the steps
each trained), the wall time, each run's best configuration and whether ASHA found the same one.

    python scripts/bench_asha.py --out /tmp/bench_asha [--config ablations/sweep_lambda_code.yaml] [--trials 8]
        [--subjects 12] [--max-concurrent 2] [--data DIR]

With at most 10 trials both sweeps evaluate the same configurations (Optuna's TPE draws its first 10 at random
from the seed), so the difference is ASHA's alone. Prints a markdown table and writes OUT/bench_asha.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def stage(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare(out: Path, subjects: int) -> Path:
    from ray_jobs.cli import main as radiogen

    cohort, data = out / "cohort", out / "data"
    if not (cohort / "truth.json").is_file():
        stage(f"cohort: {subjects} subjects")
        assert radiogen(["cohort", "--out", str(cohort), "--subjects", str(subjects), "--seed", "0",
                         "--matrix", "128"]) == 0
    if not (data / "manifest.json").is_file():
        stage("prep at 32 px")
        assert radiogen(["prep", "--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"),
                         "--out", str(data), "--image-size", "32", "--bg-slices", "10", "--workers", "1"]) == 0
    return data


def variant_file(config: Path, out: Path, asha: bool) -> Path:
    """The sweep file as it is (ASHA) or with `asha: off`; the experiment path made absolute."""
    data = yaml.safe_load(config.read_text())
    data["experiment"] = str((config.parent / data["experiment"]).resolve())
    if not asha:
        data["asha"] = False
    path = out / f"{config.stem}_{'asha' if asha else 'full'}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_sweep(config: Path, data: Path, out: Path, name: str, trials: int, concurrent: int) -> dict:
    from ray_jobs.sweep import main as sweep

    summary = out / "runs" / "sweeps" / name / "report" / "summary.json"
    if not summary.is_file():
        stage(f"sweep {name}")
        start = time.perf_counter()
        code = sweep(["--config", str(config), "--data", str(data), "--runs-dir", str(out / "runs"), "--name", name,
                      "--trials", str(trials), "--max-concurrent", str(concurrent), "--experiment", "bench-asha",
                      "--tracking-uri", f"sqlite:///{(out / 'runs' / 'mlflow.db').resolve()}"])
        assert code == 0, f"sweep {name} failed"
        result = json.loads(summary.read_text())
        result["wall_s"] = time.perf_counter() - start
        summary.write_text(json.dumps(result, indent=1))
    return json.loads(summary.read_text())


def best_of(summary: dict) -> dict | None:
    return next((t for t in summary["trials"] if t["trial_id"] == summary["best"]), None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="working folder (cohort, data, runs, bench_asha.json)")
    p.add_argument("--config", default=str(REPO / "ablations" / "sweep_lambda_code.yaml"), help="sweep file")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--subjects", type=int, default=12)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--data", default=None, help="a prepared 32 px dataset (default: prepare a synthetic cohort)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = Path(args.config).resolve()
    data = Path(args.data).resolve() if args.data else prepare(out, args.subjects)
    spec = yaml.safe_load(config.read_text())
    if not spec.get("asha"):
        raise SystemExit(f"{config.name} has no ASHA section to compare")

    results = {}
    for label, asha in (("asha", True), ("full", False)):
        results[label] = run_sweep(variant_file(config, out, asha), data, out, f"bench-{config.stem}-{label}",
                                   args.trials, args.max_concurrent)
    a, f = results["asha"], results["full"]
    best_a, best_f = best_of(a), best_of(f)
    same = best_a is not None and best_f is not None and best_a["values"] == best_f["values"]
    objectives = ", ".join(f"{o['metric']} ({o['mode']})" for o in spec["objectives"])

    def describe(t: dict | None) -> str:
        if t is None:
            return "none"
        vals = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["values"].items())
        return f"{vals}; " + ", ".join(f"{k}={v:.4g}" for k, v in t["metrics"].items() if v is not None)

    rows = [("trials", len(a["trials"]), len(f["trials"])),
            ("pruned by ASHA", sum(t["state"] == "pruned" for t in a["trials"]),
             sum(t["state"] == "pruned" for t in f["trials"])),
            ("compute (trial-steps)", a["trial_steps"], f["trial_steps"]),
            ("wall time (s)", f"{a['wall_s']:.0f}", f"{f['wall_s']:.0f}"),
            ("best configuration", describe(best_a), describe(best_f))]
    saved = 1 - a["trial_steps"] / f["trial_steps"]
    table = "\n".join(["| | ASHA | every trial to the end |", "|---|---|---|",
                       *(f"| {k} | {x} | {y} |" for k, x, y in rows)])
    text = (f"Sweep {config.name}: {len(a['trials'])} trials of {a['max_steps']} steps, objective(s) {objectives}, "
            f"ASHA {spec['asha']}.\n\n{table}\n\nASHA saved {saved:.0%} of the trial-steps; "
            f"{'same' if same else 'a different'} best configuration.\n")
    print(text)
    (out / "bench_asha.json").write_text(json.dumps({
        "config": str(config), "trials": args.trials, "max_concurrent": args.max_concurrent, "saved_fraction": saved,
        "same_best": same, "asha": a, "full": f, "table": text}, indent=1, default=str))
    stage(f"wrote {out / 'bench_asha.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
