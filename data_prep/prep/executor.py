"""Where the subjects to compute run: in this process, or as Ray tasks (one per subject).

Ray is worth it only when the subjects left would take longer here than a local cluster's start-up,
so `run_subjects` decides from measured time (see its docstring); the choice and its reason go
into the manifest ("executor") and one printed line.
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass
from typing import Iterator

from data_prep.constants import USE_RAY
from data_prep.readers import SubjectInputs

from .case import PrepParams, SubjectResult, process_subject

__all__ = ["USE_RAY", "RAY_START_S", "Executor", "run_subjects"]

RAY_START_S = 10.0
"""What starting a local Ray cluster and its first workers is taken to cost. Without a cluster to
connect to, prep starts one only when the subjects left are expected to save more than this.
Measured on a 2-core machine: 5-10 s idle, several times that when busy; erring toward this process
costs a large cohort at most this much, erring toward Ray can cost a small one more than its run."""

Todo = list[tuple[SubjectInputs, dict[str, str]]]
"""Subjects to compute, each with the hashes of its input files."""


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


def _in_process(todo: Todo, params: PrepParams, threads: int, bar) -> Iterator[SubjectResult]:
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


def _ray_tasks(todo: Todo, params: PrepParams, workers: int, address: str | None, bar) -> Iterator[SubjectResult]:
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
                result = SubjectResult(case.subject_id, deterministic=False,
                                       reason=f"worker failed: {type(err).__name__}: "
                                              f"{str(err).splitlines()[0] if str(err) else ''}")
            bar.update()
            yield result
    finally:
        if started:
            ray.shutdown()


def _fixed_choice(n: int, workers: int, address: str | None, use_ray: str) -> tuple[str, str]:
    """(where, why) when the choice needs no measurement; ("auto", "") when it does."""
    if workers == 0:
        return "process", "--workers 0"
    if address or _ray_running():
        return "ray", f"the Ray cluster at {address}" if address else "this process's Ray"
    if use_ray == "always":
        return "ray", f"--ray always: a local cluster of {workers} CPUs"
    if n == 1 or workers == 1:
        return "process", ("1 subject to compute" if n == 1 else "--workers 1") + ": nothing to run in parallel"
    return "auto", ""


def run_subjects(todo: Todo, params: PrepParams, workers: int, address: str | None, use_ray: str,
                 executor: Executor) -> Iterator[SubjectResult]:
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

    executor.on, executor.reason = _fixed_choice(n, workers, address, use_ray)
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
                seconds.append(sum(result.timings.values()))
                yield result
                saving = (n - len(seconds)) * statistics.median(seconds) * (1 - 1 / workers)
                if saving > RAY_START_S:
                    break
            each = f"{n} subjects to compute, {statistics.median(seconds):.2f} s each here"
            if saving <= RAY_START_S:
                executor.on = "process"
                executor.reason = (f"{each}: {workers} Ray workers would not have saved their start-up "
                                   f"(~{RAY_START_S:g} s); --ray always to use Ray")
                print(f"prep: {executor.reason}", flush=True)
                return
            executor.on = "process+ray"
            executor.reason = (f"{each}: {workers} Ray workers are expected to save {saving:.1f} s on the "
                               f"other {n - len(seconds)}, more than starting Ray (~{RAY_START_S:g} s)")
            print(f"prep: {executor.reason}; starting a local Ray cluster", flush=True)
            todo = todo[len(seconds):]
        if executor.on.endswith("ray"):
            yield from _ray_tasks(todo, params, workers, address, bar)
        else:
            yield from _in_process(todo, params, workers, bar)
    finally:
        bar.close()
