# The README's two commands: `make demo` (main job on the embedded synthetic default) and `make test`.
# Both create .venv on first use (scripts/bootstrap.sh).
PY := .venv/bin/python
DEMO := runs/demo

.PHONY: bootstrap demo test

bootstrap:
	@bash scripts/bootstrap.sh

# Synthetic cohort (NIfTI + GEO table) -> radiogen prep -> Ray Train (2 DDP workers) on the stable tiny
# config (ablations/stable_tiny.yaml), tracked in $(DEMO)/../mlflow.db unless MLFLOW_TRACKING_URI is set.
demo: bootstrap
	test -f $(DEMO)/cohort/truth.json || $(PY) -m ray_jobs.cli cohort --out $(DEMO)/cohort --subjects 12 --seed 0 --matrix 128
	$(PY) -m ray_jobs.cli prep --cases $(DEMO)/cohort/cases.csv --genes $(DEMO)/cohort/genes.tsv --out $(DEMO)/data \
		--image-size 32 --bg-slices 10 --workers 2
	$(PY) -m ray_jobs.cli train --config ablations/stable_tiny.yaml --data $(DEMO)/data --set data.n_genes=null \
		--num-workers 2 --max-steps 200 --log-every 20 --val-every 100 --checkpoint-every 100 \
		--experiment radiogen-demo --runs-dir runs

test: bootstrap
	$(PY) -m pytest -q
