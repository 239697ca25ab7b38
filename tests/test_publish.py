"""radiogen.publish: a folder is replaced whole. A crash at any step of the swap leaves the old folder or
the new one (after `recover`, which every writer runs first), never a mix and never nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from radiogen import publish

from .helpers import REPO

OLD = {"a.txt": "old a", "sub/b.txt": "old b"}
NEW = {"a.txt": "new a", "sub/b.txt": "new b", "c.txt": "new c"}


def _write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


def _read(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}


def _old_folder(tmp_path: Path) -> Path:
    out = tmp_path / "data"
    out.mkdir()
    _write(out, OLD)
    return out


# The steps of a swap, in order, and the call that performs each: (function, which call of it).
STEPS = {"flush the new files": ("_fsync_tree", 1), "move the old folder aside": ("replace", 1),
         "move the new folder in": ("replace", 2), "flush the renames": ("_fsync", "parent")}


@pytest.mark.parametrize("step", STEPS)
def test_a_swap_that_raises_leaves_the_old_or_the_new_folder(tmp_path: Path, monkeypatch, step: str) -> None:
    out = _old_folder(tmp_path)
    name, which = STEPS[step]
    real = {"replace": os.replace, "_fsync_tree": publish._fsync_tree, "_fsync": publish._fsync}
    calls = {"n": 0}

    def failing(*args):
        calls["n"] += 1
        if which == calls["n"] or (which == "parent" and Path(args[0]) == out.parent):
            raise OSError(f"simulated failure: {step}")
        return real[name](*args)

    monkeypatch.setattr(publish.os if name == "replace" else publish, name, failing)
    with pytest.raises(OSError, match="simulated failure"):
        with publish.building(out) as tmp:
            _write(tmp, NEW)
    monkeypatch.undo()
    # Before the new folder is in place the old one stays; once it is, the new one. No leftovers either way.
    assert _read(out) == (NEW if step == "flush the renames" else OLD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


KILLED_WRITER = """
import os, sys
from pathlib import Path
from radiogen import publish

out, step = Path(sys.argv[1]), sys.argv[2]
real_replace, calls = os.replace, []
def replace(src, dst):
    calls.append(src)
    if (step, len(calls)) in (("move the old folder aside", 1), ("move the new folder in", 2)):
        os._exit(9)  # killed: no cleanup runs
    real_replace(src, dst)
publish.os.replace = replace
if step == "flush the new files":
    publish._fsync_tree = lambda root: os._exit(9)
if step == "remove the old folder":
    real_rmtree = publish.shutil.rmtree
    publish.shutil.rmtree = lambda path, **k: os._exit(9) if ".old-" in str(path) else real_rmtree(path, **k)
with publish.building(out) as tmp:
    for rel, text in {new}.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
"""


@pytest.mark.parametrize("step", ["flush the new files", "move the old folder aside", "move the new folder in",
                                  "remove the old folder"])
def test_a_writer_killed_at_any_step_leaves_the_old_or_the_new_folder(tmp_path: Path, step: str) -> None:
    out = _old_folder(tmp_path)
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER.replace("{new}", repr(NEW)), str(out), step],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    publish.recover(out)  # what the next writer does first
    assert _read(out) == (NEW if step == "remove the old folder" else OLD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_live_writers_folders_are_left_alone(tmp_path: Path) -> None:
    out = _old_folder(tmp_path)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / f".data.tmp-{live.pid}").mkdir()
        publish.recover(out)
        assert (tmp_path / f".data.tmp-{live.pid}").is_dir() and _read(out) == OLD
    finally:
        live.kill()
        live.wait()
    publish.recover(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_every_folder_writer_publishes_through_the_helper() -> None:
    writers = ["data_prep/prep/prep.py", "data_prep/cohort.py", "ray_jobs/eval.py", "ray_jobs/local.py"]
    for rel in writers:
        assert "building(" in (REPO / rel).read_text(), rel
    # No other module swaps folders by hand (the helper's names for a folder moved aside or being built).
    by_hand = [p.relative_to(REPO).as_posix() for d in ("radiogen", "data_prep", "ray_jobs", "scripts")
               for p in (REPO / d).rglob("*.py")
               if p.name != "publish.py" and any(s in p.read_text() for s in (".old-", ".partial-", "mkdtemp(prefix=f\".{"))]
    assert by_hand == []
