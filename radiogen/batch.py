"""The training batch: real nodule slices, paired backgrounds, and the mismatched mask/gene rows."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    image: torch.Tensor
    """x: real nodule slice (B, 1, S, S) in [-1, 1]."""
    mask: torch.Tensor
    """m: its nodule mask (B, 1, S, S) in {0, 1}."""
    genes: torch.Tensor
    """g: its subject's normalised gene vector (B, n_genes)."""
    background: torch.Tensor
    """x_b: a nodule-free background slice (B, 1, S, S) in [-1, 1]."""
    mask_mismatch: torch.Tensor
    """m-bar: a mask of a different subject (B, 1, S, S)."""
    genes_mismatch: torch.Tensor
    """g-bar: genes of a different subject (B, n_genes)."""

    def to(self, device: torch.device | str, channels_last: bool = False) -> "Batch":
        """Move to device (non_blocking from pinned memory); 4-D tensors optionally channels_last."""
        def move(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t

        return Batch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})


def mismatch_index(subject_ids: list[str], generator: torch.Generator | None = None,
                   allow_missing: bool = False) -> torch.Tensor:
    """For each row, the index of a random row from a DIFFERENT subject (the paper's m-bar, g-bar).

    A row whose subject is the only one in the batch gets -1 when `allow_missing`, else ValueError.
    """
    codes = {s: i for i, s in enumerate(dict.fromkeys(subject_ids))}
    ids = torch.tensor([codes[s] for s in subject_ids])
    allowed = (ids[:, None] != ids[None, :]).float()  # (B, B): 1 where subjects differ
    if len(codes) == 1:
        if allow_missing:
            return torch.full((len(subject_ids),), -1, dtype=torch.long)
        raise ValueError(f"a batch needs at least two subjects to form mismatched tuples; got only "
                         f"{sorted(codes)} - increase the batch size or shuffle across subjects")
    return torch.multinomial(allowed, 1, generator=generator).squeeze(1)
