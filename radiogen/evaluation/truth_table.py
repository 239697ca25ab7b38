"""Known truth of a cohort: which genes cause which program, and each subject's program values.

Two forms are read, so that any cohort with known truth can be scored, not only radiogen's:
- truth.json of `radiogen cohort` ("gene_programs": every gene -> its program or null, "subjects": sid ->
  {"programs": {program: value}}, optionally "gene_effects": gene -> signed effect, "design");
- a plain table: a CSV `gene,program` with one row per true link (genes not listed cause nothing; a header
  only = no gene causes anything), plus a CSV `subject_id,<program>,...` of per-subject program values.
Program names are radiogen's phenotype programs (phenotype.PROGRAMS): the evaluation measures those.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .phenotype import PROGRAMS


class TruthError(ValueError):
    """A truth file that cannot be used; the message names the file and the fix."""


@dataclass
class Truth:
    source: str
    links: dict[str, str]                   # gene -> the program it causes (linked genes only)
    effects: dict[str, float | None]        # gene -> signed effect where known
    subject_programs: dict[str, dict[str, float]]
    genes: list[str] | None                 # every gene the truth speaks of (truth.json); None for a table
    design: str | None = None

    def link_matrix(self, gene_names: Sequence[str], programs: Sequence[str] = PROGRAMS) -> np.ndarray:
        """(G, P) bool: gene g causes program p."""
        return np.array([[self.links.get(g) == p for p in programs] for g in gene_names], dtype=bool
                        ).reshape(len(gene_names), len(programs))

    def programs_of(self, subjects: Sequence[str], programs: Sequence[str] = PROGRAMS) -> np.ndarray:
        """(S, P) program values of the subjects (NaN where the truth has none)."""
        return np.array([[self.subject_programs.get(s, {}).get(p, math.nan) for p in programs] for s in subjects])

    def check(self, gene_names: Sequence[str], subjects: Sequence[str], allow_partial: bool = False) -> str:
        """Refuse a truth that does not belong to the dataset; return a one-line note of the overlap."""
        missing_subjects = [s for s in subjects if s not in self.subject_programs]
        if missing_subjects:
            raise TruthError(f"{self.source} lacks program values of subjects {missing_subjects[:3]} of the dataset "
                             f"({len(missing_subjects)} of {len(subjects)}); pass the truth of the cohort the "
                             f"dataset was prepared from")
        names = set(gene_names)
        linked_in = sum(g in names for g in self.links)
        if self.genes is not None:
            foreign = [g for g in gene_names if g not in set(self.genes)]
            overlap = f"{len(gene_names) - len(foreign)} of the dataset's {len(gene_names)} genes are in {self.source}"
            if foreign and not allow_partial:
                raise TruthError(f"{overlap}; genes {foreign[:3]} are not: this truth is of another cohort. Pass "
                                 f"the truth of the cohort the dataset was prepared from, or --truth-partial to "
                                 f"score the overlap only")
        else:
            overlap = f"{linked_in} of the {len(self.links)} linked genes of {self.source} are in the dataset"
            if linked_in < len(self.links) and (not allow_partial or linked_in == 0):
                missing = [g for g in self.links if g not in names]
                raise TruthError(f"{overlap} (not: {missing[:3]}); check the gene symbols, or pass --truth-partial "
                                 f"to score the linked genes the dataset has")
        dropped = len(self.links) - linked_in
        return overlap + (f"; {dropped} linked genes are not in the dataset (e.g. dropped by prep's NA rule)"
                          if dropped else "")


def load_truth(path: str | Path, programs_csv: str | Path | None = None) -> Truth:
    """truth.json, or a `gene,program` CSV with its `subject_id,<program>...` CSV (programs_csv)."""
    path = Path(path)
    if not path.is_file():
        raise TruthError(f"truth file {path} not found")
    if path.suffix == ".json":
        if programs_csv is not None:
            raise TruthError(f"{path} is a truth.json, which holds the subjects' programs: leave out --truth-programs")
        return _from_json(path)
    if programs_csv is None:
        raise TruthError(f"{path} is a links table (gene,program); also pass the per-subject program values "
                         f"(--truth-programs, a CSV subject_id,<program>,...)")
    return _from_tables(path, Path(programs_csv))


def _from_json(path: Path) -> Truth:
    try:
        raw = json.loads(path.read_text())
        genes, subjects = raw["gene_programs"], raw["subjects"]
        programs = {sid: {p: float(v) for p, v in s["programs"].items()} for sid, s in subjects.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise TruthError(f"{path} is not a radiogen truth.json ({type(err).__name__}: {err}); it needs "
                         f"'gene_programs' (gene -> program or null) and 'subjects' (id -> {{'programs': ...}}), "
                         f"or give a gene,program CSV with --truth-programs") from None
    links = {g: p for g, p in genes.items() if p is not None}
    _check_programs(path, set(links.values()) | {p for v in programs.values() for p in v})
    return Truth(str(path), links, dict(raw.get("gene_effects", {})), programs, list(genes), raw.get("design"))


def _rows(path: Path, first: str) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise TruthError(f"{path}: cannot read it as CSV ({err})") from None
    if not rows or rows[0][0].strip() != first:
        raise TruthError(f"{path}: the first column of the header must be '{first}', got "
                         f"{rows[0][:3] if rows else 'an empty file'}")
    return [c.strip() for c in rows[0]], [[c.strip() for c in r] for r in rows[1:]]


def _from_tables(links_csv: Path, programs_csv: Path) -> Truth:
    header, rows = _rows(links_csv, "gene")
    if header != ["gene", "program"]:
        raise TruthError(f"{links_csv}: the header must be exactly gene,program (one row per true link), got "
                         f"{','.join(header)}")
    links: dict[str, str] = {}
    for n, row in enumerate(rows, start=2):
        if len(row) != 2 or not row[0] or not row[1]:
            raise TruthError(f"{links_csv} line {n}: expected gene,program, got {','.join(row)}")
        if links.get(row[0], row[1]) != row[1]:
            raise TruthError(f"{links_csv} line {n}: gene {row[0]} is linked to {links[row[0]]} and {row[1]}; "
                             f"radiogen scores one program per gene")
        links[row[0]] = row[1]
    header, rows = _rows(programs_csv, "subject_id")
    _check_programs(programs_csv, set(header[1:]) | set(links.values()))
    values: dict[str, dict[str, float]] = {}
    for n, row in enumerate(rows, start=2):
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} cells for {len(header)} columns")
            values[row[0]] = {p: float(v) for p, v in zip(header[1:], row[1:])}
        except ValueError as err:
            raise TruthError(f"{programs_csv} line {n}: {err}; each row is a subject id and one number per "
                             f"program") from None
    _check_programs(links_csv, set(links.values()))
    return Truth(str(links_csv), links, {}, values, None)


def _check_programs(path: Path, names: set[str]) -> None:
    unknown = sorted(names - set(PROGRAMS))
    if unknown:
        raise TruthError(f"{path}: unknown program(s) {unknown}; radiogen measures the phenotype of "
                         f"{', '.join(PROGRAMS)}: rename the programs to these")
