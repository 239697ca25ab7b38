"""The dataset's manifest.json: what was made from what, with which parameters, and what became of
every subject (radiogen.schema validates it; its `outputs` hashes let a reader verify the files)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from data_prep import gene_table as gt
from radiogen import schema

from .executor import Executor
from .gene_stats import DatasetGenes
from .options import PrepOptions


def _counts(outcomes: dict[str, dict], ok: list[str], splits: dict[str, str], processed: int,
            from_cache: int) -> dict[str, Any]:
    counts: dict[str, Any] = {"slices": {k: {s: 0 for s in schema.SPLITS} for k in schema.KINDS},
                              "subjects": {s: 0 for s in schema.SUBJECT_STATUSES},
                              "processed": processed, "from_cache": from_cache}
    for sid in ok:
        counts["slices"]["nodule"][splits[sid]] += outcomes[sid]["n_nodule_slices"]
        counts["slices"]["background"][splits[sid]] += outcomes[sid]["n_background_slices"]
    for o in outcomes.values():
        counts["subjects"][o["status"]] += 1
    return counts


def build_manifest(opts: PrepOptions, root: Path, *, table: gt.GeneTable, genes_sha: str, genes: DatasetGenes,
                   outcomes: dict[str, dict], ok: list[str], splits: dict[str, str], processed: int,
                   from_cache: int, files: list[str], genes_file: str, warnings: list[str],
                   executor: Executor) -> dict:
    """The manifest of the dataset written under `root` (its data files are hashed here); genes_sha: the
    gene table's SHA-256 when it was read."""
    from radiogen import __version__
    from radiogen.genes import Z_CLIP

    # Every file the dataset was made from, with its hash: a reader can tell whether the inputs changed since.
    inputs = {str(opts.genes): genes_sha}
    for o in outcomes.values():
        inputs.update(o.get("inputs", {}))
    p = opts.params
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "radiogen_version": __version__,
        # The pixel contract a reader needs to decode the slices without this code.
        "image": {"size": p.image_size, "pixel_spacing_mm": p.voi_mm / p.image_size, "voi_mm": p.voi_mm,
                  "hu_window": list(p.hu_window), "dtype": "float32", "mask_dtype": "uint8",
                  "byte_order": "little", "layout": "row-major (H, W) = (j, i) of the VOI grid"},
        "params": {**p.cache_dict(), "split": list(opts.split), "na_policy": str(opts.na_policy),
                   "genes_orientation": opts.genes_orientation,
                   "source": str(opts.tcia_root or opts.cases), "source_kind": "tcia" if opts.tcia_root else "cases"},
        "gene_names": genes.selection.names,
        "genes": {"source": str(opts.genes), "orientation": opts.genes_orientation,
                  "na_policy": str(opts.na_policy), "n_in_table": len(table.genes),
                  "n_kept": len(genes.selection.names), "dropped": genes.selection.dropped,
                  "imputed_cells": [list(c) for c in genes.selection.imputed],
                  "non_numeric_examples": gt.describe_bad_cells(table), "warnings": table.warnings,
                  "stats_fitted_on": "train", "stats_note": genes.stats_note, "zscore_clip": Z_CLIP,
                  "clipped": genes.clipped},
        "gene_stats": genes.stats,
        "splits": {s: [sid for sid in ok if splits[sid] == s] for s in schema.SPLITS},
        "counts": _counts(outcomes, ok, splits, processed, from_cache),
        "inputs": inputs,
        "subjects": outcomes,
        "files": {"slices": files, "genes": genes_file},
        "outputs": schema.output_hashes(root, [*files, genes_file]),
        "warnings": warnings,
        "executor": asdict(executor),
    }
