"""Security basics, checked on the source: services bind to 127.0.0.1, checkpoints load without pickled code, YAML
through the safe loader, no pickle of user files and no shell strings. Each rule names the file and line that
breaks it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .helpers import REPO

SOURCE = sorted(p for d in ("radiogen", "ray_jobs", "data_prep", "scripts") for p in (REPO / d).rglob("*.py"))


def _calls(path: Path):
    """(call node, its dotted name, the enclosing `if` tests) of every call in a file."""
    tree = ast.parse(path.read_text())

    def walk(node, tests):
        for child in ast.iter_child_nodes(node):
            inner = tests + [child.test] if isinstance(child, ast.If) else tests
            if isinstance(child, ast.Call):
                yield child, ast.unparse(child.func), tests
            yield from walk(child, inner)

    yield from walk(tree, [])


def _kw(call: ast.Call, name: str):
    found = [k.value for k in call.keywords if k.arg == name]
    return ast.literal_eval(found[0]) if found and isinstance(found[0], ast.Constant) else (found[0] if found else None)


def _where(path: Path, call: ast.Call) -> str:
    return f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{call.lineno}"


def test_checkpoints_load_weights_only() -> None:
    bad = [_where(p, c) for p in SOURCE for c, name, _ in _calls(p)
           if name == "torch.load" and _kw(c, "weights_only") is not True]
    assert bad == [], "torch.load without weights_only=True"


def test_yaml_through_the_safe_loader_only() -> None:
    bad = [_where(p, c) for p in SOURCE for c, name, _ in _calls(p)
           if name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all")
           and not (name == "yaml.load" and p.name == "strict_yaml.py")]  # the strict reader: a SafeLoader subclass
    assert bad == [], "YAML read without the safe loader (use radiogen.strict_yaml)"


def test_no_pickle_and_no_shell_strings() -> None:
    unpickling = ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load", "dill.load")
    shells = ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput")
    bad = [_where(p, c) for p in SOURCE for c, name, _ in _calls(p)
           if name in unpickling + shells or _kw(c, "shell") is True
           or (name.endswith("np.load") or name == "numpy.load") and _kw(c, "allow_pickle") is True]
    assert bad == [], "pickle of a file, or a command run through a shell"


def test_every_service_binds_to_localhost() -> None:
    bad = []
    for p in SOURCE:
        for c, name, tests in _calls(p):
            if name == "ray.init":
                # A local cluster's dashboard on 127.0.0.1 or none; connecting (inside `if address:`) starts nothing.
                connecting = any(isinstance(t, ast.Name) and t.id == "address" for t in tests)
                if not (connecting or _kw(c, "dashboard_host") == "127.0.0.1" or _kw(c, "include_dashboard") is False):
                    bad.append(_where(p, c))
            for arg in c.args:  # mlflow server / ui command lines
                if isinstance(arg, ast.List):
                    words = [e.value for e in arg.elts if isinstance(e, ast.Constant)]
                    if {"server", "ui"} & set(words) and "mlflow" in ast.unparse(arg):
                        if "--host" not in words or words[words.index("--host") + 1] != "127.0.0.1":
                            bad.append(_where(p, c))
    assert bad == [], "a service that does not bind to 127.0.0.1"


def test_the_ui_command_radiogen_prints_binds_to_localhost() -> None:
    from ray_jobs.tracking import ui_hint

    assert ui_hint("sqlite:///x.db").endswith("ui --backend-store-uri sqlite:///x.db --host 127.0.0.1")


@pytest.mark.parametrize("rule, text", [
    (test_checkpoints_load_weights_only, "import torch\ntorch.load('x.pt')\n"),
    (test_yaml_through_the_safe_loader_only, "import yaml\nyaml.load(open('x'), Loader=yaml.Loader)\n"),
    (test_no_pickle_and_no_shell_strings, "import subprocess\nsubprocess.run('ls ' + x, shell=True)\n"),
    (test_every_service_binds_to_localhost, "import ray\nray.init(num_cpus=2)\n"),
])
def test_each_rule_catches_what_it_forbids(rule, text, tmp_path, monkeypatch) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text(text)
    monkeypatch.setitem(globals(), "SOURCE", [bad])
    with pytest.raises(AssertionError, match="probe.py:2"):
        rule()
