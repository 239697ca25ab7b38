"""Parameter counts per component, FLOPs of one training step (torch's FLOP counter) and model FLOP utilisation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import ExperimentConfig
from .toy import toy_batch
from .train_step import autocast_dtype, build_training, train_step


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
    """Count FLOPs on a small batch (every op here is linear in batch size) and scale per sample.

    Counted eager (the counter sees no ops inside compiled graphs); compilation changes kernels, not FLOPs.
    """
    torch.manual_seed(cfg.train.seed)
    state = build_training(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile="off")), "cpu")
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


# Dense (no structured sparsity) peak throughput in TFLOP/s from NVIDIA's data sheets, by a substring of
# torch.cuda.get_device_name(); the more specific names first. tf32 is the tensor-core peak cuDNN uses for
# fp32 convolutions while torch.backends.cudnn.allow_tf32 is on (torch's default); fp32 the CUDA-core peak.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 NVL": {}, "H200 NVL": {},  # lower clocks than SXM: no figure here rather than the SXM one
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},  # SXM5 (get_device_name: "NVIDIA H100 80GB HBM3")
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},  # SXM; the same compute as the H100 SXM
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """Dense peak FLOP/s of a GPU named like torch.cuda.get_device_name() at `precision` (bf16, tf32, fp32);
    None for a CPU, an unknown device or precision (no figure is better than a guessed one)."""
    for key, peaks in PEAK_TFLOPS.items():
        if device_name and key.lower() in device_name.lower():
            return peaks[precision] * 1e12 if precision in peaks else None
    return None


def mfu(flops_per_step: float, steps_per_s: float, device_name: str | None, precision: str) -> float | None:
    """Model FLOP utilisation: achieved FLOP/s (FLOPs of one step, from `measure`, times steps/s) over the
    device's dense peak at `precision`; a fraction in [0, 1], None where the peak is unknown."""
    peak = peak_flops(device_name, precision)
    return None if peak is None else flops_per_step * steps_per_s / peak


def mfu_precision(cfg: ExperimentConfig, device: torch.device | str) -> str:
    """The peak a training step of `cfg` on `device` is held against: bf16 under bf16 autocast; for fp32,
    tf32 while cuDNN may use TF32 for convolutions (torch's default; they carry nearly all FLOPs), else fp32."""
    if autocast_dtype(cfg.train.precision, torch.device(device)) == torch.bfloat16:
        return "bf16"
    return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
