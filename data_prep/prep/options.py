"""A prep run's options (the command's flags, typed) and the error that stops a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_prep import gene_table as gt
from data_prep.constants import DEFAULT_SPLIT

from .case import PrepParams


@dataclass
class PrepOptions:
    out: Path
    """The dataset folder (created, or replaced when it holds a dataset)."""
    genes: Path
    """The gene table."""
    cases: Path | None = None
    """A cases file (subject_id,image,mask), or ..."""
    tcia_root: Path | None = None
    """... a TCIA folder tree."""
    params: PrepParams = field(default_factory=PrepParams)
    split: tuple[float, float, float] = DEFAULT_SPLIT
    na_policy: gt.NaPolicy = field(default_factory=gt.NaPolicy)
    genes_orientation: gt.Orientation = "genes-x-samples"
    workers: int = 2
    address: str | None = None
    cache: Path | None = None
    """The per-subject cache (default: .<out>.prep-cache beside --out)."""
    use_ray: str = "auto"
    """One of data_prep.constants.USE_RAY."""


class PrepError(RuntimeError):
    """The run as a whole cannot produce a dataset; the message says why and how to fix it.
    `outcomes` holds what happened to each subject, when subjects were looked at."""

    def __init__(self, message: str, outcomes: dict[str, dict] | None = None):
        super().__init__(message)
        self.outcomes = outcomes or {}
