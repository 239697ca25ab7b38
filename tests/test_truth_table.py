"""Known truth read from a cohort's truth.json or from a plain gene,program table with per-subject program values;
a malformed file or one of another cohort is refused with a message naming the file and the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radiogen.evaluation.truth_table import TruthError, load_truth

GENES = ["G1", "G2", "G3", "G4"]
SUBJECTS = ["S1", "S2", "S3"]


@pytest.fixture()
def tables(tmp_path):
    links = tmp_path / "links.csv"
    links.write_text("gene,program\nG1,size\nG3,density\n")
    programs = tmp_path / "programs.csv"
    programs.write_text("subject_id,size,density,irregularity,texture\nS1,0.5,-1,0,0\nS2,1,2,0,0\nS3,-1,0,1,1\n")
    return links, programs


def test_a_links_table_and_the_truth_json_give_the_same_truth(tmp_path, tables) -> None:
    links, programs = tables
    table = load_truth(links, programs)
    doc = {"gene_programs": {"G1": "size", "G2": None, "G3": "density", "G4": None}, "design": "drivers",
           "gene_effects": {"G1": -0.7, "G3": None},
           "subjects": {s: {"programs": {"size": v[0], "density": v[1], "irregularity": v[2], "texture": v[3]}}
                        for s, v in zip(SUBJECTS, [(0.5, -1, 0, 0), (1, 2, 0, 0), (-1, 0, 1, 1)])}}
    (tmp_path / "truth.json").write_text(json.dumps(doc))
    cohort = load_truth(tmp_path / "truth.json")
    for truth in (table, cohort):
        links_matrix = truth.link_matrix(GENES)
        assert links_matrix.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
        assert np.array_equal(truth.programs_of(SUBJECTS)[:, :2], [[0.5, -1], [1, 2], [-1, 0]])
        assert "are in" in truth.check(GENES, SUBJECTS)
    assert cohort.design == "drivers" and cohort.effects["G1"] == -0.7
    # A header-only links table: no gene causes anything (a null cohort).
    links.write_text("gene,program\n")
    assert not load_truth(links, programs).link_matrix(GENES).any()


def test_truth_of_another_cohort_is_refused_unless_partial(tmp_path, tables) -> None:
    links, programs = tables
    truth = load_truth(links, programs)
    with pytest.raises(TruthError, match=r"1 of the 2 linked genes of .*links.csv are in the dataset.*--truth-partial"):
        truth.check(["G1", "G2"], SUBJECTS)
    assert "1 linked genes are not in the dataset" in truth.check(["G1", "G2"], SUBJECTS, allow_partial=True)
    with pytest.raises(TruthError, match="0 of the 2 linked genes"):
        truth.check(["X1"], SUBJECTS, allow_partial=True)  # nothing left to score
    with pytest.raises(TruthError, match=r"lacks program values of subjects \['S9'\]"):
        truth.check(GENES, ["S1", "S9"])
    doc = {"gene_programs": {"G1": "size"}, "subjects": {s: {"programs": {"size": 0}} for s in SUBJECTS}}
    (tmp_path / "t.json").write_text(json.dumps(doc))
    with pytest.raises(TruthError, match="1 of the dataset's 2 genes are in .*this truth is of another cohort"):
        load_truth(tmp_path / "t.json").check(["G1", "G2"], SUBJECTS)


@pytest.mark.parametrize("links_text, programs_text, match", [
    ("gene;program\nG1;size\n", None, "first column of the header must be 'gene'"),
    ("gene,program,weight\nG1,size,1\n", None, "header must be exactly gene,program"),
    ("gene,program\nG1,size\nG1,density\n", None, "linked to size and density"),
    ("gene,program\nG1\n", None, "line 2: expected gene,program"),
    ("gene,program\nG1,shape\n", None, r"unknown program\(s\) \['shape'\]"),
    (None, "id,size\nS1,1\n", "first column of the header must be 'subject_id'"),
    (None, "subject_id,size\nS1,big\n", "line 2: could not convert"),
    (None, "subject_id,size\nS1,1,2\n", "line 2: 3 cells for 2 columns"),
])
def test_malformed_tables_name_the_file_and_the_fix(tmp_path, tables, links_text, programs_text, match) -> None:
    links, programs = tables
    if links_text is not None:
        links.write_text(links_text)
    if programs_text is not None:
        programs.write_text(programs_text)
    with pytest.raises(TruthError, match=match):
        load_truth(links, programs)


def test_wrong_kind_of_file_is_explained(tmp_path, tables) -> None:
    links, programs = tables
    with pytest.raises(TruthError, match="also pass the per-subject program values"):
        load_truth(links)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TruthError, match="bad.json is not a radiogen truth.json"):
        load_truth(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"subjects": {}}))
    with pytest.raises(TruthError, match="needs 'gene_programs'"):
        load_truth(tmp_path / "other.json")
    with pytest.raises(TruthError, match="not found"):
        load_truth(tmp_path / "missing.json")
