"""Small shared builders for the tests (tiny configs, random batches)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from radiogen.batch import Batch
from radiogen.config import ExperimentConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def tiny(**slices: dict) -> ExperimentConfig:
    """ablations/tiny.yaml with some fields of some slices replaced, e.g. tiny(generator={"fusion": "concat"})."""
    cfg = load_config(REPO / "ablations" / "tiny.yaml")
    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in slices.items()})


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
