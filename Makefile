# The README's two commands: `make demo` (main job on the embedded synthetic default) and `make test`.
# Both create .venv on first use (scripts/bootstrap.sh).
PY := .venv/bin/python

.PHONY: bootstrap demo test

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m radiogen.cli overfit --config ablations/tiny.yaml --steps 300
	$(PY) -m radiogen.cli cost --config ablations/tiny.yaml

test: bootstrap
	$(PY) -m pytest -q
