#!/usr/bin/env bash
# Creates .venv on first use and installs radiogen with its test extras; a no-op once done.
# An existing torch (e.g. a cluster's CUDA build) is kept: the venv then sees the system packages.
# Otherwise torch is pinned to 2.13.0, whose CPU wheel the CI machines hold locally; an unpinned
# `torch` could pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.bootstrap-stamp"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    echo "bootstrap: keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "bootstrap: installing torch==2.13.0"
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
fi
echo "bootstrap: installing radiogen and its dependencies into $VENV (first run only)"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
touch "$STAMP"
