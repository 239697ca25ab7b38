"""The genes of the dataset: NA policy over the subjects that made it, genes constant on the training
split dropped, log_zscore statistics fitted on the training split only (no leak from val/test)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from data_prep import gene_table as gt


@dataclass
class DatasetGenes:
    selection: gt.GeneSelection
    """The kept genes' values for the dataset's subjects, and what was dropped or imputed."""
    stats: dict[str, Any] | None = None
    """radiogen.genes.GeneStats.to_dict(), or None when they cannot be fitted (stats_note says why)."""
    stats_note: str = ""
    clipped: dict[str, Any] = field(default_factory=lambda: {"values": 0, "subjects": []})
    """Values outside the z-score clip after log_zscore, and the subjects they belong to."""
    warnings: list[str] = field(default_factory=list)


def dataset_genes(genes: gt.GeneTable, ok: list[str], train: list[str], na_policy: gt.NaPolicy) -> DatasetGenes:
    """Raises gt.GeneTableError when the NA policy leaves no usable gene."""
    from radiogen.genes import fit_gene_stats
    from radiogen.genes import clipped as gene_clipped

    train_rows = [ok.index(s) for s in train]
    selection = gt.select_genes(genes, ok, train, na_policy)
    constant = gt.drop_constant(selection, train_rows) if len(train) >= 2 else []
    out = DatasetGenes(selection)
    if constant:
        out.warnings.append(f"{len(constant)} gene{'s' if len(constant) > 1 else ''} constant on the training split "
                            f"dropped (listed in manifest.json genes.dropped): "
                            f"{', '.join(constant[:5])}{', ...' if len(constant) > 5 else ''}")
    try:
        fitted = fit_gene_stats(selection.values[train_rows], "log_zscore")
        if len(train) < 2:  # one subject has no spread: every gene would be "constant"
            raise ValueError("log_zscore needs at least 2 training subjects to estimate a spread, got 1")
        out.stats = fitted.to_dict()
        hit = gene_clipped(fitted, selection.values)
        out.clipped = {"values": int(hit.sum()), "subjects": [s for s, h in zip(ok, hit.any(1)) if h]}
        if out.clipped["values"]:
            out.warnings.append(f"{out.clipped['values']} gene values of {len(out.clipped['subjects'])} subjects lie "
                                f"outside +-{fitted.clip:g} after log_zscore and are clipped to it "
                                f"(manifest.json genes.clipped)")
    except ValueError as err:  # e.g. negative values: an already normalised table
        out.stats_note = str(err)
    return out
