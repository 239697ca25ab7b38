"""Layers: the core library imports neither Ray nor MLflow nor the outer packages; the CLI entry is light."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import radiogen

OUTER = ("data_prep", "ray_jobs")


def loaded_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running `code` in a fresh interpreter."""
    code += "\nimport sys\nprint(','.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return set(out.split(","))


def test_core_imports_neither_ray_nor_mlflow_nor_outer_packages():
    modules = [m.name for m in pkgutil.walk_packages(radiogen.__path__, "radiogen.")]
    assert len(modules) > 10
    loaded = loaded_after(f"import importlib\nfor m in {modules!r}: importlib.import_module(m)")
    assert not loaded & {"ray", "mlflow", *OUTER}, f"radiogen imports {sorted(loaded & {'ray', 'mlflow', *OUTER})}"


def test_core_source_names_no_outer_package():
    """Static check, lazy imports inside functions included."""
    for path in Path(radiogen.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] in OUTER]
            assert not bad, f"{path.name}:{node.lineno} imports {bad}"
        text = path.read_text()
        assert not any(f'"{pkg}.' in text or f"'{pkg}." in text for pkg in OUTER), \
            f"{path.name} names an outer module in a string (e.g. an import spec)"


def test_cli_entry_and_parser_load_no_heavy_package():
    loaded = loaded_after("from ray_jobs.cli import build_parser\nbuild_parser()")
    heavy = {"torch", "ray", "mlflow", "SimpleITK", "numpy", "pyarrow", "pandas", "scipy"}
    assert not loaded & heavy, f"building the radiogen parser imports {sorted(loaded & heavy)}"
