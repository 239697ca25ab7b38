"""Small shared builders for the tests (tiny configs, random batches)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from radiogen.batch import Batch
from radiogen.config import ExperimentConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def bench_quick(out: Path) -> list[str]:
    """`radiogen bench --quick`: every stage as a user runs it (its own small cohorts and local Ray clusters). One
    run in the background lane (tests/background.py) serves the tests of every stage."""
    return [sys.executable, "-m", "ray_jobs.cli", "bench", "--quick", "--out", str(out)]


def tiny(**slices: dict) -> ExperimentConfig:
    """ablations/tiny.yaml with some fields of some slices replaced, e.g. tiny(generator={"fusion": "concat"})."""
    cfg = load_config(REPO / "ablations" / "tiny.yaml")
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in slices.items()})


def prepare_tiny(cohort: Path, out: Path, *extra: str) -> Path:
    """A synthetic cohort through the real `radiogen prep` at 32 px (the tiny config's size), 2 training and 1
    validation subject in 3: the dataset the training tests share; `extra`: more prep flags (e.g. --workers 0)."""
    from ray_jobs.cli import main

    assert main(["prep", "--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"), "--out", str(out),
                 "--image-size", "32", "--bg-vois", "2", "--bg-slices", "8", "--split", "0.67,0.33,0", *extra]) == 0
    return out


def validation_of(data: Path, n_slices: int = 8):
    """(untrained tiny TrainState, GeneLookup, validation nodule records, decoded validation pairs) of a prepared
    32 px dataset: what `ray_jobs.loop.validate` needs, built as the training loop builds it."""
    from radiogen import schema
    from radiogen.data import GeneLookup, decode_pairs, read_records
    from radiogen.train_step import build_training

    cfg = tiny(data={"n_genes": len(schema.read_manifest(data)["gene_names"])})
    torch.manual_seed(0)
    state = build_training(cfg, torch.device("cpu"))
    genes = GeneLookup.from_dataset(data, cfg.data)
    nodules = read_records(data, "val", "nodule", n_slices)
    pairs = decode_pairs(nodules, read_records(data, "val", "background", n_slices), genes, 32)
    return state, genes, nodules, pairs


def random_batch(cfg: ExperimentConfig, batch_size: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    s, n = cfg.data.image_size, cfg.data.n_genes

    def img() -> torch.Tensor:
        return torch.rand(batch_size, 1, s, s, generator=g) * 2 - 1

    def msk() -> torch.Tensor:
        return (torch.rand(batch_size, 1, s, s, generator=g) > 0.8).float()

    return Batch(image=img(), mask=msk(), genes=torch.randn(batch_size, n, generator=g), background=img(),
                 mask_mismatch=msk(), genes_mismatch=torch.randn(batch_size, n, generator=g))


def counting(monkeypatch, module, name: str) -> list:
    """Replace module.name by a wrapper that records each call."""
    calls: list = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapper)
    return calls
