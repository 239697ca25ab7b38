"""One training step of the paper (Sec. 2.3): a D step, then a G step, then the EMA of G.

Knows nothing of Ray or MLflow: the local debug run and the distributed workers call the same
`train_step`. G and D may be DDP-wrapped; helpers below unwrap them where DDP hooks must not run.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn

from .batch import Batch
from .config import ExperimentConfig
from .losses import GANLoss
from .models import GeneratorOutput, build_discriminator, build_generator


@dataclass
class TrainState:
    cfg: ExperimentConfig
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    loss: GANLoss
    device: torch.device
    step: int = 0


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside a DDP (or any `.module`) wrapper."""
    return getattr(model, "module", model)


def requires_grad(model: nn.Module, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA for 'auto', on any device for 'bf16'; None = fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(state: TrainState) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(state.cfg.train.precision, state.device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(state.device.type, dtype=dtype)


def build_training(cfg: ExperimentConfig, device: torch.device | str = "cpu") -> TrainState:
    """Models, EMA copy, optimisers and loss for `cfg`, on `device` (seed the RNG before calling)."""
    device = torch.device(device)
    memory = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    G = build_generator(cfg).to(device, memory_format=memory)
    D = build_discriminator(cfg).to(device, memory_format=memory)
    G_ema = copy.deepcopy(G).eval()
    requires_grad(G_ema, False)
    o = cfg.optim
    opt_G = torch.optim.Adam(G.parameters(), lr=o.lr_G, betas=(o.beta1, o.beta2))
    opt_D = torch.optim.Adam(D.parameters(), lr=o.lr_D, betas=(o.beta1, o.beta2))
    return TrainState(cfg, G, D, G_ema, opt_G, opt_D, GANLoss(cfg.loss), device)


def _grad_norm(model: nn.Module, clip: float) -> torch.Tensor:
    """Total gradient norm (a device tensor, no sync); clips in place when clip > 0."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def _detach(out: GeneratorOutput) -> GeneratorOutput:
    return GeneratorOutput(*(None if t is None else t.detach() for t in out))


def train_step(state: TrainState, batch: Batch) -> dict[str, torch.Tensor]:
    """One D step and one G step on `batch` (already on state.device); returns detached device tensors."""
    G, D, clip = state.G, state.D, state.cfg.optim.grad_clip
    G.train()
    D.train()
    # One G forward serves both phases: detached for D, with its graph for G.
    with autocast(state):
        fake = G(batch.background, batch.genes)

    # Discriminator: real tuples, mismatched tuples (m_bar, g_bar from other subjects), fakes.
    requires_grad(D, True)
    with torch.no_grad(), autocast(state):
        wrong_code = unwrap(G).gene_code(batch.genes_mismatch)
    fake_d = _detach(fake)
    with autocast(state):
        d_terms = state.loss.discriminator(D, batch, fake_d, fake_d.code, wrong_code)
    state.opt_D.zero_grad(set_to_none=True)
    d_terms["loss/D/total"].backward()
    grad_norm_D = _grad_norm(D, clip)
    state.opt_D.step()

    # Generator: D frozen and unwrapped (no DDP all-reduce for a model that is not being updated).
    requires_grad(D, False)
    with autocast(state):
        g_terms = state.loss.generator(unwrap(D), batch, fake)
    state.opt_G.zero_grad(set_to_none=True)
    g_terms["loss/G/total"].backward()
    grad_norm_G = _grad_norm(G, clip)
    state.opt_G.step()
    requires_grad(D, True)

    ema_update(state.G_ema, unwrap(G), state.cfg.train.ema_decay)
    state.step += 1
    metrics = {**d_terms, **g_terms, "grad_norm/D": grad_norm_D, "grad_norm/G": grad_norm_G}
    return {k: v.detach() for k, v in metrics.items()}
