"""Gene normalisation: constant genes are found for both normalisations, z-scores are bounded."""

from __future__ import annotations

import numpy as np
import pytest

from radiogen.genes import Z_CLIP, GeneStats, apply_gene_stats, clipped, constant_genes, fit_gene_stats


def test_constant_genes_for_raw_and_log_values() -> None:
    train = np.array([[0.0, 5.0, -1.2, 3.0, 1e6],
                      [0.0, 5.0, 0.4, 4.0, 1e6 + 1],
                      [0.0, 5.0, 2.0, 3.0, 1e6]])
    # 0 everywhere and 5 everywhere are constant; z-scored (negative) values are judged on raw values
    # only; a huge count that moves by 1 varies in raw values but not in log2(x + 1).
    assert constant_genes(train).tolist() == [True, True, False, False, True]
    with pytest.raises(ValueError, match="at least 2 subjects"):
        constant_genes(train[:1])


def test_zscores_are_clipped() -> None:
    # The case seen in practice: a gene 0 in all 16 training subjects, 0.39 in a test subject.
    rng = np.random.default_rng(0)
    train = np.column_stack([np.zeros(16), rng.poisson(50, 16)]).astype(float)
    stats = fit_gene_stats(train, "log_zscore")
    test = np.array([[0.39, 50.0]])
    z = apply_gene_stats(stats, test)
    assert z[0, 0] == Z_CLIP and abs(z[0, 1]) < Z_CLIP
    assert clipped(stats, test).tolist() == [[True, False]]
    assert np.abs(apply_gene_stats(stats, train)).max() <= Z_CLIP
    assert not clipped(fit_gene_stats(train, "raw"), test).any()


def test_stats_dict_round_trip_and_old_dicts() -> None:
    stats = fit_gene_stats(np.array([[1.0, 2.0], [3.0, 5.0]]), "log_zscore")
    assert GeneStats.from_dict(stats.to_dict()) == stats and stats.to_dict()["clip"] == Z_CLIP
    old = {k: v for k, v in stats.to_dict().items() if k != "clip"}  # written before the clip existed
    assert GeneStats.from_dict(old).clip == Z_CLIP
