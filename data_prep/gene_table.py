"""Gene-expression tables (paper Section 3): GEO layout, CSV, gzip, either orientation; NA policy.

The GEO GSE103584 layout is tab-separated genes x samples: first column the gene symbol, one
column per subject (`R01-xxx`), missing values the literal `NA`. Also read: comma-separated
files, gzip-compressed files (by content, not name), `!`/`#` comment lines, and samples x genes
tables when the orientation is given explicitly.

Nothing is filled silently. A cell is NA when empty or one of NA_TOKENS; any other cell that is
not a finite number is *non-numeric* and its gene is dropped with that reason. The paper drops
every gene with any NA (`drop`, 5172 genes left on GSE103584). `max-fraction=F` keeps genes with
at most a fraction F of NA over the dataset's subjects and imputes the remaining NA cells with the
gene's median over the training split (no leakage); every imputed cell is listed in the manifest.
Then genes constant on the training split are dropped (`drop_constant`: they carry no information
there and cannot be z-scored; radiogen.genes.constant_genes), listed with that reason.

Refused: a gene symbol that occurs twice (which row is meant?). Ignored with a warning: columns
and rows without a name and without a value (a trailing tab). Warned: subjects that are 0 for
every gene.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from radiogen.genes import CONSTANT_STD, constant_genes

from .constants import GENE_ORIENTATIONS

NA_TOKENS = ("", "NA", "NaN", "nan", "N/A", "n/a", "null", "NULL")
Orientation = Literal["genes-x-samples", "samples-x-genes"]


class GeneTableError(ValueError):
    """The gene table as a whole cannot be used; the message says how to fix it."""


@dataclass
class GeneTable:
    """A parsed table as subjects x genes, NA as NaN, with what was wrong in it."""

    subjects: list[str]
    genes: list[str]
    values: np.ndarray                 # (subjects, genes) float64, NaN where NA or non-numeric
    non_numeric: np.ndarray            # (subjects, genes) bool: cell was text, not NA, not a number
    raw_cells: np.ndarray              # (subjects, genes) str, for messages about bad cells
    duplicate_subjects: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def column(self, subject: str) -> int:
        return self.subjects.index(subject)


@dataclass(frozen=True)
class NaPolicy:
    """`drop` (max_fraction 0: any NA drops the gene) or `max-fraction=F`."""

    max_fraction: float = 0.0

    def __str__(self) -> str:
        return "drop" if self.max_fraction == 0 else f"max-fraction={self.max_fraction:g}"


def parse_na_policy(text: str) -> NaPolicy:
    if text == "drop":
        return NaPolicy(0.0)
    key, sep, value = text.partition("=")
    if key == "max-fraction" and sep:
        try:
            f = float(value)
        except ValueError:
            f = -1.0
        if 0.0 <= f < 1.0:
            return NaPolicy(f)
    raise GeneTableError(f"--na-policy must be 'drop' or 'max-fraction=F' with 0 <= F < 1, got {text!r}")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise GeneTableError(f"cannot read gene table {path}: {err.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise GeneTableError(f"gene table {path} is a truncated or corrupt gzip file: {err}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise GeneTableError(f"gene table {path} is neither UTF-8 text nor gzip-compressed text") from None


def read_gene_table(path: str | Path, orientation: Orientation = "genes-x-samples") -> GeneTable:
    """Parse a gene table into subjects x genes (see the module docstring for the formats)."""
    import pandas as pd

    path = Path(path)
    if orientation not in GENE_ORIENTATIONS:
        raise GeneTableError(f"orientation must be one of {GENE_ORIENTATIONS}, got {orientation!r}")
    lines = [ln for ln in _read_text(path).splitlines() if ln.strip() and not ln.startswith(("!", "#"))]
    if len(lines) < 2:
        raise GeneTableError(f"gene table {path} has no data rows (a header and at least one row are needed)")
    sep = "\t" if "\t" in lines[0] else ","
    frame = pd.read_csv(io.StringIO("\n".join(lines)), sep=sep, header=None, dtype=str,
                        keep_default_na=False, na_filter=False, quotechar='"')
    cells = np.char.strip(frame.to_numpy(dtype=str))
    warnings: list[str] = []
    # A column (or row) without a header and without a value is an artefact of the writer, e.g. a
    # trailing tab on every line: not a subject or gene, so it is ignored and said.
    for axis, what in ((1, "column"), (0, "row")):
        filled = (cells != "").T if axis == 1 else cells != ""
        empty = [i for i in range(1, len(filled)) if not filled[i].any()]
        if empty:
            warnings.append(f"gene table {path.name}: {len(empty)} empty {what}(s) without name or values ignored "
                            f"({what} {', '.join(str(i + 1) for i in empty[:5])}{', ...' if len(empty) > 5 else ''})")
            cells = np.delete(cells, empty, axis=axis)
    header, row_names, body = cells[0, 1:], cells[1:, 0], cells[1:, 1:]
    if orientation == "genes-x-samples":
        subjects, genes, body = list(header), list(row_names), body.T
    else:
        subjects, genes = list(row_names), list(header)
    if not any(genes) or not any(subjects):
        raise GeneTableError(f"gene table {path}: no gene names or subject ids found; check --genes-orientation")
    dup_genes = pd.Series(genes).value_counts()
    if (dup_genes > 1).any():
        dups = dup_genes[dup_genes > 1].sort_index()
        raise GeneTableError(
            f"gene table {path}: {len(dups)} gene symbol(s) occur more than once: "
            + ", ".join(f"{g!r} x{n}" for g, n in list(dups.items())[:10]) + ("..." if len(dups) > 10 else "")
            + f"; symbols must be unique - keep one row per gene (e.g. average the probes of a gene) or rename "
              f"them (the table was read as {orientation}: is that its --genes-orientation?)")
    is_na = np.isin(body, NA_TOKENS)
    numbers = pd.to_numeric(pd.Series(body.ravel()), errors="coerce").to_numpy(dtype=np.float64).reshape(body.shape)
    non_numeric = ~is_na & ~np.isfinite(numbers)
    values = np.where(is_na | non_numeric, np.nan, numbers)

    counts = pd.Series(subjects).value_counts()
    duplicates = sorted(counts[counts > 1].index)
    observed = ~np.isnan(values)
    all_zero = [s for s, row, seen in zip(subjects, values, observed) if seen.any() and not row[seen].any()]
    if all_zero:
        warnings.append(f"{len(all_zero)} subject(s) have 0 for every gene (an empty or failed sample?): "
                        f"{', '.join(all_zero[:5])}{', ...' if len(all_zero) > 5 else ''}; check the gene table")
    return GeneTable(subjects, genes, values, non_numeric, body, duplicates, warnings)


@dataclass
class GeneSelection:
    """The genes kept for the dataset's subjects, and what happened to the others."""

    names: list[str]
    values: np.ndarray                     # (subjects, kept genes) float32, finite
    dropped: dict[str, list[str]]          # reason -> gene names
    imputed: list[tuple[str, str]]         # (subject, gene) cells filled with the train median


def select_genes(table: GeneTable, subjects: list[str], train: list[str], policy: NaPolicy) -> GeneSelection:
    """Apply the NA policy over `subjects` (the dataset's subjects, in output order)."""
    rows = [table.column(s) for s in subjects]
    values = table.values[rows]
    non_numeric = table.non_numeric[rows].any(0)
    na = np.isnan(values) & ~table.non_numeric[rows]
    na_fraction = na.mean(0) if len(rows) else np.zeros(len(table.genes))
    train_rows = [subjects.index(s) for s in train]
    train_all_na = np.isnan(values[train_rows]).all(0) if train_rows else np.ones(len(table.genes), bool)

    dropped: dict[str, list[str]] = {}
    keep = np.ones(len(table.genes), bool)
    for reason, bad in (("non-numeric cell", non_numeric),
                        (f"NA fraction > {policy.max_fraction:g}" if policy.max_fraction else "any NA",
                         na_fraction > policy.max_fraction),
                        ("NA in every training subject", train_all_na)):
        hit = keep & bad
        if hit.any():
            dropped[reason] = [table.genes[i] for i in np.flatnonzero(hit)]
        keep &= ~bad
    if not keep.any():
        raise GeneTableError(
            f"no gene survives the NA policy '{policy}' over {len(subjects)} subjects: "
            + ", ".join(f"{len(v)} dropped for {k}" for k, v in dropped.items())
            + "; use --na-policy max-fraction=F to keep genes with at most a fraction F of NA "
              "(the rest imputed with the training median)")
    kept = values[:, keep]
    imputed: list[tuple[str, str]] = []
    holes = np.argwhere(np.isnan(kept))
    if len(holes):
        median = np.nanmedian(kept[train_rows], axis=0)
        kept_names = [g for g, k in zip(table.genes, keep) if k]
        for r, c in holes:
            kept[r, c] = median[c]
            imputed.append((subjects[r], kept_names[c]))
    return GeneSelection([g for g, k in zip(table.genes, keep) if k], kept.astype(np.float32), dropped, imputed)


CONSTANT_REASON = f"constant on the training split (std of raw or log2(x+1) values < {CONSTANT_STD:g})"


def drop_constant(selection: GeneSelection, train_rows: list[int]) -> list[str]:
    """Drop (in place) the genes constant over the training rows (see radiogen.genes.constant_genes);
    returns their names, also recorded in selection.dropped[CONSTANT_REASON]."""
    constant = constant_genes(selection.values[train_rows])
    names = [g for g, c in zip(selection.names, constant) if c]
    if names:
        if constant.all():
            raise GeneTableError(f"all {len(names)} genes left after the NA policy are constant on the "
                                 f"{len(train_rows)} training subjects; check the gene table (or its subject ids)")
        selection.dropped[CONSTANT_REASON] = names
        selection.names = [g for g, c in zip(selection.names, constant) if not c]
        selection.values = selection.values[:, ~constant]
    return names


def describe_bad_cells(table: GeneTable, limit: int = 5) -> list[str]:
    """Human-readable examples of non-numeric cells (for the manifest and summary)."""
    out = []
    for r, c in np.argwhere(table.non_numeric)[:limit]:
        out.append(f"gene {table.genes[c]!r}, subject {table.subjects[r]!r}: {table.raw_cells[r, c]!r}")
    return out
