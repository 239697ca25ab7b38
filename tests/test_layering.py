"""The core library imports neither Ray nor MLflow (a local debug run needs neither)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import radiogen


def test_core_imports_neither_ray_nor_mlflow():
    modules = [m.name for m in pkgutil.walk_packages(radiogen.__path__, "radiogen.")]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow'))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert len(modules) > 10
    assert out == "", f"radiogen imports {out}"
