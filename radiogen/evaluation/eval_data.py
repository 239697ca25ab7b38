"""A prepared dataset as the evaluation reads it: real nodule slices of every split, the gene table, and the
fixed backgrounds every gene swap draws over (docs/design.md §5)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiogen import schema
from radiogen.data import read_records

SPLITS = {"train": ("train",), "heldout": ("val", "test")}
"""Evaluated subject sets: the training split, and the subjects training never saw."""




@dataclass
class EvalData:
    """What an evaluation reads from a prepared dataset."""

    root: Path
    subjects: list[str]          # sorted ids of subjects that have genes and nodule slices
    split_of: dict[str, str]     # subject -> "train" | "heldout"
    genes_raw: np.ndarray        # (S, G) raw values, rows in `subjects` order
    gene_names: list[str]
    images: np.ndarray           # (N, H, W) real nodule slices in [-1, 1]
    masks: np.ndarray            # (N, H, W) {0, 1}
    slice_subject: np.ndarray    # (N,) subject id of each slice
    backgrounds: np.ndarray      # (K, H, W) the fixed backgrounds of every gene swap
    spacing_mm: float
    fingerprint: str

    def indices(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.subjects) if self.split_of[s] == split], dtype=int)


def load_data(root: str | Path, n_backgrounds: int = 8, seed: int = 0) -> EvalData:
    """Real nodule slices of every split, the gene table, and K fixed backgrounds drawn with `seed`
    (held-out lung slices when there are K, so training backgrounds are not reused; see `_background_pool`)."""
    root = Path(root)
    manifest = schema.read_manifest(root)
    size = manifest["image"]["size"]
    matrix = schema.read_genes(root)
    images, masks, ids, bg_rows = [], [], [], {}
    for split in schema.SPLITS:
        rec = read_records(root, split, "nodule")
        images.append(schema.decode_images(rec["image"], size))
        masks.append(schema.decode_masks(rec["mask"], size).astype(np.float32))
        ids += [str(s) for s in rec["subject_id"]]
        bg_rows[split] = schema.decode_images(read_records(root, split, "background")["image"], size)
    pool = _background_pool([np.concatenate([bg_rows["val"], bg_rows["test"]]), bg_rows["train"]], n_backgrounds)
    pick = np.sort(np.random.default_rng(seed).choice(len(pool), n_backgrounds, replace=False))
    with_slices = set(ids)
    order = sorted(s for s in matrix.subject_ids if s in with_slices)
    row = {s: i for i, s in enumerate(matrix.subject_ids)}
    split_of = {s: next(k for k, v in SPLITS.items() if matrix.splits[row[s]] in v) for s in order}
    return EvalData(root, order, split_of, matrix.values[[row[s] for s in order]], list(matrix.gene_names),
                    np.concatenate(images), np.concatenate(masks), np.asarray(ids), pool[pick],
                    float(manifest["image"]["pixel_spacing_mm"]), schema.dataset_fingerprint(root))


LUNG_LEVEL = -0.2     # [-1, 1] units: -400 HU, below it a pixel is aerated lung
MIN_LUNG_FRACTION = 0.25


def _background_pool(sources: list[np.ndarray], n: int) -> np.ndarray:
    """Background slices to draw the fixed K from: the first source (held-out) that holds n slices showing
    lung (>= MIN_LUNG_FRACTION of pixels below -400 HU), else the lung slices of all, else all slices.

    A background VOI's far planes can leave the lung (a uniform soft-tissue slice); a nodule drawn there
    says little about the lung nodules the map is about, so such slices are used only when nothing else is.
    """
    lung = [s[(s < LUNG_LEVEL).mean(axis=(1, 2)) >= MIN_LUNG_FRACTION] for s in sources]
    for pool in (lung[0], np.concatenate(lung), np.concatenate(sources)):
        if len(pool) >= n:
            return pool
    raise ValueError(f"the dataset has {sum(map(len, sources))} background slices, fewer than --backgrounds {n}")
