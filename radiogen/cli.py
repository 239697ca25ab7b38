"""The `radiogen` command: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time

from .config import ConfigError, dump_yaml, load_config

# Stages that live outside the core library register their own subcommand (module:function).
EXTERNAL_COMMANDS: list[str] = ["data_prep.cohort:register_cli", "data_prep.prep:register_cli", "ray_jobs.train:register_cli"]


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML, e.g. ablations/tiny.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set loss.lambda_l1=50 (repeatable)")


def cmd_config(args: argparse.Namespace) -> int:
    print(dump_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    from .cost import format_cost, measure

    cfg = load_config(args.config, args.overrides)
    print(format_cost(cfg.name, measure(cfg)))
    return 0


def cmd_overfit(args: argparse.Namespace) -> int:
    """Train on one fixed toy batch: the smallest end-to-end check that G, D and the losses learn."""
    import torch

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radiogen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print an experiment config with overrides applied (checks it)")
    _config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("cost", help="parameter counts and FLOPs per training step of a config")
    _config_args(p)
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("overfit", help="sanity training on one fixed toy batch (no dataset needed)")
    _config_args(p)
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--every", type=int, default=50, help="print losses every N steps (default 50)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=cmd_overfit)

    for spec in EXTERNAL_COMMANDS:
        module, func = spec.split(":")
        getattr(importlib.import_module(module), func)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
