"""The core library's subcommands of `radiogen` (config, cost, overfit) and a docstring reader.

The `radiogen` command itself is `ray_jobs.cli:main`, the outermost layer: it builds one parser
from light argument-definition functions (this module's `register_cli` among them) and imports a
command's heavy module only when that command runs. Nothing here imports torch at parser time, and
the core library imports nothing from data_prep/ or ray_jobs/.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import math
import sys
import time


def source_docstring(module: str) -> str | None:
    """A module's docstring read from its source without importing it (keeps `--help` fast)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read()))


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML, e.g. ablations/tiny.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set loss.lambda_l1=50 (repeatable)")


def cmd_config(args: argparse.Namespace) -> int:
    from .config import ConfigError, dump_yaml, load_config

    if args.reference:
        from .config_reference import reference_markdown

        print(reference_markdown(), end="")
        return 0
    if not args.config:
        raise ConfigError("--config is required (or --reference for the reference of every field)")
    print(dump_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    from .config import load_config
    from .cost import format_cost, measure, mfu, mfu_precision

    cfg = load_config(args.config, args.overrides)
    cost = measure(cfg)
    print(format_cost(cfg.name, cost))
    if args.images_per_s is not None:
        precision = mfu_precision(cfg, "cuda")
        util = mfu(cost.flops_per_sample, args.images_per_s, args.gpu, precision)
        tflops = cost.flops_per_sample * args.images_per_s / 1e12
        achieved = f"{tflops:.2f} TFLOP/s achieved at {args.images_per_s:g} images/s"
        peak = (f"{100 * util:.1f}% of the dense {precision} peak" if util is not None
                else f"no {precision} peak known for this device")
        print(f"MFU on {args.gpu}: {achieved}, " + peak)
    return 0


def cmd_overfit(args: argparse.Namespace) -> int:
    """Train on one fixed toy batch: the smallest end-to-end check that G, D and the losses learn."""
    import torch

    from .config import load_config
    from .toy import toy_batch
    from .train_step import build_training, train_step

    cfg = load_config(args.config, args.overrides)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.train.seed)
    state = build_training(cfg, device)
    batch, _ = toy_batch(cfg.train.batch_size, cfg.data.image_size, cfg.data.n_genes, seed=cfg.train.seed)
    batch = batch.to(device, cfg.train.channels_last)
    print(f"overfit {cfg.name}: {args.steps} steps on one toy batch of {cfg.train.batch_size} "
          f"{cfg.data.image_size}x{cfg.data.image_size} slices on {device}")
    first_l1 = last = None
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        metrics = train_step(state, batch)
        if step == 1 or step % args.every == 0 or step == args.steps:
            last = {k: v.item() for k, v in metrics.items()}
            first_l1 = last.get("loss/G/l1") if first_l1 is None else first_l1
            print(f"step {step:5d}  " + "  ".join(f"{k.removeprefix('loss/')}={v:.4f}" for k, v in last.items()
                                                    if k.startswith("loss/")))
            if not all(math.isfinite(v) for v in last.values()):
                print(f"error: non-finite loss at step {step}; lower the learning rates or check the config",
                      file=sys.stderr)
                return 1
    elapsed = time.perf_counter() - start
    print(f"{args.steps / elapsed:.1f} steps/s, {args.steps * cfg.train.batch_size / elapsed:.0f} images/s")
    if first_l1 is not None and "loss/G/l1" in last:
        print(f"background L1: {first_l1:.4f} -> {last['loss/G/l1']:.4f} "
              f"({first_l1 / max(last['loss/G/l1'], 1e-12):.1f}x lower)")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """The core subcommands; each names its handler as "module:function" (imported when it runs)."""
    p = subparsers.add_parser("config", help="print an experiment config with overrides applied (checks it), or "
                                             "the reference of every config field")
    p.add_argument("--config", help="experiment YAML, e.g. ablations/tiny.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set loss.lambda_l1=50 (repeatable)")
    p.add_argument("--reference", action="store_true",
                   help="print the configuration reference (markdown: every field, type, default, meaning; "
                        "docs/config.md)")
    p.set_defaults(handler="radiogen.cli:cmd_config")

    p = subparsers.add_parser("cost", help="parameter counts and FLOPs per training step of a config (and MFU)")
    _config_args(p)
    p.add_argument("--images-per-s", type=float, default=None,
                   help="training throughput measured on a GPU (e.g. perf/images_per_s): also print the MFU")
    p.add_argument("--gpu", default="NVIDIA H100 80GB HBM3",
                   help="the GPU's name as torch.cuda.get_device_name() gives it (default: an H100 SXM)")
    p.set_defaults(handler="radiogen.cli:cmd_cost")

    p = subparsers.add_parser("overfit", help="sanity training on one fixed toy batch (no dataset needed)")
    _config_args(p)
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--every", type=int, default=50, help="print losses every N steps (default 50)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(handler="radiogen.cli:cmd_overfit")


if __name__ == "__main__":
    sys.exit("the radiogen command is `radiogen` (or `python -m ray_jobs.cli`); radiogen.cli only defines "
             "the core subcommands")
