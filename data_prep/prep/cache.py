"""Per-subject results kept between runs, so a re-run computes only the subjects whose inputs or
parameters changed. The cache is a sibling of --out (publishing a new dataset keeps it)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from data_prep.readers import SubjectError, SubjectInputs

from .case import PrepParams, SubjectResult, fingerprint, subject_key
from .executor import Todo

if TYPE_CHECKING:
    import pyarrow as pa


class SubjectCache:
    """<dir>/<h>.json (key + outcome, written last) and <h>.parquet (slices), h = hash of the id."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _stem(self, subject_id: str) -> Path:
        return self.folder / hashlib.sha256(subject_id.encode()).hexdigest()[:24]

    def key(self, subject_id: str) -> str | None:
        """The key a subject was cached under; None when it is not (completely) cached."""
        meta = self._stem(subject_id).with_suffix(".json")
        try:
            entry = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if entry.get("subject_id") != subject_id:  # a hash collision of two ids
            return None
        if entry["outcome"]["status"] == "ok" and not self._stem(subject_id).with_suffix(".parquet").is_file():
            return None
        return entry.get("key")

    def outcome(self, subject_id: str) -> dict:
        return json.loads(self._stem(subject_id).with_suffix(".json").read_text())["outcome"]

    def table(self, subject_id: str) -> "pa.Table":
        import pyarrow.parquet as pq

        return pq.read_table(self._stem(subject_id).with_suffix(".parquet"))

    def store(self, result: SubjectResult, outcome: dict) -> None:
        """Slices first, then the entry: an entry is only ever read beside complete slices."""
        import pyarrow.parquet as pq

        stem = self._stem(result.subject_id)
        if result.table is not None:
            tmp = stem.with_suffix(".parquet.tmp")
            pq.write_table(result.table, tmp)
            tmp.replace(stem.with_suffix(".parquet"))
        tmp = stem.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"subject_id": result.subject_id, "key": result.key, "outcome": outcome}))
        tmp.replace(stem.with_suffix(".json"))

    def prune(self, keep: set[str]) -> None:
        stems = {self._stem(s).name for s in keep}
        for f in self.folder.iterdir():
            if f.name.split(".")[0] not in stems:
                f.unlink(missing_ok=True)


def fingerprint_all(cases: list[SubjectInputs], params: PrepParams, cached: dict[str, str]
                    ) -> tuple[list[SubjectResult], Todo]:
    """Hash every subject's inputs (threads: hashlib releases the GIL) and compare with the cache.

    Returns (results that need no processing: unchanged subjects, marked cached, and subjects
    whose files cannot be read; [(inputs, hashes)] of the subjects to compute)."""

    def one(case: SubjectInputs) -> tuple[dict[str, str] | None, str, float]:
        t = time.perf_counter()
        try:
            return fingerprint(case), "", time.perf_counter() - t
        except SubjectError as err:
            return None, str(err), time.perf_counter() - t

    done: list[SubjectResult] = []
    todo: Todo = []
    with ThreadPoolExecutor(max_workers=max(1, min(len(cases), os.cpu_count() or 1))) as pool:
        for case, (hashes, error, seconds) in zip(cases, pool.map(one, cases)):
            if hashes is None:
                done.append(SubjectResult(case.subject_id, reason=error, timings={"fingerprint": seconds}))
                continue
            key = subject_key(hashes, params)
            if cached.get(case.subject_id) == key:
                done.append(SubjectResult(case.subject_id, key=key, inputs=hashes, cached=True))
            else:
                todo.append((case, hashes))
    return done, todo
