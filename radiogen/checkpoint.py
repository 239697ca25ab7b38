"""Checkpoints: models, EMA, optimisers, step and the config, written atomically, read with weights_only."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import ExperimentConfig, from_dict, to_dict
from .models import build_generator
from .train_step import TrainState, build_training, unwrap

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read back (truncated, corrupted, pickled code, another format) or written (a full
    disk); the message names the file and what to do."""


def write_failed(step: int, err: OSError, where: str | Path) -> CheckpointError:
    """The error of a checkpoint that could not be written (a full disk): the earlier checkpoints are untouched."""
    return CheckpointError(f"could not write the checkpoint of step {step} to {where} ({err.strerror}); the previous "
                           f"checkpoint stays as it was: free space and run again with the same --name to resume")


def save_checkpoint(path: str | Path, state: TrainState, extra: dict[str, Any] | None = None) -> Path:
    """Write atomically (temp file + rename): a crash leaves the previous file, never half of one.

    `extra` holds plain data only (numbers, strings, lists, dicts, tensors), e.g. epoch, RNG states,
    a tracking run id, so that `torch.load(weights_only=True)` can read it back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": to_dict(state.cfg),
        "step": state.step,
        "G": unwrap(state.G).state_dict(),
        "D": unwrap(state.D).state_dict(),
        "G_ema": state.G_ema.state_dict(),
        "opt_G": state.opt_G.state_dict(),
        "opt_D": state.opt_D.state_dict(),
        "extra": extra or {},
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw payload; CheckpointError for a damaged file, pickled code (weights_only) or another format."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint there") from None
    except Exception as err:  # noqa: BLE001 - torch raises zip, pickle, EOF and runtime errors for a damaged file
        # weights_only names the class a pickled object would have run; other unpickling errors are damage.
        code = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        detail = str(err).split("WeightsUnpickler error:")[-1].strip().split(". ")[0]  # past torch's advice
        what = (f"holds pickled code (a {code.group(1)} object), which radiogen never loads" if code else
                f"is damaged (truncated or corrupted: {type(err).__name__}: {detail.splitlines()[0][:160]})")
        raise CheckpointError(f"{path} {what}") from None
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is not supported (expected {FORMAT_VERSION}); "
                         f"it was written by another radiogen version")
    return payload


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[TrainState, dict[str, Any]]:
    """Rebuild models and optimisers from the stored config alone and restore every state; returns (state, extra)."""
    payload = read_checkpoint(path)
    cfg = from_dict(ExperimentConfig, payload["config"])
    state = build_training(cfg, device)
    state.G.load_state_dict(payload["G"])
    state.D.load_state_dict(payload["D"])
    state.G_ema.load_state_dict(payload["G_ema"])
    state.opt_G.load_state_dict(payload["opt_G"])
    state.opt_D.load_state_dict(payload["opt_D"])
    state.step = int(payload["step"])
    return state, payload["extra"]


def load_generator(path: str | Path, device: torch.device | str = "cpu",
                   ema: bool = True) -> tuple[torch.nn.Module, ExperimentConfig]:
    """The (EMA) generator in eval mode and its config, for evaluation and figures."""
    payload = read_checkpoint(path)
    cfg = from_dict(ExperimentConfig, payload["config"])
    G = build_generator(cfg)
    G.load_state_dict(payload["G_ema" if ema else "G"])
    return G.to(device).eval(), cfg
