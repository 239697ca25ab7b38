"""The cohort designs (data_prep.gene_model): each design's stated truth holds in the generated genes and
programs, and every design is byte-deterministic per seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from data_prep.cohort import write_cohort
from data_prep.gene_model import DESIGNS, PROGRAMS, PROGRAM_NOISE, genes_tsv, simulate_expression

N, G = 600, 200


def _measured(expr) -> np.ndarray:
    """(N, G) z-scored log2(count + 1), NaN genes (NA cells) left NaN."""
    lx = np.log2(expr.counts + 1.0).T
    return (lx - lx.mean(0)) / lx.std(0)


def _r(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every column of x (N, G) with y (N,)."""
    xc, yc = x - x.mean(0), y - y.mean()
    return (xc * yc[:, None]).sum(0) / np.sqrt((xc ** 2).sum(0) * (yc ** 2).sum())


@pytest.fixture(scope="module")
def cohorts() -> dict:
    return {d: simulate_expression(N, seed=4, genes=G, design=d) for d in DESIGNS}


def _links(expr, p: int) -> np.ndarray:
    return np.array([gp == PROGRAMS[p] for gp in expr.gene_program])


def test_programs_are_about_standard_normal_and_links_have_no_na(cohorts) -> None:
    for design, expr in cohorts.items():
        assert expr.programs.shape == (N, 4) and expr.kinds == DESIGNS[design]
        assert np.all(np.abs(expr.programs.mean(0)) < 0.3) and np.all((0.8 < expr.programs.std(0))
                                                                        & (expr.programs.std(0) < 1.25)), design
        if design != "aligned":  # preparation drops genes with any NA: the truth must survive it
            linked = np.array([gp is not None for gp in expr.gene_program])
            assert not np.isnan(expr.counts[linked]).any(), design
            assert np.isnan(expr.counts[~linked]).any(), design


def test_drivers_explain_the_program_and_their_passengers_correlate_without_being_links(cohorts) -> None:
    expr = cohorts["drivers"]
    x = _measured(expr)
    for p in range(4):
        links = _links(expr, p)
        drivers = np.flatnonzero(links)
        assert 3 <= len(drivers) <= 8 and len(set(expr.clusters[drivers])) == len(drivers)  # distinct clusters
        y = expr.programs[:, p]
        # The drivers explain the program up to its noise, with the signs truth.json states.
        fit = np.linalg.lstsq(np.c_[np.ones(N), x[:, drivers]], y, rcond=None)[0]
        resid = y - np.c_[np.ones(N), x[:, drivers]] @ fit
        assert 1 - resid.var() / y.var() == pytest.approx(1 - PROGRAM_NOISE, abs=0.1)
        assert np.array_equal(np.sign(fit[1:]), np.sign(expr.effects[drivers]))
        # Passengers (the drivers' co-expressed cluster mates) correlate with the program ...
        measured = ~np.isnan(x).any(0)
        passengers = np.isin(expr.clusters, expr.clusters[drivers]) & ~links & measured
        others = (expr.clusters >= 0) & ~np.isin(expr.clusters, expr.clusters[drivers]) & measured
        assert np.abs(_r(x[:, passengers], y)).mean() > 0.12
        assert np.abs(_r(x[:, passengers], y)).mean() > 2 * np.abs(_r(x[:, others], y)).mean()
        # ... but carry nothing once the drivers are known: not links.
        assert np.abs(_r(x[:, passengers], resid)).mean() < 2.5 / np.sqrt(N)


def test_weak_program_is_many_small_effects_that_add_up(cohorts) -> None:
    expr = cohorts["weak"]
    x = _measured(expr)
    for p in range(4):
        links = _links(expr, p)
        assert links.sum() == G // 5
        r = _r(x[:, links], expr.programs[:, p])
        assert 0.08 < np.abs(r).mean() < 0.3 and np.abs(r).max() < 0.45    # each one weak
        assert np.mean(np.sign(r) == np.sign(expr.effects[links])) > 0.9    # with the stated sign
        score = x[:, links] @ np.sign(expr.effects[links])
        assert stats.pearsonr(score, expr.programs[:, p])[0] > 0.7          # together they carry the program


def test_interaction_program_is_a_product_of_two_modules_invisible_gene_by_gene(cohorts) -> None:
    expr = cohorts["interaction"]
    x = _measured(expr)
    for p in range(4):
        links = _links(expr, p)
        modules = np.unique(expr.clusters[links])
        assert len(modules) == 2 and np.array_equal(links, np.isin(expr.clusters, modules))
        assert np.isnan(expr.effects[links]).all()  # a product's sign depends on the other module
        y = expr.programs[:, p]
        assert np.abs(_r(x[:, links], y)).mean() < 0.1
        a, b = (x[:, expr.clusters == m].mean(1) for m in modules)
        assert stats.pearsonr(a * b, y)[0] > 0.6


def test_null_programs_are_independent_of_every_gene(cohorts) -> None:
    expr = cohorts["null"]
    x = _measured(expr)
    keep = ~np.isnan(x).any(0)
    assert not any(gp is not None for gp in expr.gene_program)
    p_values = np.concatenate([stats.pearsonr(x[:, keep], expr.programs[:, [p]], axis=0).pvalue for p in range(4)])
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    assert 0.02 < np.mean(p_values < 0.05) < 0.09


def test_mixed_has_one_program_of_each_kind(cohorts) -> None:
    expr = cohorts["mixed"]
    assert expr.kinds == ("drivers", "weak", "interaction", "aligned")
    counts = [_links(expr, p).sum() for p in range(4)]
    assert 3 <= counts[0] <= 8 and counts[1] == G // 5 and counts[3] == G // 20
    assert len(np.unique(expr.clusters[_links(expr, 2)])) == 2
    assert (expr.clusters[_links(expr, 3)] == -1).all()  # the aligned module is its own co-expression


def test_every_design_is_deterministic_per_seed_and_subjects_do_not_depend_on_cohort_size() -> None:
    for design in DESIGNS:
        a, b = simulate_expression(12, 9, 120, design=design), simulate_expression(12, 9, 120, design=design)
        assert genes_tsv(a) == genes_tsv(b) and np.array_equal(a.programs, b.programs)
        assert genes_tsv(a) != genes_tsv(simulate_expression(12, 10, 120, design=design))
        small = simulate_expression(5, 9, 120, design=design)
        both = ~np.isnan(small.counts) & ~np.isnan(a.counts[:, :5])  # an NA gene's forced NA cell moves with size
        assert np.array_equal(small.programs, a.programs[:5]) and np.array_equal(small.counts[both],
                                                                                a.counts[:, :5][both])


def test_written_cohort_is_byte_deterministic_and_states_its_truth(tmp_path) -> None:
    kw = dict(subjects=2, seed=3, genes=100, matrix=64, design="drivers")
    a, b = write_cohort(tmp_path / "a", **kw), write_cohort(tmp_path / "b", **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    truth = json.loads((a / "truth.json").read_text())
    expr = simulate_expression(2, 3, 100, design="drivers")
    assert truth["design"] == "drivers" and list(truth["program_kinds"].values()) == ["drivers"] * 4
    assert {g: p for g, p in truth["gene_programs"].items() if p} == {
        s: p for s, p in zip(expr.gene_symbols, expr.gene_program) if p}
    assert set(truth["gene_effects"]) == {s for s, p in zip(expr.gene_symbols, expr.gene_program) if p}
    assert "gene_loadings" not in truth
    for sid, programs in zip(expr.subject_ids, expr.programs):  # the nodules are drawn from these programs
        assert [truth["subjects"][sid]["programs"][p] for p in PROGRAMS] == pytest.approx(programs, abs=1e-6)
