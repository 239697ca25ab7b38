"""Ingest: batches/s the data paths deliver to a training worker, against pyarrow alone reading the same parquet
and against the rate at which the training step consumes batches.

On the bench's 32 px cohort, training split, batch 8 (the tiny config's), over several epochs:
- pyarrow alone: read the slice files' training rows and decode them, once per epoch (the reference);
- Ray Data streaming, as Ray Train streams it: the materialised split, a random_shuffle re-executed per epoch and a
  streaming_split iterator restarted per epoch (its first-batch latency is reported per epoch);
- the in-memory path: the split decoded once into a MemorySource, then one index permutation per epoch;
- the training step: batches/s of `train_step` of the tiny config in this process, on a resident batch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .common import Context, Measure, ratio_measure

STAGE = "ingest"
BATCH = 8


def pyarrow_epoch(data: Path, size: int) -> int:
    """Read and decode the training split with pyarrow alone; returns the rows read."""
    from radiogen import schema
    from radiogen.data import read_records

    rows = 0
    for kind in schema.KINDS:
        records = read_records(data, "train", kind)
        schema.decode_images(records["image"], size)
        if kind == "nodule":
            schema.decode_masks(records["mask"], size)
        rows += len(records["subject_id"])
    return rows


def timed_batches(batches) -> tuple[int, float, float]:
    """(batches, seconds, seconds to the first batch) of iterating `batches`."""
    start = time.perf_counter()
    first, n = None, 0
    for _ in batches:
        n += 1
        if first is None:
            first = time.perf_counter() - start
    return n, time.perf_counter() - start, first or 0.0


def ray_streaming(data: Path, epochs: int) -> tuple[float, float]:
    """(batches/s over all epochs, mean seconds to the first batch of an epoch) of the streaming path."""
    import ray
    from ray.data.expressions import col

    from radiogen import schema
    from radiogen.data import ROW_COLUMNS
    from ray_jobs.resources import connect_ray

    connect_ray(None)
    files = schema.slice_files(data, schema.read_manifest(data))
    wanted = (col("split") == "train") & (col("kind") == "nodule")
    part = ray.data.read_parquet(files).select_columns([*ROW_COLUMNS, "split", "kind"]).filter(expr=wanted) \
        .select_columns(list(ROW_COLUMNS)).materialize()
    split = part.random_shuffle().streaming_split(1, equal=True)[0]
    total, seconds, firsts = 0, 0.0, []
    for _ in range(epochs):
        n, s, first = timed_batches(split.iter_batches(batch_size=BATCH, batch_format="numpy", drop_last=True,
                                                       prefetch_batches=2))
        total, seconds = total + n, seconds + s
        firsts.append(first)
    return total / seconds, float(np.mean(firsts[1:] or firsts))


def memory_path(data: Path, size: int, epochs: int) -> tuple[float, float]:
    """(batches/s over all epochs, seconds to build the source) of the in-memory path (nodule stream)."""
    from radiogen.data import LocalSource

    start = time.perf_counter()
    source = LocalSource(data, "train", BATCH, seed=0)
    built = time.perf_counter() - start
    total, seconds = 0, 0.0
    for epoch in range(epochs):
        n, s, _ = timed_batches(source._batches("nodule", epoch))  # noqa: SLF001 - the nodule stream alone
        total, seconds = total + n, seconds + s
    return total / seconds, built


def step_rate(data: Path, steps: int) -> float:
    """Training steps per second of the tiny config in this process (a resident batch: no data cost)."""
    import torch

    from radiogen.config import load_config
    from radiogen.toy import toy_batch
    from radiogen.train_step import build_training, train_step
    from ray_jobs.bench.train import CONFIG

    manifest = json.loads((data / "manifest.json").read_text())
    cfg = load_config(CONFIG, [f"data.n_genes={len(manifest['gene_names'])}", f"train.batch_size={BATCH}"])
    torch.manual_seed(0)
    state = build_training(cfg, "cpu")
    batch, _ = toy_batch(BATCH, cfg.data.image_size, cfg.data.n_genes, seed=0)
    for _ in range(5):
        train_step(state, batch)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(state, batch)
    return steps / (time.perf_counter() - start)


def run(ctx: Context) -> list[Measure]:
    from radiogen import schema

    data = ctx.cohorts["small32"]
    manifest = schema.read_manifest(data)
    size = manifest["image"]["size"]
    epochs = 3 if ctx.quick else 10
    nodules = manifest["counts"]["slices"]["nodule"]["train"]

    start = time.perf_counter()
    rows = sum(pyarrow_epoch(data, size) for _ in range(epochs))
    pa_rows = rows / (time.perf_counter() - start)
    # The reference in batches of the nodule stream: a batch needs BATCH nodule rows (and as many backgrounds).
    pa_batches = pa_rows / BATCH * nodules / (rows / epochs)
    ray_rate, restart = ray_streaming(data, epochs)
    mem_rate, built = memory_path(data, size, epochs)
    consume = step_rate(data, 20 if ctx.quick else 100)
    setup = f"{nodules} training nodule slices at {size} px, batch {BATCH}, {epochs} epochs"
    return [
        Measure(STAGE, "pyarrow alone: read + decode the training split", pa_batches, "batches/s", None, "", "", None,
                f"{pa_rows:,.0f} rows/s (nodules and backgrounds); {setup}"),
        ratio_measure(STAGE, "Ray Data streaming to a worker (shuffle per epoch)", ray_rate, "batches/s", pa_batches,
                      "pyarrow alone", note=f"{1000 * restart:.0f} ms to the first batch of each epoch (shuffle "
                                            f"and streaming_split restart)"),
        ratio_measure(STAGE, "in-memory path (index permutation per epoch)", mem_rate, "batches/s", pa_batches,
                      "pyarrow alone", note=f"decoded once in {1000 * built:.0f} ms"),
        ratio_measure(STAGE, "Ray Data streaming vs what the training step consumes", ray_rate, "batches/s", consume,
                      "train_step, tiny config", target=1.0,
                      note="under 1x, the step waits for data; the per-epoch restart is a pause even above it"),
        ratio_measure(STAGE, "in-memory path vs what the training step consumes", mem_rate, "batches/s", consume,
                      "train_step, tiny config", target=1.0),
    ]
