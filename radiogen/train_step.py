"""One training step of the paper (Sec. 2.3): a D step, then a G step, then the EMA of G.

Knows nothing of Ray or MLflow: the local debug run and the distributed workers call the same
`train_step`. G and D may be DDP-wrapped; helpers below unwrap them where DDP hooks must not run.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections import deque
from dataclasses import dataclass, field

import torch
from torch import nn

from .batch import Batch
from .config import ExperimentConfig, OptimConfig
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
    recent: deque = field(default_factory=lambda: deque(maxlen=BN_BATCHES))
    """(background, genes) of the last training batches: G_ema's BatchNorm statistics are computed on them."""
    ema_bn_step: int = -1
    """The step at which G_ema's BatchNorm statistics were last recomputed (-1 = never)."""


# G_ema's BatchNorm statistics are recomputed on this many recent training batches before it is used.
BN_BATCHES = 8


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside a DDP (or any `.module`) wrapper."""
    return getattr(model, "module", model)


def requires_grad(model: nn.Module, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


def ema_decay_at(decay: float, step: int) -> float:
    """EMA decay ramped up from 0.1 at step 0 to `decay`: min(decay, (1 + t) / (10 + t)).

    A fixed 0.999 would keep 0.999**t of the random initial weights (82% after 200 steps); the
    ramp makes a short run's G_ema an average of its recent generators instead.
    """
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters. Buffers are left alone: BatchNorm
    statistics of the live G do not fit the averaged weights; `refresh_ema_bn` recomputes them."""
    # One multi-tensor kernel instead of one launch per parameter (G has ~100 tensors).
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - decay)


@contextlib.contextmanager
def local_rng(seed: int, device: torch.device):
    """Run a block on its own seeded RNG stream and restore the global one after it (training noise
    must not depend on whether a validation or an evaluation happened in between)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, inputs: list[tuple[torch.Tensor, torch.Tensor]], seed: int = 0) -> None:
    """Reset every BatchNorm's running statistics and set them to the average over `inputs`
    ((background, genes) batches) with `model`'s current weights (as torch.optim.swa_utils.update_bn
    does for single-input models). The global RNG is left untouched."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or not inputs:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches, not an EMA of them
    was_training = model.training
    model.train()
    with local_rng(seed, inputs[0][0].device):
        for background, genes in inputs:
            model(background, genes)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.train(was_training)


def refresh_ema_bn(state: "TrainState") -> None:
    """Give G_ema BatchNorm statistics of its own weights, from the recent training batches; once per step.

    Called before G_ema is validated, checkpointed or logged, so every G_ema a user sees is consistent.
    """
    if state.ema_bn_step == state.step or not state.recent:
        return
    recompute_bn_stats(state.G_ema, list(state.recent), seed=state.cfg.train.seed)
    state.G_ema.eval()
    state.ema_bn_step = state.step


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


ADAM_KERNELS = ("fused", "foreach", "capturable")
"""Adam's param-group flags that pick an implementation, not the maths."""


def _keep_kernels(opt: torch.optim.Optimizer, saved: dict) -> dict:
    """load_state_dict pre-hook: keep this optimiser's implementation flags instead of the saved ones.

    torch.optim restores param groups wholesale, so a foreach checkpoint would silently turn a fused optimiser
    into a foreach one (and the reverse); with the flags replaced before loading, torch also places `step`
    where this implementation reads it (on the device for fused, on the CPU otherwise).
    """
    if len(saved["param_groups"]) != len(opt.param_groups):
        return saved  # load_state_dict reports the mismatch
    groups = [{**g, **{k: own[k] for k in ADAM_KERNELS if k in own}}
              for g, own in zip(saved["param_groups"], opt.param_groups)]
    return {**saved, "param_groups": groups}


def make_adam(params, lr: float, cfg: OptimConfig) -> torch.optim.Adam:
    """Adam with the kernels of `cfg.adam` (fused, foreach or for-loop); its state loads from any of them."""
    kernels = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[cfg.adam]
    opt = torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), **kernels)
    opt.register_load_state_dict_pre_hook(_keep_kernels)
    return opt


COMPILE_MODES = {"default": None, "max-autotune": "max-autotune-no-cudagraphs"}
"""train.compile -> torch.compile mode."""


def build_training(cfg: ExperimentConfig, device: torch.device | str = "cpu") -> TrainState:
    """Models, EMA copy, optimisers and loss for `cfg`, on `device` (seed the RNG before calling).

    With train.compile on, G and D are compiled in place (nn.Module.compile), so a DDP wrapper added
    afterwards (the order torch documents), `unwrap` and state_dict keys all see the plain modules.
    """
    device = torch.device(device)
    t = cfg.train
    torch.backends.cudnn.benchmark = t.cudnn_benchmark  # process-wide; read only by cuDNN convolutions
    memory = torch.channels_last if t.channels_last else torch.preserve_format
    G = build_generator(cfg).to(device, memory_format=memory)
    D = build_discriminator(cfg).to(device, memory_format=memory)
    G_ema = copy.deepcopy(G).eval()  # before compiling: G_ema stays eager (used a few times per validation)
    requires_grad(G_ema, False)
    if t.compile != "off":
        G.compile(mode=COMPILE_MODES[t.compile])
        D.compile(mode=COMPILE_MODES[t.compile])
    opt_G = make_adam(G.parameters(), cfg.optim.lr_G, cfg.optim)
    opt_D = make_adam(D.parameters(), cfg.optim.lr_D, cfg.optim)
    loss = GANLoss(cfg.loss, augment=t.augment)
    return TrainState(cfg, G, D, G_ema, opt_G, opt_D, loss, device)


def _grad_norm(model: nn.Module, clip: float) -> torch.Tensor:
    """Total gradient norm (a device tensor, no sync); clips in place when clip > 0."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def _detach(out: GeneratorOutput) -> GeneratorOutput:
    return GeneratorOutput(*(None if t is None else t.detach() for t in out))


def lr_scale(schedule: str, step: int, max_steps: int) -> float:
    """Factor on the configured learning rates at `step` (optim.lr_schedule): 1, or a half cosine from 1 to 0.1."""
    if schedule == "constant":
        return 1.0
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, max_steps) / max_steps))


def train_step(state: TrainState, batch: Batch) -> dict[str, torch.Tensor]:
    """One D step and one G step on `batch` (already on state.device); returns detached device tensors."""
    G, D, clip = state.G, state.D, state.cfg.optim.grad_clip
    optim = state.cfg.optim
    if optim.lr_schedule != "constant":  # set from the step alone: a resumed run continues the same curve
        scale = lr_scale(optim.lr_schedule, state.step, state.cfg.train.max_steps)
        for opt, lr in ((state.opt_D, optim.lr_D), (state.opt_G, optim.lr_G)):
            for group in opt.param_groups:
                group["lr"] = lr * scale
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
        gene_weight = unwrap(G).gene_input_weight() if state.cfg.loss.phi_group_lasso > 0 else None
        g_terms = state.loss.generator(unwrap(D), batch, fake, gene_weight)
    state.opt_G.zero_grad(set_to_none=True)
    g_terms["loss/G/total"].backward()
    grad_norm_G = _grad_norm(G, clip)
    state.opt_G.step()
    requires_grad(D, True)

    ema_update(state.G_ema, unwrap(G), ema_decay_at(state.cfg.train.ema_decay, state.step))
    state.recent.append((batch.background, batch.genes))
    state.step += 1
    metrics = {**d_terms, **g_terms, "grad_norm/D": grad_norm_D, "grad_norm/G": grad_norm_G,
               "gen/mask_area": (fake.mask.detach() >= 0.5).float().mean()}  # fraction of the slice G calls nodule
    return {k: v.detach() for k, v in metrics.items()}
