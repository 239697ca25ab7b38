"""How much of the machine a run takes: the Ray connection, CPUs per Train worker, trials at a time, torch threads,
and whether the training split is held in memory.

Two kinds of work share a cluster. A Ray Train run streams (or reads once) its data through Ray Data, which only
schedules on whole CPUs, so one CPU stays free of Train workers. A direct sweep trial (one process training with
its data in memory, ray_jobs/direct_trial.py) needs no Ray Data at all, so trials can fill every CPU.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from radiogen.data import plan_data_mode

from .quiet import apply_ray_env, ray_started, recapture

RAY_DATA_CPUS = 1.0
"""Ray Data only schedules on whole CPUs: one stays free of Train workers, or the per-epoch shuffle waits forever."""
MIN_CPUS_PER_WORKER = 0.1
RESOURCE_WAIT_S = 60.0
"""How long a job joining an existing cluster waits for nodes still starting before it gives up."""
TRIAL_DRIVER_CPUS = 0.01
"""A Train-path trial's own process (its Tune function) only waits on its TorchTrainer; the workers carry the
real request (a Tune trial cannot ask for 0 CPUs)."""
LOCAL_ONE_THREAD_MAX_SIZE = 32
"""`--local` trains with one torch thread up to this image size: measured on 2 cores, the tiny config's 32 px
steps ran at 0.14-0.43x their one-thread speed with two threads (threads wait on each other more than they
compute), while 64 px ran at 1.55x and 128 px at 1.22x (ray_jobs/bench/train.py reports both)."""


class ResourceMismatch(ValueError):
    """The requested workers or trials do not fit the cluster; the message names the flag to change."""


def connect_ray(address: str | None, log_to_driver: bool = True) -> bool:
    """Initialise Ray (once per process); True when joining a cluster that exists already. With
    log_to_driver=False the workers' output stays in Ray's log files (a sweep prints one line per event)."""
    import ray

    recapture()
    joining = bool(address or os.environ.get("RAY_ADDRESS"))
    if not ray.is_initialized():
        # The job's workers get the quiet environment (ray_jobs/quiet.py); a submitted job has it from
        # ray_jobs/runtime_env.yaml already.
        env = apply_ray_env(address or os.environ.get("RAY_ADDRESS"))
        ray.init(address=address, dashboard_host="127.0.0.1", configure_logging=False, log_to_driver=log_to_driver,
                 **({} if env is None else {"runtime_env": {"env_vars": env}}))
        recapture()  # init cleared the "ray" logger's handlers
        ray_started()
    return joining


def plan_cpus_per_worker(cpus: float, gpus: float, num_workers: int, requested: float | None, gpu: bool) -> float:
    """CPUs per Train worker that leave RAY_DATA_CPUS for Ray Data; raise ResourceMismatch naming the flag."""
    if num_workers < 1:
        raise ResourceMismatch(f"--num-workers must be at least 1, got {num_workers}")
    if gpu and gpus < num_workers:
        raise ResourceMismatch(f"--gpu asks for one GPU per worker: --num-workers {num_workers} needs {num_workers} "
                               f"GPUs but the cluster has {gpus:g}; lower --num-workers to {int(gpus)} or leave "
                               f"out --gpu" if gpus >= 1 else
                               "--gpu asks for one GPU per worker but the cluster has no GPU; leave out --gpu")
    spare = cpus - RAY_DATA_CPUS
    if requested is None:
        share = min(1.0, math.floor(spare / num_workers * 1000) / 1000)  # Ray counts resources in 1e-4 units
        if share < MIN_CPUS_PER_WORKER:
            most = math.floor(round(spare / MIN_CPUS_PER_WORKER, 6))
            fix = (f"lower --num-workers to {most} or fewer" if most >= 1 else
                   "train with --local, or on a cluster with at least 2 CPUs")
            raise ResourceMismatch(f"--num-workers {num_workers} on a cluster of {cpus:g} CPUs leaves "
                                   f"{max(share, 0):g} CPU per worker after {RAY_DATA_CPUS:g} CPU for Ray Data (at "
                                   f"least {MIN_CPUS_PER_WORKER:g} is needed); {fix}")
        return share
    if requested <= 0:
        raise ResourceMismatch(f"--cpus-per-worker must be > 0, got {requested:g}")
    if requested * num_workers > spare + 1e-9:
        fits = math.floor(max(spare, 0) / num_workers * 1000) / 1000
        raise ResourceMismatch(
            f"--cpus-per-worker {requested:g} x --num-workers {num_workers} = {requested * num_workers:g} CPUs, but "
            f"the cluster has {cpus:g} and Ray Data needs {RAY_DATA_CPUS:g} of them; lower --cpus-per-worker to "
            f"{fits:g} or less (or leave it out to size it automatically) or lower --num-workers")
    return requested


def cluster_size() -> tuple[float, float]:
    """(CPUs, GPUs) of the connected Ray cluster."""
    import ray

    total = ray.cluster_resources()
    return float(total.get("CPU", 0)), float(total.get("GPU", 0))


def size_workers(num_workers: int, requested: float | None, gpu: bool, joining: bool) -> float:
    """Check the cluster's resources against a Ray Train run's request; print and return the CPUs per worker.
    A job joining a cluster waits up to RESOURCE_WAIT_S for nodes that are still starting."""
    deadline = time.monotonic() + (RESOURCE_WAIT_S if joining else 0)
    waited = False
    while True:
        cpus, gpus = cluster_size()
        try:
            share = plan_cpus_per_worker(cpus, gpus, num_workers, requested, gpu)
            break
        except ResourceMismatch:
            if time.monotonic() >= deadline:
                raise
            if not waited:
                print(f"resources: the cluster has {cpus:g} CPUs, {gpus:g} GPUs so far; waiting up to "
                      f"{RESOURCE_WAIT_S:g} s for more nodes")
                waited = True
            time.sleep(2)
    how = "--cpus-per-worker" if requested is not None else "sized automatically"
    print(f"resources: {num_workers} worker(s) x {share:g} CPU{' + 1 GPU' if gpu else ''} ({how}); "
          f"cluster {cpus:g} CPUs, {gpus:g} GPUs; {cpus - share * num_workers:g} CPU left for Ray Data")
    return share


@dataclass(frozen=True)
class TrialPlan:
    """How a sweep's trials share the cluster."""

    direct: bool
    """True: each trial is one process that trains in place (no Ray Train, no Ray Data CPU); False: each trial
    drives a Ray Train run of `num_workers` workers."""
    cpus: float
    """CPUs per direct trial, or per Train worker."""
    concurrent: int
    """Trials at a time."""
    threads: int
    """torch intra-op threads per training process: its whole CPUs, at least 1 (1 for small images)."""


def plan_trials(cpus: float, gpus: float, num_workers: int, requested: float | None, gpu: bool,
                max_concurrent: int | None, direct: bool = False, image_size: int | None = None) -> TrialPlan:
    """Trials at a time and their CPUs. Train-path trials leave RAY_DATA_CPUS free; direct trials fill the cluster
    at one CPU each unless --max-concurrent or --cpus-per-worker says otherwise. Raise ResourceMismatch."""
    if max_concurrent is not None and max_concurrent < 1:
        raise ResourceMismatch(f"--max-concurrent must be at least 1, got {max_concurrent}")
    per_trial_gpus = 1 if direct else num_workers
    if gpu and max_concurrent and gpus < per_trial_gpus * max_concurrent:
        raise ResourceMismatch(f"--gpu: {max_concurrent} trial(s) x {per_trial_gpus} worker(s) need "
                               f"{per_trial_gpus * max_concurrent} GPUs but the cluster has {gpus:g}; lower "
                               f"--max-concurrent or --num-workers, or leave out --gpu")
    if direct:
        cpw, n = _plan_direct(cpus, requested, max_concurrent)
    else:
        cpw, n = _plan_train_path(cpus, gpus, num_workers, requested, max_concurrent)
    if gpu:
        n = min(n, math.floor(gpus / per_trial_gpus))
        if n < 1:
            raise ResourceMismatch(f"--gpu: a trial needs {per_trial_gpus} GPU(s) but the cluster has {gpus:g}; "
                                   f"leave out --gpu")
    return TrialPlan(direct, cpw, n, worker_threads(cpw, image_size))


def _plan_direct(cpus: float, requested: float | None, max_concurrent: int | None) -> tuple[float, int]:
    if requested is not None:
        if requested <= 0:
            raise ResourceMismatch(f"--cpus-per-worker must be > 0, got {requested:g}")
        fits = math.floor(cpus / requested + 1e-9)
        if fits < 1 or (max_concurrent and max_concurrent > fits):
            raise ResourceMismatch(f"--max-concurrent {max_concurrent or 1} x --cpus-per-worker {requested:g} does "
                                   f"not fit a cluster of {cpus:g} CPUs; lower either")
        return requested, max_concurrent or fits
    n = max_concurrent or max(1, math.floor(cpus))
    share = math.floor(cpus / n * 1000) / 1000
    if share < MIN_CPUS_PER_WORKER:
        raise ResourceMismatch(f"--max-concurrent {n} on a cluster of {cpus:g} CPUs leaves {share:g} CPU per trial "
                               f"(at least {MIN_CPUS_PER_WORKER:g} is needed); lower --max-concurrent")
    return share, n


def _plan_train_path(cpus: float, gpus: float, num_workers: int, requested: float | None,
                     max_concurrent: int | None) -> tuple[float, int]:
    n = max_concurrent or 1
    budget = cpus - TRIAL_DRIVER_CPUS * n
    if requested is None and max_concurrent:
        try:  # the workers of N trials sized together, like one training of N x workers
            cpw = plan_cpus_per_worker(budget, gpus, num_workers * n, None, False)
        except ResourceMismatch:
            raise ResourceMismatch(f"--max-concurrent {n} x --num-workers {num_workers} on a cluster of {cpus:g} "
                                   f"CPUs leaves too little CPU per worker after {RAY_DATA_CPUS:g} CPU for Ray Data; "
                                   f"lower --max-concurrent") from None
    else:
        cpw = plan_cpus_per_worker(budget, gpus, num_workers, requested, False)
    fits = math.floor((cpus - RAY_DATA_CPUS + 1e-9) / (num_workers * cpw + TRIAL_DRIVER_CPUS))
    if max_concurrent and max_concurrent > fits:
        raise ResourceMismatch(f"--max-concurrent {max_concurrent}: only {fits} trial(s) of {num_workers} worker(s) x "
                               f"{cpw:g} CPU fit in {cpus:g} CPUs with {RAY_DATA_CPUS:g} left for Ray Data; lower "
                               f"--max-concurrent or --cpus-per-worker")
    return cpw, max_concurrent or fits


def worker_threads(cpus: float, image_size: int | None = None) -> int:
    """torch intra-op threads of a process that reserved `cpus` CPUs: the whole CPUs of its share, at least 1, and
    one for images of at most LOCAL_ONE_THREAD_MAX_SIZE px (a second thread slows those steps down)."""
    if image_size is not None and image_size <= LOCAL_ONE_THREAD_MAX_SIZE:
        return 1
    return max(1, math.floor(cpus + 1e-9))


def local_threads(image_size: int) -> tuple[int, str]:
    """(torch threads, why) for `--local`: OMP_NUM_THREADS when the user set it; one thread for small images
    (LOCAL_ONE_THREAD_MAX_SIZE); else this process's CPUs less those other processes keep busy (the 1-minute
    load average: a thread on a busy core waits for it, and the whole step with it)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, int(os.environ["OMP_NUM_THREADS"])), "OMP_NUM_THREADS"
    if image_size <= LOCAL_ONE_THREAD_MAX_SIZE:
        return 1, f"{image_size} px steps are too small to share between threads"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    threads = max(1, min(cores, cores - busy))
    return threads, f"{cores} CPU(s), {min(busy, cores)} kept busy by other processes"


def available_memory() -> int | None:
    """Bytes of host memory available on this node (None when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:  # not Linux: the plan then goes by the per-worker budget alone
        pass
    return None


def choose_data_mode(requested: str, manifest: dict, num_workers: int, local: bool = False) -> str:
    """memory or streaming for this run (--local always reads into memory); prints the choice and why."""
    if local:
        print("data: in memory (--local reads the training split with pyarrow once)")
        return "memory"
    mode, reason = plan_data_mode(requested, manifest, num_workers, available_memory())
    print(f"data: {mode} ({reason})")
    return mode
