"""The loop's Session inside a Tune trial: a one-process training (CPU or one GPU) runs `loop.fit` directly in
the trial's function, as Ray's hyperparameter-optimisation guide does for single-process trials.

A Ray Train run per trial starts a controller, a placement-group cleaner, a preemption watcher, a dataset manager,
a report queue and a worker process: 17-26 s before its first report on 2 cores, for trials of a few hundred steps.
A direct trial has none of these. Its data comes from the sweep's driver, which read the training split once and
put it in Ray's object store (every trial on the node maps it); it reports with `tune.report` (with the
checkpoint, so Tune's schedulers and `--resume` see it) and resumes from `tune.get_checkpoint`. Trials with more
workers, or data that does not fit in memory, stay Ray Train runs (ray_jobs/ray_train.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from radiogen.data import MemorySource, Slices

from .loop import Records
from .ray_train import latest_validation


class DirectSession:
    """Batches from the training split in memory (on `device`), checkpoints committed through `tune.report`."""

    rank = 0
    world_size = 1

    def __init__(self, split: dict[str, Records], image_size: int, batch_size: int, seed: int, shuffle: bool,
                 device: torch.device) -> None:
        self.device = device
        self.source = MemorySource(split, image_size, batch_size, seed, shuffle, device=device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def epoch_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Slices, Slices]]:
        return self.source.epoch(epoch)

    def previous_checkpoint(self, checkpoint: Path) -> Path | None:
        """None: Ray hands a worker only its latest checkpoint, so a damaged one fails the attempt with its reason."""
        return None

    def latest_checkpoint(self) -> Path | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        if checkpoint.filesystem.type_name == "local":
            return Path(checkpoint.path)  # read in place
        return Path(checkpoint.to_directory())

    def commit(self, checkpoint_dir: Path | None, step: int, metrics: dict[str, float]) -> None:
        """Report the losses and the checkpoint's latest validation metrics (what ASHA and Optuna read). Tune copies
        the checkpoint into the trial's folder before this returns; a trial its scheduler stops ends here."""
        from ray import tune

        if checkpoint_dir is None:
            tune.report(metrics)
            return
        tune.report({**latest_validation(checkpoint_dir), **metrics},
                    checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
