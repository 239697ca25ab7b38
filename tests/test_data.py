"""Batches from a prepared dataset: gene join, background pairing, mismatched rows, local epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiogen import schema
from radiogen.config import DataConfig
from radiogen.data import (GeneLookup, LocalSource, MismatchPool, assemble_batch, decode_slices, pool_records,
                           read_records)


def lookup(data) -> GeneLookup:
    n = len(schema.read_manifest(data)["gene_names"])
    return GeneLookup.from_dataset(data, DataConfig(image_size=32, n_genes=n))


def test_gene_join_applies_train_split_normalisation(prepared):
    genes = lookup(prepared)
    matrix = schema.read_genes(prepared)
    stats = schema.gene_stats(schema.read_manifest(prepared), "log_zscore")
    sid = matrix.subject_ids[1]
    expected = (np.log2(matrix.values[1].astype(np.float64) + 1) - np.asarray(stats.mean)) / np.asarray(stats.std)
    expected = np.clip(expected, -stats.clip, stats.clip)  # z-scores are bounded (radiogen.genes.Z_CLIP)
    np.testing.assert_allclose(genes([sid])[0].numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(schema.SchemaError, match="has no row in genes.parquet"):
        genes(["NOT-A-SUBJECT"])


def test_pool_records_takes_few_rows_per_train_subject(prepared):
    pool = pool_records(prepared, per_subject=2)
    full = read_records(prepared, "train", "nodule")
    ids = list(pool["subject_id"])
    assert len(set(ids)) >= 2 and all(ids.count(s) <= 2 for s in set(ids))
    assert set(ids) <= set(full["subject_id"])
    first = [i for i, s in enumerate(full["subject_id"]) if s == ids[0]][0]
    assert pool["mask"][0] == full["mask"][first]  # the same row, not just the same subject


def test_one_subject_batch_takes_mismatches_from_the_pool(prepared):
    genes = lookup(prepared)
    train = read_records(prepared, "train", "nodule")
    backgrounds = read_records(prepared, "train", "background", 4)
    one = [i for i, s in enumerate(train["subject_id"]) if s == train["subject_id"][0]][:4]
    assert len(one) >= 2
    nodules = decode_slices({c: v[one] for c, v in train.items()}, 32)
    bg = decode_slices({c: v[: len(one)] for c, v in backgrounds.items()}, 32, masks=False)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="at least two subjects"):
        assemble_batch(nodules, bg, genes, g)
    seed = pool_records(prepared)
    masks = torch.from_numpy(schema.decode_masks(seed["mask"], 32).astype(np.float32))[:, None]
    pool = MismatchPool(list(seed["subject_id"]), masks)
    batch = assemble_batch(nodules, bg, genes, g, pool)
    own = genes([train["subject_id"][0]])[0]
    assert not any(torch.equal(row, own) for row in batch.genes_mismatch)
    assert batch.mask_mismatch.shape == batch.mask.shape


def test_mismatch_pool_is_a_ring_of_recent_rows():
    masks = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    pool = MismatchPool(["a", "b", "a", "b"], masks, capacity=6)
    pool.add(["c", "c", "c", "c"], torch.full((4, 1, 2, 2), 9.0))  # 8 rows into 6 slots: the oldest two go
    assert sorted(pool.ids) == ["a", "b", "c", "c", "c", "c"]
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        sid, mask = pool.draw("c", g)
        assert sid in ("a", "b") and mask.shape == (1, 2, 2)
    with pytest.raises(ValueError, match="at least 2 training subjects"):
        MismatchPool(["a", "a"], masks[:2])


def test_local_source_epochs(prepared):
    src = LocalSource(prepared, "train", batch_size=4, seed=0)
    n = src.rows("nodule")
    e0 = [list(nod.subject_ids) + [len(bg)] for nod, bg in src.epoch(0)]
    e1 = [list(nod.subject_ids) for nod, _ in src.epoch(1)]
    assert len(e0) == len(e1) == n // 4  # drop_last
    assert all(row[-1] == 4 for row in e0)  # every nodule batch gets a full background batch
    assert [r[:-1] for r in e0] != e1  # a fresh order every epoch
    fixed = LocalSource(prepared, "train", batch_size=4, seed=0, shuffle=False)
    first = next(fixed.epoch(0))[0].subject_ids
    assert list(first) == list(read_records(prepared, "train", "nodule")["subject_id"][:4])
