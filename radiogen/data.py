"""Training batches from a prepared dataset: nodule slices paired with random backgrounds, genes joined
per subject, and the mismatched mask/gene rows drawn from a different subject of the same batch.

Both the distributed path (Ray Data shards) and the local debug path (pyarrow) hand this module the
same numpy record batches ({column: array}); `assemble_batch` turns a pair of them into a `Batch`.
Genes are not stored in the slice rows: a per-subject table (small: subjects x genes) is joined on
the worker, which keeps the slice rows ~25% smaller at 5172 genes (see scripts/bench_ingest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from . import schema
from .batch import Batch, mismatch_index
from .config import DataConfig
from .genes import GeneStats, apply_gene_stats

ROW_COLUMNS = ("subject_id", "image", "mask")


class DatasetMismatch(ValueError):
    """The prepared dataset cannot feed this experiment config; the message says which side to change."""


def check_compatible(manifest: dict, data: DataConfig) -> None:
    size, n_genes = manifest["image"]["size"], len(manifest["gene_names"])
    if data.image_size != size:
        raise DatasetMismatch(f"the dataset has {size}x{size} slices but data.image_size={data.image_size}; "
                              f"use --set data.image_size={size} or re-run `radiogen prep --image-size {data.image_size}`")
    if data.n_genes is not None and data.n_genes != n_genes:
        raise DatasetMismatch(f"the dataset has {n_genes} genes but data.n_genes={data.n_genes}; "
                              f"use --set data.n_genes={n_genes} (or data.n_genes=null to follow the dataset)")


class GeneLookup:
    """Normalised gene vectors by subject id: the per-subject gene table joined on the worker.

    Built from plain data (raw values + fitted statistics) so it can be shipped to Ray workers;
    `from_dataset` reads both from a prepared dataset.
    """

    def __init__(self, subject_ids: list[str], raw_values: np.ndarray, stats: GeneStats):
        self.index = {sid: i for i, sid in enumerate(subject_ids)}
        self.values = torch.from_numpy(apply_gene_stats(stats, np.asarray(raw_values)))

    @classmethod
    def from_dataset(cls, root: str | Path, data: DataConfig) -> "GeneLookup":
        matrix = schema.read_genes(root)
        return cls(matrix.subject_ids, matrix.values, schema.gene_stats(schema.read_manifest(root), data.gene_norm))

    def __call__(self, subject_ids: list[str]) -> torch.Tensor:
        try:
            rows = [self.index[s] for s in subject_ids]
        except KeyError as err:
            raise schema.SchemaError(f"slice of subject {err.args[0]} has no row in genes.parquet; "
                                     f"the dataset is inconsistent - re-run `radiogen prep`") from None
        return self.values[rows]


def decode_pairs(nodules: dict[str, np.ndarray], backgrounds: dict[str, np.ndarray], genes: GeneLookup,
                 image_size: int) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(subject ids, image (B,1,S,S), mask (B,1,S,S), genes (B,G), background (B,1,S,S)) from record batches."""
    size = image_size
    subject_ids = [str(s) for s in nodules["subject_id"]]
    image = torch.from_numpy(schema.decode_images(nodules["image"], size).copy())[:, None]
    mask = torch.from_numpy(schema.decode_masks(nodules["mask"], size).astype(np.float32))[:, None]
    background = torch.from_numpy(schema.decode_images(backgrounds["image"], size).copy())[:, None]
    if background.shape[0] != image.shape[0]:
        raise ValueError(f"{image.shape[0]} nodule rows but {background.shape[0]} background rows; pair equal counts")
    return subject_ids, image, mask, genes(subject_ids), background


class MismatchPool:
    """Recent training rows (subject, mask) for batches that hold a single subject.

    The paper draws m-bar and g-bar from another subject of the same batch; with few subjects a
    shuffled batch can hold only one. Its mismatched rows then come from this pool of earlier
    training rows (seeded with rows of several subjects before the first step), never from
    validation or test subjects and never from the row's own subject.
    """

    def __init__(self, subject_ids: list[str], masks: torch.Tensor, capacity: int = 512):
        if len(set(subject_ids)) < 2:
            raise DatasetMismatch("the mismatch pool needs nodule rows of at least 2 training subjects")
        n = min(len(subject_ids), capacity)
        # A fixed ring buffer: adding a batch writes B rows in place (no copy of the whole pool per step).
        self.ids: list[str] = list(subject_ids)[-n:] + [""] * (capacity - n)
        self.masks = torch.zeros(capacity, *masks.shape[1:])
        self.masks[:n] = masks[-n:]
        self.size, self.next = n, n % capacity

    def add(self, subject_ids: list[str], masks: torch.Tensor) -> None:
        capacity = len(self.ids)
        for sid, mask in zip(subject_ids, masks):
            self.ids[self.next], self.masks[self.next] = sid, mask
            self.next = (self.next + 1) % capacity
            self.size = min(self.size + 1, capacity)

    def draw(self, subject_id: str, generator: torch.Generator) -> tuple[str, torch.Tensor]:
        others = [i for i in range(self.size) if self.ids[i] != subject_id]
        pick = others[int(torch.randint(len(others), (1,), generator=generator))]
        return self.ids[pick], self.masks[pick].clone()


def assemble_batch(nodules: dict[str, np.ndarray], backgrounds: dict[str, np.ndarray], genes: GeneLookup,
                   image_size: int, generator: torch.Generator, pool: MismatchPool | None = None) -> Batch:
    """One training batch from a nodule record batch and an equally long background record batch.

    Without a pool, a batch of a single subject is an error; with one, its mismatched rows come from the pool.
    """
    subject_ids, image, mask, g, background = decode_pairs(nodules, backgrounds, genes, image_size)
    other = mismatch_index(subject_ids, generator, allow_missing=pool is not None)  # rows of another subject
    if other[0] >= 0:
        mask_mismatch, genes_mismatch = mask[other], g[other]
    else:
        drawn = [pool.draw(s, generator) for s in subject_ids]
        mask_mismatch = torch.stack([m for _, m in drawn])
        genes_mismatch = genes([sid for sid, _ in drawn])
    if pool is not None:
        pool.add(subject_ids, mask)
    return Batch(image=image, mask=mask, genes=g, background=background,
                 mask_mismatch=mask_mismatch, genes_mismatch=genes_mismatch)


def pool_records(root: str | Path, per_subject: int = 4, max_subjects: int = 64) -> dict[str, np.ndarray]:
    """A few training nodule rows of several subjects: the seed of a MismatchPool (reads only those rows)."""
    dataset = schema.open_dataset(root)
    filt = (pc.field("split") == "train") & (pc.field("kind") == "nodule")
    ids = dataset.to_table(columns=["subject_id"], filter=filt).column("subject_id").to_pylist()
    taken: dict[str, int] = {}
    keep = []
    for i, s in enumerate(ids):
        if taken.get(s, 0) < per_subject and (s in taken or len(taken) < max_subjects):
            taken[s] = taken.get(s, 0) + 1
            keep.append(i)
    table = dataset.to_table(columns=list(ROW_COLUMNS), filter=filt) if not keep else \
        dataset.take(keep, columns=list(ROW_COLUMNS), filter=filt)
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in ROW_COLUMNS}


def _cycle(make: callable) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches: restart the (re-shuffled) background stream whenever it runs out."""
    round_ = 0
    while True:
        empty = True
        for batch in make(round_):
            empty = False
            yield batch
        if empty:
            raise DatasetMismatch("the background stream yields no full batch; the split has fewer background "
                                  "slices than one batch - lower train.batch_size or prepare more backgrounds")
        round_ += 1


def paired_batches(nodule_epoch: callable, background_round: callable, epoch: int
                   ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Zip one epoch of nodule batches with an endless stream of background batches."""
    backgrounds = _cycle(lambda r: background_round(epoch * 1_000_003 + r))
    for nodules in nodule_epoch(epoch):
        yield nodules, next(backgrounds)


def read_records(root: str | Path, split: str, kind: str, limit: int | None = None) -> dict[str, np.ndarray]:
    """The (subject_id, image, mask) records of one split and kind, in file order, as numpy columns."""
    dataset = schema.open_dataset(root)
    filt = (pc.field("split") == split) & (pc.field("kind") == kind)
    if limit is None:
        table = dataset.to_table(columns=list(ROW_COLUMNS), filter=filt)
    else:
        table = dataset.head(limit, columns=list(ROW_COLUMNS), filter=filt)
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in ROW_COLUMNS}


class LocalSource:
    """A split of a prepared dataset read with pyarrow into memory: the `--local` debug path.

    Batches are numpy record batches like Ray Data's; `shuffle=False` keeps file order (the order a
    one-worker Ray Data stream with preserved order yields), which makes the two paths comparable.
    """

    def __init__(self, root: str | Path, split: str, batch_size: int, seed: int, shuffle: bool = True):
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.tables = {kind: read_records(root, split, kind) for kind in schema.KINDS}

    def rows(self, kind: str) -> int:
        return len(self.tables[kind]["subject_id"])

    def _batches(self, kind: str, round_: int) -> Iterator[dict[str, np.ndarray]]:
        n = self.rows(kind)
        order = np.random.default_rng([self.seed, round_]).permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n - self.batch_size + 1, self.batch_size):  # drop_last, like the Ray path
            idx = order[start:start + self.batch_size]
            yield {c: v[idx] for c, v in self.tables[kind].items()}

    def epoch(self, epoch: int) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        return paired_batches(lambda e: self._batches("nodule", e), lambda r: self._batches("background", r), epoch)
