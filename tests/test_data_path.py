"""The data path's choice between memory and streaming, and the in-memory source it prefers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiogen import schema
from radiogen.data import (DATA_MODES, MEMORY_BUDGET_BYTES, LocalSource, MemorySource, decoded_bytes, plan_data_mode,
                           read_records)


def manifest(size: int, nodules: int, backgrounds: int) -> dict:
    return {"image": {"size": size}, "counts": {"slices": {"nodule": {"train": nodules, "val": 5},
                                                           "background": {"train": backgrounds}}}}


def test_decoded_bytes_counts_image_and_mask_of_nodules_and_images_of_backgrounds():
    assert decoded_bytes(manifest(128, 3700, 1000)) == 4 * 128 * 128 * (2 * 3700 + 1000)


def test_auto_holds_the_paper_cohort_in_memory_and_streams_what_does_not_fit():
    paper = manifest(128, 3700, 5200)  # ~0.5 GiB decoded: the paper's cohort
    mode, reason = plan_data_mode("auto", paper, num_workers=1, available_bytes=24 * 2**30)
    assert mode == "memory" and "fits" in reason
    # Over the per-worker budget: stream, and say so.
    big = manifest(512, MEMORY_BUDGET_BYTES // (4 * 512 * 512 * 2) + 10, 0)
    mode, reason = plan_data_mode("auto", big, num_workers=1, available_bytes=None)
    assert mode == "streaming" and "GiB in-memory budget per worker" in reason
    # The same data over 4 workers fits each worker's budget again.
    assert plan_data_mode("auto", big, num_workers=4, available_bytes=None)[0] == "memory"
    # Under the budget, but over a quarter of the host memory available.
    mode, reason = plan_data_mode("auto", paper, num_workers=1, available_bytes=2**30)
    assert mode == "streaming" and "of host memory available" in reason
    # Asked for explicitly: taken as asked.
    assert plan_data_mode("memory", big, 1, None)[0] == "memory"
    assert plan_data_mode("streaming", paper, 1, None)[0] == "streaming"
    with pytest.raises(ValueError, match="--data-mode must be one of auto, memory, streaming"):
        plan_data_mode("disk", paper, 1, None)


def test_cli_offers_the_data_modes_the_planner_knows():
    from ray_jobs.cli import DATA_MODES as CLI_MODES

    assert CLI_MODES == DATA_MODES


def test_memory_source_epochs_are_permutations_seeded_by_round_and_rank(prepared):
    src = LocalSource(prepared, "train", batch_size=4, seed=3)
    size = schema.read_manifest(prepared)["image"]["size"]
    rows = read_records(prepared, "train", "nodule")
    images = schema.decode_images(rows["image"], size)
    n = src.rows("nodule")
    epoch = [nod for nod, _ in src.epoch(0)]
    assert sum(len(b) for b in epoch) == n // 4 * 4  # every full batch once (drop_last)
    # Each batch's tensors are the decoded rows its subject ids and permutation name.
    order = np.random.default_rng([3, 0, 0]).permutation(n)
    first = epoch[0]
    np.testing.assert_array_equal(first.image[:, 0].numpy(), images[order[:4]])
    assert first.subject_ids == [str(s) for s in rows["subject_id"][order[:4]]]
    assert first.mask.shape == first.image.shape
    # Another rank of the same seed draws another order; backgrounds carry no mask.
    other = MemorySource({k: read_records(prepared, "train", k) for k in schema.KINDS}, size, 4, 3, rank=1)
    assert [b.subject_ids for b, _ in other.epoch(0)] != [b.subject_ids for b in epoch]
    _, background = next(src.epoch(0))
    assert background.mask is None and len(background) == 4


def test_memory_source_keeps_its_tensors_on_the_requested_device(prepared):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the GPU path where there is one
    src = LocalSource(prepared, "train", batch_size=4, seed=0, device=device)
    nod, bg = next(src.epoch(0))
    assert nod.image.device.type == device.type and nod.mask.device.type == device.type
    assert bg.image.device.type == device.type
