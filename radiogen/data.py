"""Training batches from a prepared dataset: nodule slices paired with random backgrounds, genes joined
per subject, and the mismatched mask/gene rows drawn from a different subject of the same batch.

Two sources feed the loop the same `Slices`: a `MemorySource` decodes a worker's training split once
(into GPU memory when training there) and shuffles row indices per epoch; the streaming path decodes
each Ray Data record batch as it arrives (for datasets that do not fit). `plan_data_mode` chooses.
`assemble_batch` turns a pair of Slices into a `Batch`.
Genes are not stored in the slice rows: a per-subject table (small: subjects x genes) is joined on
the worker, which keeps the slice rows ~25% smaller at 5172 genes (see scripts/bench_ingest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
                              f"use --set data.image_size={size} or re-run "
                              f"`radiogen prep --image-size {data.image_size}`")
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

    def to(self, device: torch.device | str) -> "GeneLookup":
        """The same lookup with its table on `device` (a device-resident source joins genes there)."""
        moved = object.__new__(GeneLookup)
        moved.index, moved.values = self.index, self.values.to(device)
        return moved

    def __call__(self, subject_ids: list[str]) -> torch.Tensor:
        try:
            rows = [self.index[s] for s in subject_ids]
        except KeyError as err:
            raise schema.SchemaError(f"slice of subject {err.args[0]} has no row in genes.parquet; "
                                     f"the dataset is inconsistent - re-run `radiogen prep`") from None
        return self.values[rows]


@dataclass
class Slices:
    """Decoded slices of one kind, as a source hands them to the loop: host tensors, or device tensors when the
    source holds its split in GPU memory."""

    subject_ids: list[str]
    image: torch.Tensor
    """(N, 1, S, S) float32 in [-1, 1]."""
    mask: torch.Tensor | None = None
    """(N, 1, S, S) float32 in {0, 1}; None for backgrounds (a batch uses only their images)."""

    def __len__(self) -> int:
        return len(self.subject_ids)


def decode_slices(records: dict[str, np.ndarray], image_size: int, masks: bool = True) -> Slices:
    """Record batch ({"subject_id", "image", "mask"} numpy columns) -> Slices on the host."""
    image = torch.from_numpy(schema.decode_images(records["image"], image_size).copy())[:, None]
    mask = torch.from_numpy(schema.decode_masks(records["mask"], image_size).astype(np.float32))[:, None] \
        if masks else None
    return Slices([str(s) for s in records["subject_id"]], image, mask)


def decode_pairs(nodules: dict[str, np.ndarray], backgrounds: dict[str, np.ndarray], genes: GeneLookup,
                 image_size: int) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(subject ids, image (B,1,S,S), mask (B,1,S,S), genes (B,G), background (B,1,S,S)) from record batches."""
    nod, bg = decode_slices(nodules, image_size), decode_slices(backgrounds, image_size, masks=False)
    if len(bg) != len(nod):
        raise ValueError(f"{len(nod)} nodule rows but {len(bg)} background rows; pair equal counts")
    return nod.subject_ids, nod.image, nod.mask, genes(nod.subject_ids), bg.image


class MismatchPool:
    """Recent training rows (subject, mask) for batches that hold a single subject.

    The paper draws m-bar and g-bar from another subject of the same batch; with few subjects a
    shuffled batch can hold only one. Its mismatched rows then come from this pool of earlier
    training rows (seeded with rows of several subjects before the first step), never from
    validation or test subjects and never from the row's own subject. The masks live on the device
    of the seed masks (the GPU for a device-resident source: no host copy per step).
    """

    def __init__(self, subject_ids: list[str], masks: torch.Tensor, capacity: int = 512):
        if len(set(subject_ids)) < 2:
            raise DatasetMismatch("the mismatch pool needs nodule rows of at least 2 training subjects")
        n = min(len(subject_ids), capacity)
        # A fixed ring buffer: adding a batch writes B rows in place (no copy of the whole pool per step).
        self.ids: list[str] = list(subject_ids)[-n:] + [""] * (capacity - n)
        self.masks = torch.zeros(capacity, *masks.shape[1:], device=masks.device)
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


def assemble_batch(nodules: Slices, backgrounds: Slices, genes: GeneLookup, generator: torch.Generator,
                   pool: MismatchPool | None = None) -> Batch:
    """One training batch from nodule slices and as many background slices (host or device tensors).

    Without a pool, a batch of a single subject is an error; with one, its mismatched rows come from the pool.
    """
    if len(backgrounds) != len(nodules):
        raise ValueError(f"{len(nodules)} nodule rows but {len(backgrounds)} background rows; pair equal counts")
    subject_ids, mask = nodules.subject_ids, nodules.mask
    g = genes(subject_ids)
    other = mismatch_index(subject_ids, generator, allow_missing=pool is not None)  # rows of another subject
    if other[0] >= 0:
        other = other.to(mask.device, non_blocking=True)
        mask_mismatch, genes_mismatch = mask[other], g[other]
    else:
        drawn = [pool.draw(s, generator) for s in subject_ids]
        mask_mismatch = torch.stack([m for _, m in drawn])
        genes_mismatch = genes([sid for sid, _ in drawn])
    if pool is not None:
        pool.add(subject_ids, mask)
    return Batch(image=nodules.image, mask=mask, genes=g, background=backgrounds.image,
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


MEMORY_BUDGET_BYTES = 4 * 2**30
"""At most this much decoded training data per worker is held in memory (host or GPU) by `--data-mode auto`."""
MEMORY_FRACTION = 0.25
"""... and at most this fraction of the node's available host memory for all of a node's workers together."""
DATA_MODES = ("auto", "memory", "streaming")


def decoded_bytes(manifest: dict, split: str = "train") -> int:
    """Bytes of a split decoded as MemorySource holds it: float32 image + mask per nodule, image per background."""
    pixels = manifest["image"]["size"] ** 2
    counts = manifest["counts"]["slices"]
    return 4 * pixels * (2 * counts["nodule"].get(split, 0) + counts["background"].get(split, 0))


def plan_data_mode(requested: str, manifest: dict, num_workers: int, available_bytes: int | None) -> tuple[str, str]:
    """("memory" or "streaming", the reason, for printing): `auto` holds the training split in memory when each
    worker's shard fits MEMORY_BUDGET_BYTES and all shards together fit MEMORY_FRACTION of `available_bytes`."""
    total = decoded_bytes(manifest)
    per_worker = total / max(num_workers, 1)
    size = f"the training split is {total / 2**20:.1f} MiB decoded, {per_worker / 2**20:.1f} MiB per worker"
    if requested == "memory":
        return "memory", f"--data-mode memory; {size}"
    if requested == "streaming":
        return "streaming", f"--data-mode streaming; {size}"
    if requested != "auto":
        raise ValueError(f"--data-mode must be one of {', '.join(DATA_MODES)}, got {requested!r}")
    if per_worker > MEMORY_BUDGET_BYTES:
        return "streaming", f"{size}, over the {MEMORY_BUDGET_BYTES / 2**30:g} GiB in-memory budget per worker"
    if available_bytes is not None and total > MEMORY_FRACTION * available_bytes:
        return "streaming", (f"{size}, over {MEMORY_FRACTION:.0%} of the {available_bytes / 2**30:.1f} GiB of "
                             f"host memory available")
    return "memory", f"{size}: it fits, so each worker decodes its shard once and shuffles indices per epoch"


def concat_records(batches: Iterator[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Record batches -> one record batch (the columns concatenated)."""
    parts = list(batches)
    if not parts:
        return {c: np.asarray([], dtype=object) for c in ROW_COLUMNS}
    return {c: np.concatenate([np.asarray(p[c], dtype=object) for p in parts]) for c in parts[0]}


class MemorySource:
    """A training split decoded once into memory, on `device` (GPU memory when training there).

    An epoch is a permutation of row indices (seeded by seed, round and rank), not a re-executed data
    pipeline: a Ray Data shuffle per epoch costs 25-40 ms plus ~83 ms to restart a streaming_split iterator,
    which on a small cohort is a large share of the step time. `shuffle=False` keeps the rows' order.
    """

    def __init__(self, records: dict[str, dict[str, np.ndarray]], image_size: int, batch_size: int, seed: int,
                 shuffle: bool = True, rank: int = 0, device: torch.device | str = "cpu"):
        self.batch_size, self.seed, self.shuffle, self.rank = batch_size, seed, shuffle, rank
        self.device = torch.device(device)
        self.tables: dict[str, Slices] = {}
        for kind, rows in records.items():
            s = decode_slices(rows, image_size, masks=kind == "nodule")
            self.tables[kind] = Slices(s.subject_ids, s.image.to(self.device),
                                       None if s.mask is None else s.mask.to(self.device))
        self.ids = {kind: np.asarray(t.subject_ids, dtype=object) for kind, t in self.tables.items()}

    def rows(self, kind: str) -> int:
        return len(self.tables[kind])

    def _batches(self, kind: str, round_: int) -> Iterator[Slices]:
        n, table = self.rows(kind), self.tables[kind]
        order = np.random.default_rng([self.seed, round_, self.rank]).permutation(n) if self.shuffle else np.arange(n)
        on_device = torch.from_numpy(order).to(self.device)  # one copy per epoch; batches are views of it
        for start in range(0, n - self.batch_size + 1, self.batch_size):  # drop_last, like the Ray path
            idx = on_device[start:start + self.batch_size]
            yield Slices(self.ids[kind][order[start:start + self.batch_size]].tolist(), table.image[idx],
                         None if table.mask is None else table.mask[idx])

    def epoch(self, epoch: int) -> Iterator[tuple[Slices, Slices]]:
        return paired_batches(lambda e: self._batches("nodule", e), lambda r: self._batches("background", r), epoch)


class LocalSource(MemorySource):
    """A split of a prepared dataset read with pyarrow into memory: the `--local` debug path.

    `shuffle=False` keeps file order (the order a one-worker Ray Data stream with preserved order
    yields), which makes the two paths comparable.
    """

    def __init__(self, root: str | Path, split: str, batch_size: int, seed: int, shuffle: bool = True,
                 device: torch.device | str = "cpu"):
        manifest = schema.read_manifest(root)
        super().__init__({kind: read_records(root, split, kind) for kind in schema.KINDS},
                         manifest["image"]["size"], batch_size, seed, shuffle, device=device)
