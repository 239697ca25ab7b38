"""Ingest benchmark: Ray Data vs raw pyarrow, and per-subject gene join vs genes denormalised into slices.

    python scripts/bench_ingest.py --data DIR [--batch-size 16] [--epochs 3]

DIR is a dataset from `radiogen prep`. Prints rows/s of (a) pyarrow reading and decoding the slices,
(b) Ray Data streaming the same rows in batches with the genes joined per subject on the consumer
(what training does), (c) Ray Data streaming a copy whose slice rows carry the gene vector; and the
ratios between them, all measured in this one run. The Ray Data paths stream materialised blocks
(as training does after the first epoch); the pyarrow path reads and decompresses the files each time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from radiogen import schema
from radiogen.config import DataConfig
from radiogen.data import GeneLookup


def timed(fn, epochs: int) -> float:
    """Median seconds of `epochs` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    import ray

    manifest = schema.read_manifest(args.data)
    size, n_genes = manifest["image"]["size"], len(manifest["gene_names"])
    files = schema.slice_files(args.data, manifest)
    table = pq.read_table(files)
    rows = table.num_rows
    genes = GeneLookup.from_dataset(args.data, DataConfig(image_size=size, n_genes=n_genes, gene_norm="raw"))

    def pyarrow_epoch() -> None:
        t = pq.read_table(files, columns=["subject_id", "image", "mask"])
        schema.decode_images(t.column("image"), size).sum()
        schema.decode_masks(t.column("mask"), size).sum()
        genes(t.column("subject_id").to_pylist())

    with tempfile.TemporaryDirectory() as tmp:
        # The denormalised layout: each slice row carries its subject's gene vector as float32 bytes.
        per_row = genes(table.column("subject_id").to_pylist()).numpy()
        denorm = table.append_column("genes", pa.array([v.tobytes() for v in per_row], pa.binary()))
        denorm_file = str(Path(tmp) / "denorm.parquet")
        pq.write_table(denorm, denorm_file, row_group_size=schema.ROW_GROUP_ROWS, compression="zstd")

        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        joined_ds = ray.data.read_parquet(files).select_columns(["subject_id", "image", "mask"]).materialize()
        denorm_ds = (ray.data.read_parquet(denorm_file)
                     .select_columns(["subject_id", "image", "mask", "genes"]).materialize())

        def ray_joined() -> None:
            for b in joined_ds.iter_batches(batch_size=args.batch_size, batch_format="numpy"):
                schema.decode_images(b["image"], size), schema.decode_masks(b["mask"], size)
                genes([str(s) for s in b["subject_id"]])

        def ray_denorm() -> None:
            for b in denorm_ds.iter_batches(batch_size=args.batch_size, batch_format="numpy"):
                schema.decode_images(b["image"], size), schema.decode_masks(b["mask"], size)
                schema.decode_genes(b["genes"], n_genes)

        t_arrow = timed(pyarrow_epoch, args.epochs)
        t_join = timed(ray_joined, args.epochs)
        t_denorm = timed(ray_denorm, args.epochs)
        bytes_join = sum(Path(f).stat().st_size for f in files)
        bytes_denorm = Path(denorm_file).stat().st_size
        mem_join, mem_denorm = joined_ds.size_bytes(), denorm_ds.size_bytes()
        ray.shutdown()

    print(f"dataset: {rows} slices of {size}x{size}, {n_genes} genes, batch {args.batch_size}")
    print(f"{'path':<44}{'rows/s':>10}{'on disk MB':>12}{'in Ray MB':>11}")
    print(f"{'pyarrow read + decode (reference)':<44}{rows / t_arrow:>10.0f}{bytes_join / 1e6:>12.1f}{'-':>11}")
    print(f"{'Ray Data, genes joined per subject':<44}{rows / t_join:>10.0f}{bytes_join / 1e6:>12.1f}"
          f"{mem_join / 1e6:>11.1f}")
    print(f"{'Ray Data, genes denormalised into rows':<44}{rows / t_denorm:>10.0f}{bytes_denorm / 1e6:>12.1f}"
          f"{mem_denorm / 1e6:>11.1f}")
    print(f"ratio Ray Data (joined) / pyarrow: {t_arrow / t_join:.2f}")
    print(f"ratio joined / denormalised (rows/s): {t_denorm / t_join:.2f}")
    print(f"denormalised: {np.round(bytes_denorm / bytes_join, 2)}x the bytes on disk (zstd folds the repeated "
          f"vectors), {np.round(mem_denorm / mem_join, 2)}x in the Ray object store")


if __name__ == "__main__":
    main()
