"""The `--local` session: one process, no Ray, data straight from parquet, CUDA when present.

This is the run a researcher steps through with a debugger; it executes the same `loop.fit` as the
Ray workers, with checkpoints under RUNS/<run name>/checkpoints/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from radiogen.checkpoint import write_failed
from radiogen.data import LocalSource, Slices
from radiogen.publish import building

KEEP_CHECKPOINTS = 2


class LocalSession:
    rank = 0
    world_size = 1

    def __init__(self, source: LocalSource, run_dir: Path, device: torch.device):
        self.source, self.device = source, device
        self.checkpoints = run_dir / "checkpoints"
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def epoch_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Slices, Slices]]:
        return self.source.epoch(epoch)

    def latest_checkpoint(self) -> Path | None:
        done = sorted(p for p in self.checkpoints.glob("step_*") if p.is_dir())
        return done[-1] if done else None

    def previous_checkpoint(self, checkpoint: Path) -> Path | None:
        """The newest kept checkpoint older than `checkpoint` (KEEP_CHECKPOINTS are kept)."""
        older = sorted(p for p in self.checkpoints.glob("step_*") if p.is_dir() and p.name < checkpoint.name)
        return older[-1] if older else None

    def commit(self, checkpoint_dir: Path | None, step: int, metrics: dict[str, float]) -> None:
        try:
            with building(self.checkpoints / checkpoint_dir.name) as staging:  # appears complete or not at all
                for item in checkpoint_dir.iterdir():
                    shutil.move(item, staging / item.name)  # a rename when scratch and runs share a filesystem
        except OSError as err:  # a full disk while copying across filesystems: the earlier checkpoints stay
            raise write_failed(step, err, self.checkpoints) from None
        for old in sorted(p for p in self.checkpoints.glob("step_*") if p.is_dir())[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
