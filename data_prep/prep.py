"""`radiogen prep`: raw CT + nodule masks + gene table -> parquet slices + manifest (docs/design.md §4).

Per subject (a Ray task each, or in this process where Ray would not pay off; see `run_subjects`):
read the CT with SimpleITK and the mask (file on the CT grid, or DICOM SEG placed by position); one
voi_mm VOI per connected nodule with every plane that shows it; lungs segmented, nodules removed,
bg_vois background VOI centres 5-25 mm inside the lung boundary, bg_slices random nodule-free
planes per VOI; HU window to [-1, 1]. A subject whose input is bad fails with a one-line reason
recorded in the manifest; the others go on.

On the driver: match imaging subjects with gene-table subjects, split by subject (a seeded hash of
each id, so adding or removing subjects never moves another; see `assign_splits`), apply the NA
policy over the subjects that made it, drop genes constant on the train split, fit gene statistics
on the train split, write the dataset (radiogen.schema, with the hash of every data file in the
manifest) into a temporary folder next to --out and swap it in, so a killed run leaves the
previous complete dataset (or none), never a partial one. Subject warnings are printed one line
per kind; the details are in the manifest.

Resume: each subject's result is cached under a key made of its input files' SHA-256 and the
parameters that shape slices. The driver hashes every subject's files first; a re-run re-processes
only subjects whose key changed, and when none did it neither imports nor starts Ray.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from typing import TYPE_CHECKING

import numpy as np

from data_prep import gene_table as gt
from data_prep.readers import SubjectError, SubjectInputs

if TYPE_CHECKING:
    import pyarrow as pa

PREP_VERSION = 2
"""Bump when the processing changes what a subject's slices (or its recorded outcome) are for the
same inputs (cache key). 2: background centres whose VOI fits in the CT and holds no nodule are
drawn first; warnings as "<kind>: <details>"."""



def _subject_schema() -> "pa.Schema":
    """The slice schema without `split`, which the driver assigns per run."""
    import pyarrow as pa

    from radiogen.schema import SLICE_SCHEMA

    return pa.schema([f for f in SLICE_SCHEMA if f.name != "split"])


@dataclass(frozen=True)
class PrepParams:
    """Everything that shapes one subject's slices (part of the cache key)."""

    image_size: int = 128
    """Side of the square slices in pixels (paper: 128)."""
    voi_mm: float = 60.0
    """Side of the cubic VOI in mm (paper: 60)."""
    bg_vois: int = 2
    """Background VOIs per subject; 0 = none."""
    bg_slices: int = 20
    """Random nodule-free planes per background VOI (paper: 20)."""
    bg_min_mm: float = 5.0
    """Background VOI centres lie at least this far inside the lung boundary (paper: 5)."""
    bg_max_mm: float = 25.0
    """... and at most this far (paper: 25)."""
    hu_window: tuple[float, float] = (-1000.0, 500.0)
    """HU clipped to this window, then scaled to [-1, 1]."""
    seed: int = 0
    """Seed of background centres and plane choice (per subject) and of the split."""

    def cache_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prep_version": PREP_VERSION}


# ---------------------------------------------------------------------------------------------
# One subject (runs inside a Ray task, or in-process with --workers 0)


def subject_key(inputs: dict[str, str], params: PrepParams) -> str:
    blob = json.dumps({"inputs": sorted(inputs.values()), "params": params.cache_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _subject_rng(subject_id: str, seed: int) -> np.random.Generator:
    # Independent of processing order and of the other subjects.
    return np.random.default_rng([seed, int(hashlib.sha256(subject_id.encode()).hexdigest()[:12], 16)])


def _rows(subject_id: str, kind: str, voi_id: int, voi, planes: np.ndarray) -> dict[str, list]:
    from radiogen.schema import encode_image, encode_mask

    cx, cy, cz = voi.center_mm
    n = len(planes)
    return {"subject_id": [subject_id] * n, "kind": [kind] * n, "voi_id": [voi_id] * n,
            "slice_index": [int(k) for k in planes],
            "slice_offset_mm": [float(voi.offsets_mm[k]) for k in planes],
            "image": [encode_image(voi.image[k]) for k in planes],
            "mask": [encode_mask(voi.mask[k]) for k in planes],
            "pixel_spacing_mm": [voi.pixel_spacing_mm] * n,
            "voi_center_x_mm": [cx] * n, "voi_center_y_mm": [cy] * n, "voi_center_z_mm": [cz] * n,
            "padded": [bool(voi.padded[k]) for k in planes]}


def _slices(inputs: SubjectInputs, params: PrepParams, timings: dict[str, float]) -> tuple["pa.Table", dict]:
    import pyarrow as pa
    import SimpleITK as sitk

    from data_prep import geometry, readers

    t = time.perf_counter()
    ct = readers.read_ct(inputs.image)
    timings["read_image"] = time.perf_counter() - t
    t = time.perf_counter()
    if inputs.mask is None:
        raise SubjectError(f"CT read ({'x'.join(map(str, ct.GetSize()))} voxels) but no nodule mask / SEG series "
                           f"was found for this subject")
    if inputs.mask_is_seg:
        mask = readers.read_seg(inputs.mask, ct, inputs.image)
    else:
        mask = readers.read_mask_file(inputs.mask, ct)
    readers.check_mask_content(mask, Path(inputs.mask).name)
    nodules, components, warnings = geometry.find_nodules(mask)
    if not nodules:
        raise SubjectError(f"mask {Path(inputs.mask).name} has only specks below {geometry.MIN_NODULE_MM3:g} mm3; "
                           f"no nodule to crop")
    timings["read_mask"] = time.perf_counter() - t

    t = time.perf_counter()
    window = tuple(params.hu_window)
    subject_schema = _subject_schema()
    columns: dict[str, list] = {f.name: [] for f in subject_schema}

    def add(rows: dict[str, list]) -> None:
        for k, v in rows.items():
            columns[k].extend(v)

    n_nodule = 0
    for voi_id, nodule in enumerate(nodules):
        own = sitk.Cast(sitk.Equal(components, nodule.label), sitk.sitkUInt8)
        voi = geometry.extract_voi(ct, nodule.center_mm, voi_mm=params.voi_mm, image_size=params.image_size,
                                   window=window, own_mask=own)
        planes = np.flatnonzero(voi.mask.reshape(len(voi.mask), -1).any(1))
        if voi.padded[planes].any():
            warnings.append(f"nodule too close to the image edge for a full {params.voi_mm:g} mm VOI: nodule "
                            f"{voi_id} at {tuple(round(c, 1) for c in nodule.center_mm)} mm, "
                            f"{int(voi.padded[planes].sum())} of {len(planes)} slices padded with {window[0]:g} HU")
        if not voi.in_ct.all():
            warnings.append(f"CT ends within {params.voi_mm / 2:g} mm of a nodule along its slice axis: nodule "
                            f"{voi_id}'s VOI has {int(voi.in_ct.sum())} of {len(voi.in_ct)} planes")
        add(_rows(inputs.subject_id, "nodule", voi_id, voi, planes))
        n_nodule += len(planes)
    timings["nodule_vois"] = time.perf_counter() - t

    t = time.perf_counter()
    rng = _subject_rng(inputs.subject_id, params.seed)
    centres, warning = geometry.background_centres(ct, mask, params.bg_vois, rng, params.bg_min_mm, params.bg_max_mm,
                                                   voi_mm=params.voi_mm)
    if warning:
        warnings.append(warning)
    timings["lung_segmentation"] = time.perf_counter() - t
    t = time.perf_counter()
    n_background = 0
    for j, centre in enumerate(centres):
        voi = geometry.extract_voi(ct, centre, voi_mm=params.voi_mm, image_size=params.image_size,
                                   window=window, all_nodules=mask)
        eligible = np.flatnonzero(voi.in_ct & ~voi.other_nodules)
        if len(eligible) < params.bg_slices:
            warnings.append(f"background VOI with fewer nodule-free CT planes than --bg-slices {params.bg_slices}: "
                            f"VOI {j} has {len(eligible)}, took them all")
        planes = np.sort(rng.choice(eligible, size=min(params.bg_slices, len(eligible)), replace=False))
        if voi.padded[planes].any():
            warnings.append(f"background VOI reaches beyond the image: VOI {j}, {int(voi.padded[planes].sum())} "
                            f"slices padded")
        add(_rows(inputs.subject_id, "background", len(nodules) + j, voi, planes))
        n_background += len(planes)
    timings["background_vois"] = time.perf_counter() - t
    info = {"n_nodules": len(nodules), "n_nodule_slices": n_nodule, "n_background_vois": len(centres),
            "n_background_slices": n_background, "warnings": warnings,
            "ct": {"size": list(ct.GetSize()), "spacing_mm": [round(s, 4) for s in ct.GetSpacing()]},
            "nodule_centres_mm": [[round(c, 2) for c in n.center_mm] for n in nodules]}
    return pa.table(columns, schema=subject_schema), info


def fingerprint(inputs: SubjectInputs) -> dict[str, str]:
    """{path: SHA-256} of every input file of one subject; SubjectError names an unreadable one."""
    from radiogen.schema import sha256_file

    hashes = {}
    for f in inputs.files:
        try:
            hashes[f] = sha256_file(f)
        except OSError as err:
            raise SubjectError(f"cannot read input file {f}: {err.strerror}") from None
    return hashes


def _result(subject_id: str, **fields: Any) -> dict[str, Any]:
    return {"subject_id": subject_id, "key": None, "inputs": {}, "cached": False, "status": "failed", "reason": "",
            "deterministic": True, "table": None, "info": {}, "timings": {}, **fields}


def process_subject(inputs: SubjectInputs, params: PrepParams, hashes: dict[str, str] | None = None,
                    threads: int = 0) -> dict[str, Any]:
    """Make one subject's slices.

    Returns {"subject_id", "key", "inputs", "cached", "status", "reason", "deterministic", "table",
    "info", "timings"}; never raises for bad input (status "failed" with a one-line reason).
    hashes: the inputs' `fingerprint` when the caller has it (None = hash them here).
    threads: SimpleITK threads (0 = leave its setting alone)."""
    import SimpleITK as sitk

    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    out = _result(inputs.subject_id)
    t = time.perf_counter()
    try:
        out["inputs"] = fingerprint(inputs) if hashes is None else hashes
        out["key"] = subject_key(out["inputs"], params)
        if hashes is None:
            out["timings"]["fingerprint"] = time.perf_counter() - t
        if inputs.error:
            raise SubjectError(inputs.error)
        out["table"], out["info"] = _slices(inputs, params, out["timings"])
        out["status"] = "ok"
    except SubjectError as err:
        out["reason"] = str(err).splitlines()[0]
    except Exception as err:  # a bug or a resource problem, not the input: do not cache it
        out["reason"] = f"internal error {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        out["deterministic"] = False
        out["traceback"] = traceback.format_exc()
    return out


# ---------------------------------------------------------------------------------------------
# Which subjects to compute (on the driver, without Ray), and where: in this process or Ray tasks


def fingerprint_all(cases: list[SubjectInputs], params: PrepParams, cached: dict[str, str]
                    ) -> tuple[list[dict[str, Any]], list[tuple[SubjectInputs, dict[str, str]]]]:
    """Hash every subject's inputs (threads: hashlib releases the GIL) and compare with the cache.

    Returns (results that need no processing: unchanged subjects, marked "cached", and subjects
    whose files cannot be read; [(inputs, hashes)] of the subjects to compute)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(case: SubjectInputs) -> tuple[dict[str, str] | None, str, float]:
        t = time.perf_counter()
        try:
            return fingerprint(case), "", time.perf_counter() - t
        except SubjectError as err:
            return None, str(err), time.perf_counter() - t

    done: list[dict[str, Any]] = []
    todo: list[tuple[SubjectInputs, dict[str, str]]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(len(cases), os.cpu_count() or 1))) as pool:
        for case, (hashes, error, seconds) in zip(cases, pool.map(one, cases)):
            if hashes is None:
                done.append(_result(case.subject_id, reason=error, timings={"fingerprint": seconds}))
                continue
            key = subject_key(hashes, params)
            if cached.get(case.subject_id) == key:
                done.append(_result(case.subject_id, key=key, inputs=hashes, cached=True))
            else:
                todo.append((case, hashes))
    return done, todo


USE_RAY = ("auto", "always")
"""Values of --ray (PrepOptions.use_ray); see `run_subjects`."""

RAY_START_S = 10.0
"""What starting a local Ray cluster and its first workers is taken to cost. Without a cluster to
connect to, prep starts one only when the subjects left are expected to save more than this.
Measured on a 2-core machine: 5-10 s idle, several times that when busy; erring toward this process
costs a large cohort at most this much, erring toward Ray can cost a small one more than its run."""


@dataclass
class Executor:
    """Where a run's subjects were computed and why (manifest.json "executor")."""

    on: str = "none"
    """"none" (nothing to compute), "process" (this process), "ray" or "process+ray" (the first subjects
    in this process, the rest as Ray tasks)."""
    reason: str = ""


def _cluster_address(address: str | None) -> str | None:
    return address or os.environ.get("RAY_ADDRESS") or None


def _ray_running() -> bool:
    ray = sys.modules.get("ray")  # never import Ray just to ask
    return ray is not None and ray.is_initialized()


def _in_process(todo: list[tuple[SubjectInputs, dict[str, str]]], params: PrepParams, threads: int,
                bar) -> Iterator[dict[str, Any]]:
    """Subjects one after another in this process; SimpleITK's thread setting is restored after."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        for case, hashes in todo:
            result = process_subject(case, params, hashes, threads)
            bar.update()
            yield result
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _ray_tasks(todo: list[tuple[SubjectInputs, dict[str, str]]], params: PrepParams, workers: int,
               address: str | None, bar) -> Iterator[dict[str, Any]]:
    """One Ray task per subject on the cluster at `address`, this process's cluster, or a local one
    of `workers` CPUs started here (and shut down after)."""
    import ray

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1)(process_subject)
        pending = {task.remote(c, params, hashes, 1): c for c, hashes in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            case = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except Exception as err:  # worker died (out of memory, killed): record, go on
                result = _result(case.subject_id, deterministic=False,
                                 reason=f"worker failed: {type(err).__name__}: "
                                        f"{str(err).splitlines()[0] if str(err) else ''}")
            bar.update()
            yield result
    finally:
        if started:
            ray.shutdown()


def run_subjects(todo: list[tuple[SubjectInputs, dict[str, str]]], params: PrepParams, workers: int,
                 address: str | None, use_ray: str, executor: Executor) -> Iterator[dict[str, Any]]:
    """Compute `todo`, choosing where (recorded in `executor` and printed):

    - nothing to compute: no Ray (not even imported);
    - --workers 0: this process;
    - a cluster to connect to (--address, RAY_ADDRESS, or Ray already started in this process): Ray
      tasks there, connected once for the whole run;
    - --ray always: Ray tasks on a local cluster of `workers` CPUs;
    - otherwise (--ray auto): this process when one subject or one worker leaves nothing to run in
      parallel; else this process until the subjects left are expected to save more than a local
      cluster's start-up (RAY_START_S) on `workers` CPUs, then that cluster."""
    n = len(todo)
    address = _cluster_address(address)
    if not todo:
        executor.on, executor.reason = "none", "every subject unchanged since it was cached"
        return
    from tqdm import tqdm

    if workers == 0:
        executor.on, executor.reason = "process", "--workers 0"
    elif address or _ray_running():
        executor.on, executor.reason = "ray", f"the Ray cluster at {address}" if address else "this process's Ray"
    elif use_ray == "always":
        executor.on, executor.reason = "ray", f"--ray always: a local cluster of {workers} CPUs"
    elif n == 1 or workers == 1:
        executor.on = "process"
        executor.reason = ("1 subject to compute" if n == 1 else "--workers 1") + ": nothing to run in parallel"
    else:
        executor.on = "auto"
    bar = tqdm(total=n, desc="prep", unit="subject", disable=None)
    try:
        if executor.on != "auto":
            print(f"prep: {n} subject{'s' if n > 1 else ''} to compute in "
                  f"{'this process' if executor.on == 'process' else 'Ray tasks'} ({executor.reason})", flush=True)
        else:
            # Here until the subjects left, at the median compute time so far, would save more on
            # `workers` Ray workers than a local cluster's start-up costs.
            seconds: list[float] = []
            saving = 0.0
            for result in _in_process(todo, params, workers, bar):
                seconds.append(sum(result["timings"].values()))
                yield result
                saving = (n - len(seconds)) * statistics.median(seconds) * (1 - 1 / workers)
                if saving > RAY_START_S:
                    break
            each = f"{n} subjects to compute, {statistics.median(seconds):.2f} s each here"
            if saving > RAY_START_S:
                executor.on = "process+ray"
                executor.reason = (f"{each}: {workers} Ray workers are expected to save {saving:.1f} s on the "
                                   f"other {n - len(seconds)}, more than starting Ray (~{RAY_START_S:g} s)")
                print(f"prep: {executor.reason}; starting a local Ray cluster", flush=True)
                todo = todo[len(seconds):]
            else:
                executor.on = "process"
                executor.reason = (f"{each}: {workers} Ray workers would not have saved their start-up "
                                   f"(~{RAY_START_S:g} s); --ray always to use Ray")
                print(f"prep: {executor.reason}", flush=True)
                return
        if executor.on.endswith("ray"):
            yield from _ray_tasks(todo, params, workers, address, bar)
        else:
            yield from _in_process(todo, params, workers, bar)
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------
# Cache of per-subject results (a sibling of --out, so swapping the dataset keeps it)


class SubjectCache:
    """<dir>/<h>.json (key + outcome, written last) and <h>.parquet (slices), h = hash of the id."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _stem(self, subject_id: str) -> Path:
        return self.folder / hashlib.sha256(subject_id.encode()).hexdigest()[:24]

    def key(self, subject_id: str) -> str | None:
        meta = self._stem(subject_id).with_suffix(".json")
        try:
            entry = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if entry.get("subject_id") != subject_id:
            return None
        if entry["outcome"]["status"] == "ok" and not self._stem(subject_id).with_suffix(".parquet").is_file():
            return None
        return entry.get("key")

    def outcome(self, subject_id: str) -> dict:
        return json.loads(self._stem(subject_id).with_suffix(".json").read_text())["outcome"]

    def table(self, subject_id: str) -> "pa.Table":
        import pyarrow.parquet as pq

        return pq.read_table(self._stem(subject_id).with_suffix(".parquet"))

    def store(self, result: dict[str, Any], outcome: dict) -> None:
        import pyarrow.parquet as pq

        stem = self._stem(result["subject_id"])
        if result["table"] is not None:
            tmp = stem.with_suffix(".parquet.tmp")
            pq.write_table(result["table"], tmp)
            tmp.replace(stem.with_suffix(".parquet"))
        tmp = stem.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"subject_id": result["subject_id"], "key": result["key"], "outcome": outcome}))
        tmp.replace(stem.with_suffix(".json"))

    def prune(self, keep: set[str]) -> None:
        stems = {self._stem(s).name for s in keep}
        for f in self.folder.iterdir():
            if f.name.split(".")[0] not in stems:
                f.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass
class PrepOptions:
    out: Path
    genes: Path
    cases: Path | None = None
    tcia_root: Path | None = None
    params: PrepParams = field(default_factory=PrepParams)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    na_policy: gt.NaPolicy = field(default_factory=gt.NaPolicy)
    genes_orientation: gt.Orientation = "genes-x-samples"
    workers: int = 2
    address: str | None = None
    cache: Path | None = None
    use_ray: str = "auto"
    """One of USE_RAY."""


class PrepError(RuntimeError):
    """The run as a whole cannot produce a dataset; the message says why and how to fix it.
    `outcomes` holds what happened to each subject, when subjects were looked at."""

    def __init__(self, message: str, outcomes: dict[str, dict] | None = None):
        super().__init__(message)
        self.outcomes = outcomes or {}


def _split_position(subject_id: str, seed: int) -> float:
    """The subject's place in [0, 1): a seeded hash of its id alone."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{subject_id}".encode()).digest()[:8], "big") / 2.0**64


def assign_splits(subjects: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Subject-level split by a seeded hash of each id: train if its position in [0, 1) is below
    the train fraction, val if below train + val, else test.

    A subject's split depends on its id, the seed and the fractions only, so adding or removing
    subjects never moves another one (no test subject of one run is a training subject of the
    next). The price: realised fractions are binomial around the requested ones, so a small cohort
    may get an empty split. No rule can fill an empty split without moving a subject when another
    is added, so none is applied; prep refuses an empty training split and names a seed that fills
    it (`seed_with_splits`)."""
    train, val, test = fractions
    out = {}
    for s in subjects:
        u = _split_position(s, seed)
        out[s] = "train" if u < train else "val" if u < train + val or test == 0 else "test"
    return out


def split_counts(splits: dict[str, str], subjects: list[str]) -> str:
    return " / ".join(f"{sum(splits[s] == name for s in subjects)} {name}" for name in ("train", "val", "test"))


def seed_with_splits(subjects: list[str], fractions: tuple[float, float, float], seed: int,
                     tries: int = 1000) -> int | None:
    """The first seed after `seed` that gives these subjects 2 training subjects (1 if there is one
    subject) and, when there are enough subjects for that too, every split with a nonzero fraction."""
    others = [name for name, f in zip(("val", "test"), fractions[1:]) if f > 0]
    want_train = min(2, len(subjects))
    if len(subjects) < want_train + len(others):
        others = []
    for s in range(seed + 1, seed + 1 + tries):
        got = list(assign_splits(subjects, fractions, s).values())
        if got.count("train") >= want_train and all(name in got for name in others):
            return s
    return None


def _recover(out: Path) -> None:
    """Undo what a killed run left beside --out: finish an interrupted swap, drop stale temp dirs."""
    parent = out.parent
    for tmp in parent.glob(f".{out.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
    olds = sorted(parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    for old in olds:
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if not out.exists() and (old / "manifest.json").is_file():
            os.replace(old, out)  # killed between the two renames of a swap: restore the previous dataset
        else:
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(tmp: Path, out: Path) -> None:
    """Swap the finished dataset in: the previous one stays complete until the new one replaces it."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _gene_subject_problems(table: gt.GeneTable) -> dict[str, str]:
    counts: dict[str, int] = {}
    for s in table.subjects:
        counts[s] = counts.get(s, 0) + 1
    return {s: f"subject id appears {c} times in the gene table; ids must be unique - remove or rename the copies"
            for s, c in counts.items() if c > 1}


def run_prep(opts: PrepOptions) -> dict:
    """Run prep end to end; returns the manifest. Raises PrepError when no dataset can be made."""
    import pyarrow as pa

    from radiogen import __version__
    from radiogen import schema
    from radiogen.genes import Z_CLIP, fit_gene_stats
    from radiogen.genes import clipped as gene_clipped

    from data_prep import readers

    start = time.perf_counter()
    if opts.use_ray not in USE_RAY:
        raise PrepError(f"use_ray must be one of {', '.join(USE_RAY)}, got {opts.use_ray!r}")
    out = opts.out.resolve()
    if out.exists() and not (out / schema.MANIFEST_NAME).is_file() and any(out.iterdir()):
        raise PrepError(f"--out {out} exists and is not a prepared dataset (no {schema.MANIFEST_NAME}); "
                        f"choose a new or empty folder so nothing of yours is overwritten")
    out.parent.mkdir(parents=True, exist_ok=True)
    _recover(out)

    try:
        genes = gt.read_gene_table(opts.genes, opts.genes_orientation)
        cases = (readers.discover_tcia(opts.tcia_root) if opts.tcia_root is not None
                 else readers.read_cases_file(opts.cases))
    except (gt.GeneTableError, ValueError) as err:
        raise PrepError(str(err)) from None
    genes_sha = schema.sha256_file(opts.genes)

    # --- match imaging and gene subjects; everything unusable gets an outcome now
    outcomes: dict[str, dict[str, Any]] = {}
    by_id: dict[str, list[SubjectInputs]] = {}
    for c in cases:
        by_id.setdefault(c.subject_id, []).append(c)
    gene_problems = _gene_subject_problems(genes)
    gene_ids = set(genes.subjects)
    runnable: list[SubjectInputs] = []
    for sid in sorted(set(by_id) | gene_ids):
        entries = by_id.get(sid, [])
        reason = ""
        try:
            readers.check_subject_id(sid)
        except SubjectError as err:
            reason = str(err)
        if not reason and len(entries) > 1:
            reason = (f"subject id appears {len(entries)} times in the imaging inputs; ids must be unique - "
                      f"remove or rename the copies")
        if not reason and sid in gene_problems:
            reason = gene_problems[sid]
        if not reason and not entries:
            reason = "in the gene table but no image was found for it"
        if not reason and sid not in gene_ids:
            reason = f"has an image but no column in the gene table {opts.genes.name}"
        if reason:
            outcomes[sid] = {"status": "excluded", "reason": reason, "split": None}
        else:
            runnable.append(entries[0])
    if not runnable:
        hint = ""
        if by_id and gene_ids and not (set(by_id) & gene_ids):
            hint = (f"; no imaging subject id (e.g. {sorted(by_id)[:3]}) is in the gene table (ids there look like "
                    f"{sorted(gene_ids)[:3]}) - if the table is samples x genes pass "
                    f"--genes-orientation samples-x-genes")
        raise PrepError(f"no subject has both an image and genes{hint}", outcomes)

    splits = assign_splits([c.subject_id for c in runnable], opts.split, opts.params.seed)

    # --- per-subject work, skipping unchanged subjects
    cache = SubjectCache(opts.cache or out.parent / f".{out.name}.prep-cache")
    cached_keys = {c.subject_id: k for c in runnable if (k := cache.key(c.subject_id)) is not None}
    # Slices of a subject stay in memory only when they could not be cached; the others are read
    # back from the cache one subject at a time while the dataset is written.
    in_memory: dict[str, "pa.Table"] = {}
    processed = from_cache = 0
    unchanged, todo = fingerprint_all(runnable, opts.params, cached_keys)
    executor = Executor()
    for result in itertools.chain(unchanged, run_subjects(todo, opts.params, opts.workers, opts.address,
                                                          opts.use_ray, executor)):
        sid = result["subject_id"]
        if result["cached"]:
            outcome = {**cache.outcome(sid), "from_cache": True}
            from_cache += 1
        else:
            processed += 1
            outcome = {"status": result["status"], "reason": result["reason"], **result["info"],
                       "inputs": result["inputs"], "key": result["key"],
                       "seconds": {k: round(v, 3) for k, v in result["timings"].items()}}
            if result["deterministic"] and result["key"] is not None:
                cache.store(result, outcome)
            elif result["table"] is not None:
                in_memory[sid] = result["table"]
            outcome = {**outcome, "from_cache": False}
            if "traceback" in result:
                print(f"prep: {sid}: {result['traceback']}", file=sys.stderr)
        outcome["split"] = splits[sid] if outcome["status"] == "ok" else None
        outcomes[sid] = outcome

    ok = sorted(s for s, o in outcomes.items() if o["status"] == "ok")
    if not ok:
        raise PrepError("no subject made it through prep (nothing was written; any previous dataset at --out "
                        "is unchanged)", outcomes)
    train = [s for s in ok if splits[s] == "train"]
    warnings: list[str] = list(genes.warnings)
    empty = [name for name, f in zip(("val", "test"), opts.split[1:]) if f > 0 and name not in
             {splits[s] for s in ok}]
    hint = ""
    if len(train) < 2 or empty:
        better = seed_with_splits(ok, opts.split, opts.params.seed)
        hint = (f"--seed {better} gives {split_counts(assign_splits(ok, opts.split, better), ok)}"
                if better is not None else "change --split")
    if not train:
        failed = any(o["status"] == "failed" for o in outcomes.values())
        raise PrepError(f"no training subject: the {len(ok)} subjects that made it are split "
                        f"{split_counts(splits, ok)} by --seed {opts.params.seed} (each subject's split is a "
                        f"seeded hash of its id, so a small cohort can miss a split); {hint}"
                        + ("; or fix the failed subjects" if failed else ""), outcomes)
    if empty:
        warnings.append(f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty: "
                        f"{len(ok)} subjects split {split_counts(splits, ok)} by --seed {opts.params.seed}; {hint}")
    if len(train) < 2:
        warnings.append(f"1 training subject: genes constant on the training split cannot be found and there are "
                        f"no log_zscore statistics; {hint}")

    # --- genes over the subjects in the dataset; constant genes dropped and statistics fitted on train only
    train_rows = [ok.index(s) for s in train]
    try:
        selection = gt.select_genes(genes, ok, train, opts.na_policy)
        constant = gt.drop_constant(selection, train_rows) if len(train) >= 2 else []
    except gt.GeneTableError as err:
        raise PrepError(str(err), outcomes) from None
    if constant:
        warnings.append(f"{len(constant)} gene{'s' if len(constant) > 1 else ''} constant on the training split "
                        f"dropped (listed in manifest.json genes.dropped): "
                        f"{', '.join(constant[:5])}{', ...' if len(constant) > 5 else ''}")
    stats, stats_note, clipped = None, "", {"values": 0, "subjects": []}
    try:
        fitted = fit_gene_stats(selection.values[train_rows], "log_zscore")
        if len(train) < 2:  # one subject has no spread: every gene would be "constant"
            raise ValueError("log_zscore needs at least 2 training subjects to estimate a spread, got 1")
        stats = fitted.to_dict()
        hit = gene_clipped(fitted, selection.values)
        clipped = {"values": int(hit.sum()), "subjects": [s for s, h in zip(ok, hit.any(1)) if h]}
        if clipped["values"]:
            warnings.append(f"{clipped['values']} gene values of {len(clipped['subjects'])} subjects lie outside "
                            f"+-{fitted.clip:g} after log_zscore and are clipped to it (manifest.json genes.clipped)")
    except ValueError as err:
        stats_note = str(err)

    # --- write into a temp dir beside --out, then swap
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        def with_split() -> Iterator["pa.Table"]:
            for sid in ok:
                t = in_memory[sid] if sid in in_memory else cache.table(sid)
                yield t.add_column(2, "split", pa.array([splits[sid]] * t.num_rows, pa.string()))

        files = schema.write_slice_files(with_split(), tmp, image_size=opts.params.image_size)
        genes_file = schema.write_gene_file(ok, [splits[s] for s in ok], selection.values, tmp)
        counts: dict[str, Any] = {"slices": {k: {s: 0 for s in schema.SPLITS} for k in schema.KINDS},
                                  "subjects": {s: 0 for s in schema.SUBJECT_STATUSES},
                                  "processed": processed, "from_cache": from_cache}
        for sid in ok:
            counts["slices"]["nodule"][splits[sid]] += outcomes[sid]["n_nodule_slices"]
            counts["slices"]["background"][splits[sid]] += outcomes[sid]["n_background_slices"]
        for o in outcomes.values():
            counts["subjects"][o["status"]] += 1
        inputs = {str(opts.genes): genes_sha}
        for o in outcomes.values():
            inputs.update(o.get("inputs", {}))
        p = opts.params
        manifest = {
            "schema_version": schema.SCHEMA_VERSION,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "radiogen_version": __version__,
            "image": {"size": p.image_size, "pixel_spacing_mm": p.voi_mm / p.image_size, "voi_mm": p.voi_mm,
                      "hu_window": list(p.hu_window), "dtype": "float32", "mask_dtype": "uint8",
                      "byte_order": "little", "layout": "row-major (H, W) = (j, i) of the VOI grid"},
            "params": {**p.cache_dict(), "split": list(opts.split), "na_policy": str(opts.na_policy),
                       "genes_orientation": opts.genes_orientation,
                       "source": str(opts.tcia_root or opts.cases), "source_kind": "tcia" if opts.tcia_root else "cases"},
            "gene_names": selection.names,
            "genes": {"source": str(opts.genes), "orientation": opts.genes_orientation,
                      "na_policy": str(opts.na_policy), "n_in_table": len(genes.genes), "n_kept": len(selection.names),
                      "dropped": selection.dropped, "imputed_cells": [list(c) for c in selection.imputed],
                      "non_numeric_examples": gt.describe_bad_cells(genes), "warnings": genes.warnings,
                      "stats_fitted_on": "train", "stats_note": stats_note, "zscore_clip": Z_CLIP,
                      "clipped": clipped},
            "gene_stats": stats,
            "splits": {s: [sid for sid in ok if splits[sid] == s] for s in schema.SPLITS},
            "counts": counts,
            "inputs": inputs,
            "subjects": outcomes,
            "files": {"slices": files, "genes": genes_file},
            "outputs": schema.output_hashes(tmp, [*files, genes_file]),
            "warnings": warnings,
            "executor": asdict(executor),
        }
        schema.write_manifest(manifest, tmp)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cache.prune({c.subject_id for c in runnable})
    manifest["seconds"] = round(time.perf_counter() - start, 2)
    return manifest


def outcome_lines(outcomes: dict[str, dict], per_reason: int = 3, per_warning: int = 5) -> list[str]:
    """One line per failed/excluded subject; a reason shared by many subjects (e.g. genes without an
    image) is printed once with a count. Subject warnings ("<kind>: <details>") are printed one line
    per kind with the subjects it concerns; the details stay in the manifest."""
    groups: dict[tuple[str, str], list[str]] = {}
    kinds: dict[str, dict[str, list[str]]] = {}
    for sid, o in sorted(outcomes.items()):
        if o["status"] != "ok":
            groups.setdefault((o["status"].upper(), o["reason"]), []).append(sid)
        for w in o.get("warnings", []):
            kind, _, detail = w.partition(": ")
            kinds.setdefault(kind, {}).setdefault(sid, []).append(detail)
    lines = []
    for (status, reason), sids in groups.items():
        if len(sids) <= per_reason:
            lines += [f"  {status:8s} {sid}: {reason}" for sid in sids]
        else:
            lines.append(f"  {status:8s} {len(sids)} subjects ({', '.join(sids[:per_reason])}, ...): {reason}")
    for kind, by_subject in kinds.items():
        sids = list(by_subject)
        if len(sids) == 1:
            lines.append(f"warning: {sids[0]}: {kind}: {'; '.join(d for d in by_subject[sids[0]] if d)}".rstrip(": "))
        else:
            more = ", ..." if len(sids) > per_warning else ""
            lines.append(f"warning: {len(sids)} subjects: {kind} ({', '.join(sids[:per_warning])}{more}; "
                         f"details in manifest.json subjects)")
    return lines


def summary(manifest: dict, out: Path) -> str:
    c = manifest["counts"]
    ok = manifest["splits"]
    lines = [f"prep: {c['subjects']['ok']} subjects ok ({len(ok['train'])} train / {len(ok['val'])} val / "
             f"{len(ok['test'])} test), {c['subjects']['failed']} failed, {c['subjects']['excluded']} excluded; "
             f"processed {c['processed']}, reused {c['from_cache']} from cache",
             f"slices: {sum(c['slices']['nodule'].values())} nodule, {sum(c['slices']['background'].values())} "
             f"background; genes: {manifest['genes']['n_kept']} of {manifest['genes']['n_in_table']} kept"
             + "".join(f", {len(v)} dropped ({k})" for k, v in manifest["genes"]["dropped"].items())
             + (f", {len(manifest['genes']['imputed_cells'])} NA cells imputed with the train median"
                if manifest["genes"]["imputed_cells"] else "")]
    if manifest["gene_stats"] is None:
        lines.append(f"gene statistics: no log_zscore ({manifest['genes']['stats_note']})")
    lines += outcome_lines(manifest["subjects"])
    lines += [f"warning: {w}" for w in manifest["warnings"]]
    lines.append(f"wrote {out} ({len(manifest['files']['slices'])} slice files) in {manifest.get('seconds', 0):.1f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    from data_prep.cli import add_prep_parser  # the flags live there, light enough for `radiogen --help`

    add_prep_parser(subparsers).set_defaults(func=_run)


def options_from_args(args: argparse.Namespace) -> PrepOptions:
    if args.image_size < 8:
        raise PrepError(f"--image-size must be >= 8, got {args.image_size}")
    if args.voi_mm <= 0 or args.bg_vois < 0 or args.bg_slices < 1 or args.workers < 0:
        raise PrepError("--voi-mm must be > 0, --bg-vois >= 0, --bg-slices >= 1 and --workers >= 0")
    params = PrepParams(image_size=args.image_size, voi_mm=args.voi_mm, bg_vois=args.bg_vois,
                        bg_slices=args.bg_slices, seed=args.seed)
    return PrepOptions(out=args.out, genes=args.genes, cases=args.cases, tcia_root=args.tcia_root, params=params,
                       split=args.split, na_policy=args.na_policy, genes_orientation=args.genes_orientation,
                       workers=args.workers, address=args.address, cache=args.cache, use_ray=args.use_ray)


def _run(args: argparse.Namespace) -> int:
    try:
        manifest = run_prep(options_from_args(args))
    except PrepError as err:
        for line in outcome_lines(err.outcomes):
            print(line, file=sys.stderr)
        print(f"prep failed: {err}", file=sys.stderr)
        return 1
    print(summary(manifest, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="radiogen")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["prep", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
