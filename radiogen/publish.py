"""Publish a folder atomically: build it beside its destination, then swap it in.

Every writer of a folder that others read (a prepared dataset, a synthetic cohort, an evaluation
report, a local checkpoint) goes through `building`, so a reader or a crash sees the previous
folder or the new one, never a mix:

    with building(out) as tmp:        # tmp = <parent>/.<name>.tmp-<pid>, empty
        write(tmp)                    # an exception here removes tmp and leaves `out` untouched
    # here `out` is the new folder

The swap, `publish`: fsync the new files, rename `out` to .<name>.old-<pid>, rename tmp to `out`,
fsync the parent, remove the old folder. Renames are atomic within one filesystem, which is why
tmp is a sibling of `out`. A process killed between the two renames leaves no `out` but a complete
.old-<pid>; `recover(out)`, which `building` runs first, puts it back and removes the build folders
of processes that no longer run. The pid in the names tells a dead writer's leftovers from a live one's.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def staging_path(out: Path, kind: str = "tmp") -> Path:
    """This process's sibling of `out` for a folder being built ("tmp") or replaced ("old")."""
    return out.parent / f".{out.name}.{kind}-{os.getpid()}"


def _writer_pid(path: Path) -> int | None:
    pid = path.name.rsplit("-", 1)[-1]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under root, so the rename never publishes data still in the page cache."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


def recover(out: Path) -> None:
    """Undo what a killed writer of `out` left beside it: restore the folder it had moved aside
    (killed between the two renames of `publish`) and remove its unfinished build folders."""
    out = Path(out)
    for leftover in sorted(out.parent.glob(f".{out.name}.*-*"), key=lambda p: p.stat().st_mtime, reverse=True):
        kind = leftover.name[len(out.name) + 2:].rsplit("-", 1)[0]
        pid = _writer_pid(leftover)
        if kind not in ("tmp", "old") or pid is None or _alive(pid):
            continue
        if kind == "old" and not out.exists():
            os.replace(leftover, out)  # the newest complete folder the dead writer moved aside
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def publish(tmp: Path, out: Path) -> None:
    """Swap the complete folder `tmp` (a sibling of `out`) in as `out`. If the swap fails midway the
    previous `out` is put back before the error propagates."""
    tmp, out = Path(tmp), Path(out)
    _fsync_tree(tmp)
    old = staging_path(out, "old") if out.exists() else None
    if old is not None:
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old, out)
        raise
    try:
        _fsync(out.parent)  # the renames themselves reach the disk
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def building(out: Path) -> Iterator[Path]:
    """Yield an empty folder beside `out`; publish it as `out` when the block ends without an error,
    remove it when it raises. Recovers what an earlier killed writer left first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)
    tmp = staging_path(out)
    shutil.rmtree(tmp, ignore_errors=True)  # a folder of an earlier process with this pid
    tmp.mkdir()
    try:
        yield tmp
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
