# The README's two commands: `make demo` (main job on the embedded synthetic default) and `make test`.
# Both create .venv on first use (scripts/bootstrap.sh).
PY := .venv/bin/python
DEMO := runs/demo

.PHONY: bootstrap demo test

bootstrap:
	@bash scripts/bootstrap.sh

# The main job (ray_jobs/demo.py): synthetic cohort -> prep -> Ray Tune sweep (ablations/sweep_demo.yaml) -> MC-GAN
# baseline -> eval of the best trial against it and the cohort's truth, all tracked in $(DEMO)/mlflow.db (unless
# MLFLOW_TRACKING_URI is set). One line per stage; each stage's output in $(DEMO)/logs. A re-run reuses what exists.
# DEMO_ARGS passes flags of `radiogen demo` (e.g. a smaller run: DEMO_ARGS="--subjects 10 --trials 2 --steps 12").
demo: bootstrap
	@$(PY) -m ray_jobs.cli demo --out $(DEMO) $(DEMO_ARGS)

test: bootstrap
	$(PY) -m pytest -q --durations=15
