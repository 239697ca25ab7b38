"""Stage gpu: images/s of the research loop's settings vs the GPU fast path, and model FLOP utilisation.

Three modes of the same model (ablations/paper.yaml), each a set of train/optim fields:
  reference: ablations/reference.yaml - fp32, eager, batch 16, contiguous memory, foreach Adam, no cuDNN autotuning;
  fast: bf16 autocast, channels_last, fused Adam, cuDNN autotuning, at the batch that gives the most images/s
    (powers of two from 16 up to a cap, stopping at out-of-memory or when images/s drops);
  compiled: fast plus torch.compile of G and D, at fast's batch.
Steps run in-process on a device-resident toy batch (the data path is benchmarked by other stages), warm-up
steps excluded, timed between device synchronisations. MFU = FLOPs per step (radiogen.cost.measure) times
steps/s over the GPU's dense peak (bf16 for the fast modes, TF32 for fp32 convolutions).

Without CUDA the GPU measures are reported as not measured, and the same code runs on the CPU at the tiny
config's size (ablations/tiny.yaml, few steps): those figures are labelled CPU and only show the path works.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path

import torch

from radiogen.config import ExperimentConfig, load_config
from radiogen.cost import measure, mfu, mfu_precision
from radiogen.toy import toy_batch
from radiogen.train_step import build_training, train_step

from .common import Context, Measure, ratio_measure

ABLATIONS = Path(__file__).resolve().parents[2] / "ablations"
REFERENCE = {"train": {"batch_size": 16, "precision": "fp32", "channels_last": False, "compile": "off",
                       "cudnn_benchmark": False}, "optim": {"adam": "foreach"}}
"""The research loop's settings; ablations/reference.yaml is paper.yaml with these (a test keeps them in step)."""
FAST = {"train": {"precision": "bf16", "channels_last": True, "compile": "off", "cudnn_benchmark": True},
        "optim": {"adam": "fused"}}
COMPILED = {"train": {**FAST["train"], "compile": "default"}, "optim": FAST["optim"]}
SPEEDUP_TARGET, MFU_TARGET = 5.0, 0.25
NOT_MEASURED = "not measured: no GPU on this machine"


def with_mode(cfg: ExperimentConfig, mode: dict, batch_size: int | None = None) -> ExperimentConfig:
    """`cfg` with a mode's train/optim fields (and a batch size) replaced."""
    train = {**mode["train"], **({} if batch_size is None else {"batch_size": batch_size})}
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train),
                               optim=dataclasses.replace(cfg.optim, **mode["optim"]))


def images_per_s(cfg: ExperimentConfig, device: torch.device, steps: int, warmup: int) -> float:
    """Training steps of `cfg` per second times the batch size, after `warmup` untimed steps."""
    torch.manual_seed(cfg.train.seed)
    state = build_training(cfg, device)
    batch, _ = toy_batch(cfg.train.batch_size, cfg.data.image_size, cfg.data.n_genes, seed=cfg.train.seed)
    batch = batch.to(device, cfg.train.channels_last)
    sync = torch.get_device_module(device).synchronize  # torch.cpu.synchronize is a no-op
    for _ in range(warmup):  # compilation, cuDNN autotuning, allocator warm-up
        train_step(state, batch)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(state, batch)
    sync()
    return steps * cfg.train.batch_size / (time.perf_counter() - start)


def fill_batch(cfg: ExperimentConfig, device: torch.device, batches: list[int], steps: int,
               warmup: int) -> tuple[int, float]:
    """(batch, images/s) of the best batch in `batches` (ascending), stopping at out-of-memory or a drop."""
    best = (batches[0], 0.0)
    for b in batches:
        try:
            rate = images_per_s(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=b)),
                                device, steps, warmup)
        except torch.OutOfMemoryError:
            break
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if rate < best[1]:
            break
        best = (b, rate)
    return best


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def run(ctx: Context) -> list[Measure]:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        base, label = load_config(ABLATIONS / "paper.yaml"), ""
        gpu = torch.cuda.get_device_name(device)
        where = f"{gpu}, paper config (128 px)"
        batches = [16, 32] if ctx.quick else [16, 32, 64, 128, 256, 512]
        steps, warmup = (3, 2) if ctx.quick else (30, 5)
    else:
        base, label, gpu = load_config(ABLATIONS / "tiny.yaml"), "CPU tiny: ", None
        where = f"CPU ({torch.get_num_threads()} threads), tiny config (32 px): shows the code path runs, not GPU speed"
        batches = [16] if ctx.quick else [16, 32]
        steps, warmup = (2, 1) if ctx.quick else (5, 2)
    flops_per_sample = measure(base).flops_per_sample

    reference = with_mode(base, REFERENCE)
    ref_rate = images_per_s(reference, device, steps, warmup)
    batch, fast_rate = fill_batch(with_mode(base, FAST), device, batches, steps, warmup)
    compiled_rate, compiled_note = None, ""
    if ctx.quick and not cuda:
        compiled_note = "skipped in quick mode on CPU (compiling takes minutes here); tests/test_fast_path.py " \
                        "runs and checks a compiled step"
    else:  # the first warm-up steps compile
        compiled_rate = images_per_s(with_mode(base, COMPILED, batch), device, steps, warmup + 2)

    rows = [("reference (fp32, eager, batch 16, foreach Adam)", reference, ref_rate, 16, ""),
            ("fast path, eager (bf16, channels_last, fused Adam)", with_mode(base, FAST, batch), fast_rate, batch, ""),
            ("fast path + torch.compile", with_mode(base, COMPILED, batch), compiled_rate, batch, compiled_note)]
    speed_target, mfu_target = f">= {SPEEDUP_TARGET:g}x", f"> {100 * MFU_TARGET:g}%"
    out: list[Measure] = []
    for i, (name, cfg, rate, b, note) in enumerate(rows):
        fast = i > 0
        setup = f"{where}; batch {b}, {steps} timed steps after {warmup} warm-up; {note}".rstrip("; ")
        flops_note = f"{flops_per_sample * b / 1e9:.2f} GFLOP per step (radiogen cost); {setup}"
        if fast:  # the target is for an H100: not claimed for a CPU's figures
            out.append(ratio_measure("gpu", f"{label}images/s {name}", rate, "images/s", ref_rate, "reference",
                                     SPEEDUP_TARGET if cuda else None, note=setup))
        else:
            out.append(Measure("gpu", f"{label}images/s {name}", rate, "images/s", note=setup))
        if cuda:
            precision = mfu_precision(cfg, device)
            util = mfu(flops_per_sample * b, rate / b, gpu, precision)
            out.append(Measure("gpu", f"MFU {name}", _pct(util), "%", target=mfu_target if fast else "",
                               met=None if util is None or not fast else util > MFU_TARGET,
                               note=f"against the {precision} dense peak; {flops_note}"))
        else:  # a CPU has no peak in radiogen.cost: the achieved rate instead
            out.append(Measure("gpu", f"{label}GFLOP/s {name}", None if rate is None else flops_per_sample * rate / 1e9,
                               "GFLOP/s", note=flops_note))
    if not cuda:  # the GPU figures this stage exists for
        for i, (name, *_) in enumerate(rows):
            out.append(Measure("gpu", f"images/s {name}", None, "images/s", target=speed_target if i else "",
                               note=NOT_MEASURED))
            out.append(Measure("gpu", f"MFU {name}", None, "%", target=mfu_target if i else "", note=NOT_MEASURED))
    return out
