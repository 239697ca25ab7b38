"""The training loop every run executes: Ray Train workers and the `--local` debug run alike.

Read top to bottom: setup, resume, then steps of `radiogen.train_step` with metrics, validation,
figures and checkpoints. What differs between Ray and local lives in a `Session` (where batches come
from, how a checkpoint is committed, DDP or not); the loop itself imports no Ray.

Exactly-once metrics: metric records are buffered and written into each checkpoint's
`metrics.jsonl`; they reach MLflow only after that checkpoint is committed. A worker failure rolls
back to the last checkpoint and recomputes the lost steps, so no step is logged twice or missed.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from radiogen import schema
from radiogen.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_failed
from radiogen.config import ExperimentConfig, to_dict
from radiogen.data import GeneLookup, MismatchPool, Slices, assemble_batch, decode_pairs
from radiogen.figures import fig2_grid, save_figure
from radiogen.genes import GeneStats
from radiogen.evaluation.objective import MapReference, map_objective
from radiogen.metrics import REALISM_KEYS, outside_mask_l1, realism_report
from radiogen.train_step import TrainState, build_training, local_rng, refresh_ema_bn, train_step

from .phases import Phases
from .signals import held_signals
from .tracking import RunRequest, Tracker

STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
Records = dict[str, np.ndarray]
T = TypeVar("T")


@dataclass
class RunSettings:
    """Everything a worker needs, as plain data (it crosses the Ray boundary)."""

    config: ExperimentConfig
    """The resolved experiment config, built once by the command or the sweep trial (it pickles across Ray)."""
    tracking_uri: str
    run_id: str | None
    """The MLflow run to log into; None when `run_request` names one that rank 0 opens itself."""
    genes: dict[str, Any]
    """{"subject_ids", "values" (raw, subjects x genes), "stats" (GeneStats dict), "names"}: joined on the worker."""
    pool: Records = field(default_factory=dict)
    """Training nodule rows of several subjects seeding the MismatchPool (for single-subject batches)."""
    validation: dict[str, Records] = field(default_factory=dict)
    """{"nodules": records, "backgrounds": records, "map": {"subject_ids", "phenotype"[, "links", "programs"]} or
    {}, "frechet_floor": float or None} of the validation split (rank 0 evaluates them; "map" is the real
    phenotype per validation subject, and with a truth file the (genes x programs) true links and the subjects'
    programs, for val/map_objective and val/response/*; the floor scales val/frechet_radiomic:
    ray_jobs.map_reference)."""
    log_every: int = 10
    val_every: int = 100
    checkpoint_every: int = 100
    data_timeout: float = 300.0
    """Seconds without a batch from the data pipeline before `DataTimeout` (0 = wait forever)."""
    data_mode: str = "memory"
    """memory: each worker decodes its training shard once and shuffles indices per epoch (on its device);
    streaming: Ray Data re-shuffles and streams every epoch (datasets that do not fit). --local is always memory."""
    threads: int | None = None
    """torch intra-op threads of a Ray worker (its CPU reservation, at least 1); None = torch's default (--local)."""
    shuffle: bool = True
    """A fresh order every epoch; False keeps file order (--no-shuffle)."""
    progress_every: int = 0
    """Steps between the progress lines rank 0 prints (a multiple of log_every; 0 = none)."""
    fail_at_step: int | None = None
    """Test-only: the last rank raises once at this step (a marker file makes it fire only once)."""
    fail_marker: str | None = None
    run_request: RunRequest | None = None
    """A sweep's Train-path trial: the run rank 0 opens (or re-attaches), so one process per trial opens MLflow."""
    phases: dict[str, float] = field(default_factory=dict)
    """Unix times of the phases reached before the loop (start, mlflow_open, data_ready; ray_jobs/phases.py)."""
    log_model: str = "full"
    """What rank 0 logs at the end: "full" (weights + an MLflow pyfunc model) or "weights" (a sweep's trials: the
    sweep logs the best trial's model once, from its weights)."""


class Session(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module: ...
    def epoch_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Slices, Slices]]: ...
    def latest_checkpoint(self) -> Path | None: ...
    def previous_checkpoint(self, checkpoint: Path) -> Path | None: ...
    def commit(self, checkpoint_dir: Path | None, step: int, metrics: dict[str, float]) -> None: ...


class MetricWindow:
    """Sums step metrics on the device (no sync per step); `.flush()` syncs once per log interval."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps, self.wait, self.start = 0, 0.0, time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor], wait: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.steps += 1
        self.wait += wait

    def flush(self, images_per_step: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        out = {k: v.item() / self.steps for k, v in self.sums.items()}
        out["perf/images_per_s"] = self.steps * images_per_step / elapsed
        out["perf/data_wait_fraction"] = self.wait / elapsed
        self.reset()
        return out


class DataTimeout(RuntimeError):
    """The data pipeline yielded no batch for --data-timeout seconds."""


_END = object()


def watched(items: Iterator[T], timeout: float, what: str) -> Iterator[T]:
    """`items`, pulled by a thread one item ahead, so that a wait of more than `timeout` seconds for the
    next item raises DataTimeout instead of blocking forever; `timeout` <= 0 passes `items` through."""
    if timeout <= 0:
        yield from items
        return
    box: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def pull() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            put((_END, err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    threading.Thread(target=pull, name="radiogen-data-watchdog", daemon=True).start()
    try:
        while True:
            try:
                item, err = box.get(timeout=timeout)
            except queue.Empty:
                raise DataTimeout(
                    f"no batch from the data pipeline for {timeout:g} s ({what}). Likely causes: Ray Data gets no "
                    f"CPU (the Train workers reserve them all: leave --cpus-per-worker out to size it, or lower it "
                    f"or --num-workers so one whole CPU stays free), or the dataset is unreadable or on stalled "
                    f"storage (check it with a --local run). Raise --data-timeout for very slow storage; 0 turns "
                    f"this watchdog off") from None
            if err is not None:
                raise err
            if item is _END:
                return
            yield item
    finally:
        stop.set()


SUMMARY_METRICS = ("val/frechet_radiomic", "val/l1_background", "val/map_objective")


class Progress:
    """Rank 0's progress lines: step, images/s, data wait and the main losses every `progress_every` steps,
    and a closing summary (the quiet default's only per-run output besides start and end)."""

    def __init__(self, max_steps: int, start_step: int):
        self.max_steps, self.start_step, self.start = max_steps, start_step, time.perf_counter()
        self.latest: dict[str, float] = {}
        self.waits: list[float] = []

    def add(self, metrics: dict[str, float]) -> None:
        self.latest = metrics
        self.waits.append(metrics.get("perf/data_wait_fraction", 0.0))

    def line(self, step: int) -> str:
        m = self.latest
        return (f"step {step}/{self.max_steps}: {m.get('perf/images_per_s', 0):.1f} img/s, data wait "
                f"{m.get('perf/data_wait_fraction', 0):.1%}, loss D {m.get('loss/D/total', float('nan')):.3f}, "
                f"G {m.get('loss/G/total', float('nan')):.3f} (L1 {m.get('loss/G/l1', float('nan')):.3f})")

    def summary(self, latest: dict[str, float]) -> str:
        elapsed = time.perf_counter() - self.start
        val = ", ".join(f"{k} {latest[k]:.4g}" for k in SUMMARY_METRICS if k in latest)
        wait = sum(self.waits) / len(self.waits) if self.waits else 0.0
        return (f"trained steps {self.start_step} -> {self.max_steps} in {elapsed:.0f} s (mean data wait {wait:.1%}); "
                f"last losses D {latest.get('loss/D/total', float('nan')):.3f}, G "
                f"{latest.get('loss/G/total', float('nan')):.3f}" + (f"; {val}" if val else ""))


def latest_of(records: list[dict[str, Any]]) -> dict[str, float]:
    """The newest value of every metric in metric records."""
    out: dict[str, float] = {}
    for record in records:
        out.update(record["metrics"])
    return out


def seed_for(seed: int, rank: int, step: int) -> int:
    """RNG seed re-applied at every checkpoint step, so a resumed run draws what an unbroken one would."""
    return (seed * 1_000_003 + rank * 7_919 + step) % 2**63


def validate(state: TrainState, pairs: tuple, step: int, figure_dir: Path,
             map_reference: MapReference | None = None, frechet_floor: float | None = None
             ) -> tuple[dict[str, float], Path]:
    """Background L1 and radiomic realism of the EMA generator on the validation pairs, plus a Fig. 2;
    with `map_reference` (the validation subjects' genes, real phenotype and, from a truth file, the true
    links) also `val/map_objective` and its parts (radiogen.evaluation.objective.map_objective), and with the
    subjects' programs their program response; with `frechet_floor` (two real sets' distance) the Fréchet
    distance over it.

    `pairs` is `decode_pairs` of the validation records, decoded once per run.
    """
    cfg = state.cfg
    _, image, mask, g, background = pairs
    refresh_ema_bn(state)
    with torch.no_grad(), local_rng(cfg.train.seed, state.device):  # the same noise at every validation
        out = state.G_ema(background.to(state.device), g.to(state.device))
    fake_img, fake_mask = out.image.float().cpu().numpy()[:, 0], out.mask.float().cpu().numpy()[:, 0]
    real_img, real_mask = image.numpy()[:, 0], mask.numpy()[:, 0]
    bg_np = background.numpy()[:, 0]
    metrics = {"val/l1_background": outside_mask_l1(fake_img, bg_np, fake_mask)}
    metrics |= {f"val/{k}": v for k, v in realism_report(real_img, real_mask, fake_img, fake_mask).items()}
    if frechet_floor is not None:  # the distance between two sets of real nodules: the scale of the one above
        metrics["val/frechet_floor"] = frechet_floor
        metrics["val/frechet_over_floor"] = metrics["val/frechet_radiomic"] / frechet_floor
    weight = None if out.weight is None else out.weight.float().cpu().numpy()[:, 0]
    if map_reference is not None:
        metrics |= map_objective(state.G_ema, background, map_reference, state.device, seed=cfg.train.seed)
    figure = save_figure(fig2_grid(bg_np, fake_img, weight, fake_mask), figure_dir / f"fig2_step{step:07d}.png")
    return metrics, figure


def validation_metric_names() -> tuple[set[str], set[str]]:
    """(names `validate` may report without a truth file, the further names it reports with one): the val/...
    metrics a sweep may name as objectives, known before any trial (a test keeps them equal to what it reports).
    Whether the dataset yields them (enough validation subjects, nodules) is checked once it is read."""
    from radiogen.evaluation.truth import RESPONSE

    always = {"val/l1_background", "val/frechet_floor", "val/frechet_over_floor", "val/map_objective",
              "val/map_agreement"} | {f"val/{k}" for k in REALISM_KEYS}
    responses = [f"response/{p}" for p in [*RESPONSE, "decoy"]]
    with_truth = {"val/map_auprc", "val/program_response", *(f"val/{r}" for r in responses),
                  *(f"val/real/{r}" for r in responses)}
    return always, with_truth


def read_checkpoint_records(checkpoint: Path) -> list[dict[str, Any]]:
    path = checkpoint / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def fit(settings: RunSettings, session: Session) -> dict[str, float]:
    cfg, t, rank0 = settings.config, settings.config.train, session.rank == 0
    images_per_step = t.batch_size * session.world_size
    genes = GeneLookup(settings.genes["subject_ids"], settings.genes["values"],
                       GeneStats.from_dict(settings.genes["stats"]))
    phases = Phases(settings.phases)

    # Setup: a fresh model, or everything back from the last committed checkpoint.
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    epoch, records = 0, []
    latest = session.latest_checkpoint()
    state = None
    while latest is not None and state is None:
        try:
            state, extra = load_checkpoint(latest / STATE_FILE, session.device)
        except CheckpointError as err:
            # A damaged file (a disk fault, a copy cut short) costs the steps since the checkpoint before it.
            older = session.previous_checkpoint(latest)
            if older is None:
                raise CheckpointError(f"cannot resume: {err}; no earlier checkpoint is kept") from None
            print(f"warning: {err}; resuming from the checkpoint before it, {older}")
            latest = older
    if state is None:
        state = build_training(cfg, session.device)
    else:
        epoch, records = int(extra["epoch"]), read_checkpoint_records(latest)
        if rank0:
            print(f"resumed from {latest} at step {state.step}, epoch {epoch}")
    state.G, state.D = session.wrap(state.G), session.wrap(state.D)
    phases.mark("model_built")
    torch.manual_seed(seed_for(t.seed, session.rank, state.step))
    tracker = Tracker(settings.tracking_uri, settings.run_id) if rank0 else None
    sent = tracker.last_step("loss/G/total") if tracker else -1
    pending: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="radiogen-"))
    if rank0:
        print(f"training {cfg.name}: {session.world_size} worker(s) on {session.device} ({torch.get_num_threads()} "
              f"torch thread(s) each), batch {t.batch_size} per worker, data {settings.data_mode}, steps "
              f"{state.step} -> {t.max_steps}")

    def send_unsent() -> None:
        """Push committed records the tracker has not acknowledged; they stay in metrics.jsonl anyway."""
        nonlocal sent
        unsent = [r for r in records if r["step"] > sent]
        if tracker and unsent:
            try:
                tracker.log_records(unsent)
                sent = unsent[-1]["step"]
            except Exception as err:  # noqa: BLE001 - the tracker must never stop training
                print(f"tracking: {len(unsent)} metric records not sent yet ({err}); they are kept in {METRICS_FILE}")

    def send_phases() -> None:
        """Start-up timings go straight to the tracker (not metrics.jsonl): they belong to this attempt only."""
        times = phases.unsent()
        if tracker and times:
            try:
                tracker.log_records([{"step": state.step, "metrics": times}])
            except Exception as err:  # noqa: BLE001
                print(f"tracking: phase timings not sent ({err})")

    def commit() -> None:
        phases.mark("first_report")
        phases.mark("last_report", again=True)
        send_phases()  # before the report (a sweep's scheduler may stop the trial inside it); a network call, so
        # outside the hold below: a stop is never kept waiting on MLflow's retries
        ckpt = None
        # A stop requested while the checkpoint is written and committed lands after it: the checkpoint is
        # whole and kept (inside torch.save it broke the zip writer: exit 1, a traceback, no checkpoint).
        with held_signals():
            if rank0:
                records.extend(pending)
                ckpt = scratch / f"step_{state.step:08d}"
                refresh_ema_bn(state)  # the checkpoint's G_ema carries statistics of its own weights
                try:
                    save_checkpoint(ckpt / STATE_FILE, state, extra={"epoch": epoch, "run_id": settings.run_id})
                    (ckpt / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
                except OSError as err:  # a full disk: the previous checkpoint is untouched and a rerun resumes from it
                    raise write_failed(state.step, err, scratch) from None
            pending.clear()
            last = records[-1]["metrics"] if records else {}
            try:
                session.commit(ckpt, state.step, {"step": state.step,
                                                  **{k: v for k, v in last.items() if k.startswith("loss/")}})
            except SystemExit:  # a sweep's scheduler stopped the trial once this report was committed: log it first
                send_unsent()
                raise
        if ckpt is not None:
            shutil.rmtree(ckpt, ignore_errors=True)
        send_unsent()
        torch.manual_seed(seed_for(t.seed, session.rank, state.step))

    try:
        send_unsent()  # a resumed run first delivers what its checkpoint holds but MLflow never got
        window = MetricWindow()
        mismatch_rng = torch.Generator()
        pool_masks = torch.from_numpy(schema.decode_masks(settings.pool["mask"], cfg.data.image_size)
                                      .astype(np.float32))
        pool = MismatchPool([str(s) for s in settings.pool["subject_id"]], pool_masks[:, None].to(session.device))
        train_genes = genes.to(session.device)  # joined where the slices are (no host copy per step on a GPU)
        progress = Progress(t.max_steps, state.step) if rank0 and settings.progress_every else None
        val_pairs = decode_pairs(settings.validation["nodules"], settings.validation["backgrounds"], genes,
                                 cfg.data.image_size) if rank0 and settings.validation else None
        reference = settings.validation.get("map") if rank0 else None
        map_reference = MapReference(genes(list(reference["subject_ids"])).cpu().numpy(), reference["phenotype"],
                                     reference.get("links"), reference.get("programs"),
                                     reference.get("real_response")) if reference else None
        floor = settings.validation.get("frechet_floor") if rank0 else None
        while state.step < t.max_steps:
            batches = watched(session.epoch_batches(epoch, t.batch_size), settings.data_timeout,
                              f"rank {session.rank}, epoch {epoch}")
            stepped = False
            while state.step < t.max_steps:
                tick = time.perf_counter()
                pair = next(batches, None)
                if pair is None:
                    break
                stepped = True
                mismatch_rng.manual_seed(seed_for(t.seed, session.rank, state.step))
                batch = assemble_batch(*pair, train_genes, mismatch_rng, pool)
                batch = batch.to(session.device, t.channels_last)
                wait = time.perf_counter() - tick

                if settings.fail_at_step == state.step + 1 and session.rank == session.world_size - 1 \
                        and settings.fail_marker and not Path(settings.fail_marker).exists():
                    Path(settings.fail_marker).touch()
                    # The worker dies as an out-of-memory kill would: no exception, no cleanup in this process.
                    os.kill(os.getpid(), signal.SIGKILL)

                window.add(train_step(state, batch), wait)
                phases.mark("first_step")
                step = state.step
                if step % settings.log_every == 0 or step == t.max_steps:
                    pending.append({"step": step, "metrics": window.flush(images_per_step)})
                    if progress is not None:
                        progress.add(pending[-1]["metrics"])
                        if step % settings.progress_every == 0 or step == t.max_steps:
                            print(progress.line(step), flush=True)
                if val_pairs is not None and (step % settings.val_every == 0 or step == t.max_steps):
                    val, figure = validate(state, val_pairs, step, scratch / "figures", map_reference, floor)
                    pending.append({"step": step, "metrics": val})
                    try:
                        tracker.log_artifact(figure, "figures")  # named by step: a re-run overwrites, never duplicates
                    except Exception as err:  # noqa: BLE001
                        print(f"tracking: figure {figure.name} not uploaded ({err})")
                if step % settings.checkpoint_every == 0 or step == t.max_steps:
                    commit()
            epoch += 1
            if not stepped:
                raise schema.SchemaError("the training split yields no full batch on this worker; lower "
                                         "train.batch_size or --num-workers, or prepare more subjects")

        final = records[-1]["metrics"] if records else {}
        if progress is not None:
            print(progress.summary(latest_of(records)), flush=True)
        if rank0:
            log_final_model(tracker, state, settings)
        phases.mark("end")
        send_phases()
        return final
    finally:  # also when a sweep's scheduler stops the trial inside a report
        shutil.rmtree(scratch, ignore_errors=True)


def log_final_model(tracker: Tracker, state: TrainState, settings: RunSettings) -> None:
    """The EMA generator's weights (always) and, with log_model "full", the MLflow pyfunc model over them."""
    cfg, genes = to_dict(settings.config), settings.genes
    try:
        if settings.log_model == "full":
            tracker.log_generator(state.G_ema.cpu(), cfg, genes.get("names", []), genes["stats"])
        else:
            tracker.log_weights(state.G_ema.cpu(), cfg, genes.get("names", []), genes["stats"])
    except Exception as err:  # noqa: BLE001
        print(f"tracking: final model not logged ({err}); it is in the last checkpoint")
