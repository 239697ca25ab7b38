"""Parameter counts per component and FLOPs of one training step, measured with torch's FLOP counter."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import ExperimentConfig
from .toy import toy_batch
from .train_step import build_training, train_step


@dataclass(frozen=True)
class Cost:
    params: dict[str, int]
    """Trainable parameters per top-level child of G and D (plus totals)."""
    flops_per_sample: float
    """FLOPs of one full training step (G forward, D step, G step) per sample."""
    batch_size: int

    @property
    def flops_per_step(self) -> float:
        return self.flops_per_sample * self.batch_size


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure(cfg: ExperimentConfig, sample_batch: int = 2) -> Cost:
    """Count FLOPs on a small batch (every op here is linear in batch size) and scale per sample."""
    torch.manual_seed(cfg.train.seed)
    state = build_training(cfg, "cpu")
    params = {f"G.{name}": count_params(child) for name, child in state.G.named_children()}
    params["G"] = count_params(state.G)
    params |= {f"D.{name}": count_params(child) for name, child in state.D.named_children()}
    params["D"] = count_params(state.D)
    batch, _ = toy_batch(sample_batch, cfg.data.image_size, cfg.data.n_genes, seed=cfg.train.seed)
    with FlopCounterMode(display=False) as counter:
        train_step(state, batch)
    return Cost(params, counter.get_total_flops() / sample_batch, cfg.train.batch_size)


def format_cost(name: str, cost: Cost) -> str:
    lines = [f"{name}: G {cost.params['G'] / 1e6:.2f} M params, D {cost.params['D'] / 1e6:.2f} M params, "
             f"{cost.flops_per_sample / 1e9:.3f} GFLOP per sample per training step, "
             f"{cost.flops_per_step / 1e9:.2f} GFLOP per step at batch {cost.batch_size}"]
    lines += [f"  {k:<22} {v:>12,d}" for k, v in cost.params.items() if k not in ("G", "D")]
    return "\n".join(lines)
