"""Look at a tracking store in the real MLflow UI: start `mlflow server` on it (127.0.0.1, a free port), open the
experiment's run list and one run's artifacts in headless Chromium, check what the page shows, save screenshots.

    .venv/bin/python scripts/mlflow_ui_check.py --store runs/demo/mlflow.db --experiment radiogen-demo \\
        --expect demo --expect demo-mcgan --out docs/img/mlflow_ui_demo.png

Needs Debian's chromium (`apt-get install chromium`). Prints what it found in the rendered pages (each --expect
text, the experiment's runs) and exits 1 when an expected text is missing.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium(url: str, profile: str, *extra: str) -> subprocess.CompletedProcess:
    # virtual time lets the single-page app fetch and render before the page is captured
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="sqlite file of the tracking store")
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--expect", action="append", default=[], help="text the run list must show (repeatable)")
    ap.add_argument("--out", required=True, help="screenshot of the run list (PNG)")
    ap.add_argument("--size", default="1600,1000")
    ap.add_argument("--filter", default="",
                    help="a run search filter for the run list, e.g. the sweep's trials: tags.sweep = 'demo'")
    args = ap.parse_args()
    if not Path(CHROMIUM).is_file():
        print(f"error: {CHROMIUM} not found; install Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    from mlflow import MlflowClient

    store = Path(args.store).resolve()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(Path(tempfile.gettempdir()) / "mlflow_ui_check.log", "w")
    server = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{store}", "--host",
                               "127.0.0.1", "--port", str(port)], stdout=log, stderr=log)
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(args.experiment)
        runs = client.search_runs([exp.experiment_id])
        print(f"experiment {args.experiment} ({exp.experiment_id}): {len(runs)} runs; kind tag "
              f"{exp.tags.get('mlflow.experimentKind')}")
        with tempfile.TemporaryDirectory() as profile:
            query = f"?searchFilter={urllib.parse.quote(args.filter)}" if args.filter else ""
            page = f"{uri}/#/experiments/{exp.experiment_id}/runs{query}"
            dom = chromium(page, profile, "--dump-dom").stdout
            missing = [t for t in args.expect if t not in dom]
            for t in args.expect:
                print(f"  run list shows {t!r}: {'yes' if t not in missing else 'NO'}")
            chromium(page, profile, f"--screenshot={Path(args.out).resolve()}", f"--window-size={args.size}")
            print(f"screenshot: {args.out}")
            trials = [r for r in runs if "radiogen.trial_id" in r.data.tags]
            if trials:  # a nested trial's own page: its params and metrics
                trial = min(trials, key=lambda r: r.data.metrics.get("val/frechet_radiomic", float("inf")))
                page = f"{uri}/#/experiments/{exp.experiment_id}/runs/{trial.info.run_id}/model-metrics"
                shot = Path(args.out).with_name(Path(args.out).stem + "_trial.png")
                chromium(page, profile, f"--screenshot={shot.resolve()}", f"--window-size={args.size}")
                dom = chromium(page, profile, "--dump-dom").stdout
                name = trial.data.tags.get("radiogen.run_name", "")
                print(f"  trial run {name}: page shows its name {name in dom}, val/frechet_radiomic "
                      f"{'val/frechet_radiomic' in dom}; screenshot {shot}")
                missing += [] if name in dom else [name]
            evals = [r for r in runs if r.data.tags.get("radiogen.kind") == "eval"]
            if evals:
                run = evals[0]
                art = f"{uri}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}/artifacts"
                shot = Path(args.out).with_name(Path(args.out).stem + "_eval_artifacts.png")
                chromium(art, profile, f"--screenshot={shot.resolve()}", f"--window-size={args.size}")
                dom = chromium(art, profile, "--dump-dom").stdout
                print(f"  eval run {run.info.run_id}: report.md listed {'report.md' in dom}, figures listed "
                      f"{'figures' in dom}; screenshot {shot}")
                missing += [] if "report.md" in dom else ["report.md"]
        return 1 if missing else 0
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
