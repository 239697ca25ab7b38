"""The gene side of the synthetic cohort: programs, gene counts and the TRUE gene -> program links, per design.

Each subject has four programs (PROGRAMS, about N(0, 1)); data_prep.phantom draws its nodules from them. The
design says how the genes relate to the programs, one kind of truth per program (DESIGNS):

- aligned      program -> genes: each program drives a co-expressed module of max(4, G // 20) genes (log-mean
               loading 0.5-1); the truth is the module. Any per-gene screen finds it.
- weak         program -> genes: max(8, G // 5) genes per program with small loadings (+-0.1-0.3), hidden among
               co-expression clusters and nuisance factors; the truth is those genes.
- drivers      genes -> program: the program is a noisy weighted sum (signed weights 0.5-1, 30% noise variance)
               of 3-8 driver genes, each from a different co-expression cluster, so every driver has
               co-expressed passengers that correlate with the program but do not cause it. The truth is the
               drivers only.
- interaction  genes -> program: the program is the product of two co-expression modules' mean expression
               (plus 30% noise); each module alone is uncorrelated with it. The truth is both modules' genes.
- null         the programs are independent of every gene: every discovery is false.
- mixed        one program of each kind (size: drivers, density: weak, irregularity: interaction, texture:
               aligned), so one cohort shows where each method wins. The generator follows size and density
               best, so the two hard kinds sit there. The default.

Counts: log-mean = baseline + latent deviation, counts negative binomial (gamma-Poisson), a fraction of genes
with NA cells. In the genes -> program kinds the program is a function of the *measured* expression
(log(count + 1), centred and scaled by the gene model), so a program is conditionally independent of every
non-causal gene given the causal ones: the truth is exactly the set of genes a conditional test should find.
Outside `aligned`, NA cells fall on non-causal genes only, so preparation's NA rule keeps every true link.

All randomness comes from one SeedSequence(seed) (`stream`): child 0 draws the gene model, child (1 + k, 0)
subject k's programs and counts, so subject k is the same whatever the cohort size. The `aligned` design keeps
the draws of the original cohort generator, byte for byte.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from .constants import DEFAULT_DESIGN, DEFAULT_GENES, DEFAULT_NA_FRACTION, DESIGNS

PROGRAMS: tuple[str, ...] = ("size", "density", "irregularity", "texture")
KINDS: tuple[str, ...] = ("aligned", "weak", "drivers", "interaction", "null")
MIN_GENES = 40            # the aligned design: 4 modules of 4 genes plus nuisance genes
MIN_GENES_STRUCTURED = 100  # the other designs: enough co-expression clusters for 4 x 3 drivers
NUISANCE_FACTORS = 6
CLUSTERED_FRACTION = 0.7  # genes in co-expression clusters (structured designs); the rest carry nuisance only
PROGRAM_NOISE = 0.3       # variance fraction of a genes -> program program that no gene explains
DRIVERS = (3, 8)          # drivers per program (inclusive)


@dataclass
class Expression:
    """The gene side of a cohort: programs and counts per subject, and which gene causes which program."""

    subject_ids: list[str]
    programs: np.ndarray            # (N, P) programs, about standard normal
    gene_symbols: list[str]
    gene_program: list[str | None]  # per gene: the program it is truly linked to, or None
    effects: np.ndarray             # (G,) signed effect of a linked gene (loading or driver weight); NaN when
    #                                 the sign is undefined (interaction) or the gene is not linked
    counts: np.ndarray              # (G, N) float64 counts, NaN where NA
    design: str = "aligned"
    clusters: np.ndarray | None = None  # (G,) co-expression cluster of each gene, -1 for none (structured designs)

    @property
    def kinds(self) -> tuple[str, ...]:
        return DESIGNS[self.design]


def subject_id(index: int) -> str:
    return f"SYN-{index + 1:04d}"


def stream(seed: int, *key: int) -> np.random.Generator:
    """Independent random stream `key` of a cohort: (0,) the gene model; (1 + k, 0) subject k's programs
    and counts, (1 + k, 1) its anatomy and nodules, (1 + k, 2) its DICOM study details."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def subject_programs(seed: int, index: int) -> np.ndarray:
    """The programs (len(PROGRAMS),) of subject `index` in the aligned design: the first draws of its stream."""
    return stream(seed, 1 + index, 0).standard_normal(len(PROGRAMS))


def check_design(design: str, genes: int) -> None:
    if design not in DESIGNS:
        raise ValueError(f"--design must be one of {', '.join(DESIGNS)}, got {design!r}")
    least = MIN_GENES if design == "aligned" else MIN_GENES_STRUCTURED
    if genes < least:
        raise ValueError(f"--genes must be at least {least} for design {design} (co-expression clusters and "
                         f"program genes), got {genes}")


def simulate_expression(subjects: int, seed: int, genes: int = DEFAULT_GENES,
                        na_fraction: float = DEFAULT_NA_FRACTION, design: str = DEFAULT_DESIGN) -> Expression:
    """Programs and gene counts of a cohort, without images (the first draws of each subject's stream)."""
    check_design(design, genes)
    if design == "aligned":
        return _aligned(subjects, seed, genes, na_fraction)
    return _structured(subjects, seed, genes, na_fraction, design)


def _aligned(subjects: int, seed: int, genes: int, na_fraction: float) -> Expression:
    """The original cohort's gene model: a sparse factor model, each program loading a module of genes."""
    rng = stream(seed, 0)
    n_prog = len(PROGRAMS)
    module = max(4, genes // 20)
    order = rng.permutation(genes)  # modules are scattered over the table, not blocks of rows
    gene_program: list[str | None] = [None] * genes
    load_prog = np.zeros((genes, n_prog))
    for p in range(n_prog):
        idx = order[p * module:(p + 1) * module]
        load_prog[idx, p] = rng.uniform(0.5, 1.0, module)
        for g in idx:
            gene_program[g] = PROGRAMS[p]
    is_module = load_prog.any(axis=1)
    # Every gene carries 1-2 nuisance factors (weaker on module genes), so the table has low-rank
    # structure that is not the programs and no gene is a clean readout of one program.
    load_nuis = np.zeros((genes, NUISANCE_FACTORS))
    for g in range(genes):
        k = rng.choice(NUISANCE_FACTORS, size=rng.integers(1, 3), replace=False)
        load_nuis[g, k] = rng.normal(0.0, 0.25 if is_module[g] else 0.6, len(k))
    baseline = rng.normal(math.log(80.0), 1.2, genes)
    dispersion = rng.uniform(0.05, 0.3, genes)
    # NA genes: the same fraction from every module and from the nuisance genes, so dropping genes
    # with any NA (the paper's rule) keeps most of each module.
    na_genes = []
    for p in range(n_prog):
        na_genes += list(order[p * module:(p + 1) * module][:int(round(na_fraction * module))])
    rest = order[n_prog * module:]
    na_genes += list(rest[:int(round(na_fraction * len(rest)))])
    na_rate = np.zeros(genes)
    na_rate[na_genes] = rng.uniform(0.03, 0.25, len(na_genes))

    programs = np.zeros((subjects, n_prog))
    counts = np.zeros((genes, subjects))
    for j in range(subjects):
        srng = stream(seed, 1 + j, 0)
        z = srng.standard_normal(n_prog)  # = subject_programs(seed, j)
        h = srng.standard_normal(NUISANCE_FACTORS)
        library = srng.lognormal(0.0, 0.25)
        mean = library * np.exp(baseline + load_prog @ z + load_nuis @ h)
        shape = 1.0 / dispersion
        x = srng.poisson(srng.gamma(shape, mean / shape)).astype(np.float64)
        x[srng.random(genes) < na_rate] = np.nan
        programs[j], counts[:, j] = z, x
    _ensure_na(counts, na_genes)
    effects = np.where(is_module, load_prog.sum(axis=1), np.nan)
    return Expression([subject_id(j) for j in range(subjects)], programs, _symbols(genes), gene_program, effects,
                      counts, "aligned")


@dataclass
class _Model:
    """The structured designs' gene model (stream 0): clusters, loadings, causal sets and their weights."""

    cluster: np.ndarray     # (G,) cluster id, -1 = none
    within: np.ndarray      # (G,) loading on the cluster factor (0 outside clusters)
    scale: np.ndarray       # (G,) SD of the gene's own latent deviation
    load_nuis: np.ndarray   # (G, NUISANCE_FACTORS)
    load_prog: np.ndarray   # (G, P) program -> gene loadings (aligned and weak kinds)
    baseline: np.ndarray
    dispersion: np.ndarray
    drivers: dict[int, tuple[np.ndarray, np.ndarray]]  # program -> (driver genes, signed weights)
    modules: dict[int, tuple[np.ndarray, np.ndarray]]  # program -> (module A genes, module B genes)
    gene_program: list[str | None]
    effects: np.ndarray
    na_rate: np.ndarray
    na_genes: list[int]

    def measured_sd(self) -> np.ndarray:
        """Approximate SD of log(count + 1) across subjects: latent deviation plus gamma-Poisson and library noise."""
        latent = self.scale ** 2 + (self.load_nuis ** 2).sum(1) + (self.load_prog ** 2).sum(1)
        return np.sqrt(latent + self.dispersion + np.exp(-self.baseline) + 0.25 ** 2)

    def correlation(self, idx: np.ndarray) -> np.ndarray:
        """Model correlation of the measured expression of genes idx (cluster and nuisance factors)."""
        shared = np.where(self.cluster[idx] >= 0, self.scale[idx] * self.within[idx], 0.0)
        same = (self.cluster[idx][:, None] == self.cluster[idx][None]) & (self.cluster[idx][:, None] >= 0)
        cov = np.outer(shared, shared) * same + self.load_nuis[idx] @ self.load_nuis[idx].T
        sd = self.measured_sd()[idx]
        r = cov / np.outer(sd, sd)
        np.fill_diagonal(r, 1.0)
        return r


def _structured(subjects: int, seed: int, genes: int, na_fraction: float, design: str) -> Expression:
    m = _gene_model(stream(seed, 0), genes, na_fraction, DESIGNS[design])
    n_clusters = int(m.cluster.max()) + 1
    sd = m.measured_sd()
    bias = 0.5 * (m.dispersion + np.exp(-m.baseline))  # E[log count] below log-mean (gamma-Poisson, Jensen)
    drive_norm = {p: math.sqrt(float(w @ m.correlation(idx) @ w)) for p, (idx, w) in m.drivers.items()}
    module_sd = {p: [math.sqrt(float(m.correlation(ab).mean())) for ab in pair] for p, pair in m.modules.items()}
    programs = np.zeros((subjects, len(PROGRAMS)))
    counts = np.zeros((genes, subjects))
    shape = 1.0 / m.dispersion
    for j in range(subjects):
        srng = stream(seed, 1 + j, 0)
        z = srng.standard_normal(len(PROGRAMS))     # programs of the program -> genes and null kinds
        f = srng.standard_normal(n_clusters)
        h = srng.standard_normal(NUISANCE_FACTORS)
        u = srng.standard_normal(genes)
        noise = srng.standard_normal(len(PROGRAMS))
        library = srng.lognormal(0.0, 0.25)
        factor = np.where(m.cluster >= 0, f[np.maximum(m.cluster, 0)], 0.0)
        latent = m.scale * (m.within * factor + np.sqrt(1 - m.within ** 2) * u) + m.load_nuis @ h + m.load_prog @ z
        x = srng.poisson(srng.gamma(shape, library * np.exp(m.baseline + latent) / shape)).astype(np.float64)
        measured = (np.log(x + 1.0) - m.baseline + bias) / sd  # about N(0, 1) per gene, before NA
        for p, (idx, w) in m.drivers.items():
            z[p] = math.sqrt(1 - PROGRAM_NOISE) * float(w @ measured[idx]) / drive_norm[p]
        for p, (a, b) in m.modules.items():
            act_a, act_b = (measured[g].mean() / s for g, s in zip((a, b), module_sd[p]))
            z[p] = math.sqrt(1 - PROGRAM_NOISE) * act_a * act_b
        for p in (*m.drivers, *m.modules):
            z[p] += math.sqrt(PROGRAM_NOISE) * noise[p]
        x[srng.random(genes) < m.na_rate] = np.nan
        programs[j], counts[:, j] = z, x
    _ensure_na(counts, m.na_genes)
    return Expression([subject_id(j) for j in range(subjects)], programs, _symbols(genes), m.gene_program,
                      m.effects, counts, design, m.cluster)


def _gene_model(rng: np.random.Generator, genes: int, na_fraction: float, kinds: tuple[str, ...]) -> _Model:
    """Co-expression clusters for every gene table, then each program's causal genes by its kind.

    Causal sets are allocated kind by kind in a fixed order (drivers, interaction, aligned, weak), so a
    program's truth depends on its kind and the seed, not on its position.
    """
    order = rng.permutation(genes)
    size = max(3, genes // 50)
    n_clusters = int(CLUSTERED_FRACTION * genes) // size
    cluster = np.full(genes, -1)
    for c in range(n_clusters):
        cluster[order[c * size:(c + 1) * size]] = c
    # Tight clusters (measured within-cluster r about 0.4-0.7), so a driver's passengers follow it closely.
    within = np.where(cluster >= 0, rng.uniform(0.75, 0.95, genes), 0.0)
    scale = rng.uniform(0.8, 1.2, genes)
    load_nuis = np.zeros((genes, NUISANCE_FACTORS))
    for g in range(genes):
        k = rng.choice(NUISANCE_FACTORS, size=rng.integers(1, 3), replace=False)
        load_nuis[g, k] = rng.normal(0.0, 0.3, len(k))
    baseline = rng.normal(math.log(80.0), 1.2, genes)
    dispersion = rng.uniform(0.05, 0.3, genes)

    n_prog = len(PROGRAMS)
    load_prog = np.zeros((genes, n_prog))
    gene_program: list[str | None] = [None] * genes
    effects = np.full(genes, np.nan)
    taken = np.zeros(genes, dtype=bool)               # linked, or a passenger of a causal cluster
    free_clusters = list(rng.permutation(n_clusters))
    drivers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    modules: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def link(idx, p: int, effect) -> None:
        for g, e in zip(idx, np.broadcast_to(effect, len(idx))):
            gene_program[g], effects[g] = PROGRAMS[p], e

    for p in [p for p, k in enumerate(kinds) if k == "drivers"]:
        # Leave two clusters per interaction program and the fewest drivers for each later drivers program.
        later = sum(k == "drivers" for k in kinds[p + 1:])
        spare = len(free_clusters) - 2 * kinds.count("interaction") - DRIVERS[0] * later
        n = min(int(rng.integers(DRIVERS[0], DRIVERS[1] + 1)), spare)
        picks = [free_clusters.pop() for _ in range(n)]
        idx = np.array([rng.choice(np.flatnonzero(cluster == c)) for c in picks])
        w = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.0, n)
        drivers[p] = (idx, w)
        link(idx, p, w)
        taken |= np.isin(cluster, picks)
    for p in [p for p, k in enumerate(kinds) if k == "interaction"]:
        pair = tuple(np.flatnonzero(cluster == free_clusters.pop()) for _ in range(2))
        modules[p] = pair  # type: ignore[assignment]
        link(np.concatenate(pair), p, np.nan)  # the sign of a product's effect depends on the other module
        taken[np.concatenate(pair)] = True
    for p in [p for p, k in enumerate(kinds) if k == "aligned"]:
        module = max(4, genes // 20)
        idx = rng.permutation(np.flatnonzero((cluster < 0) & ~taken))[:module]
        load_prog[idx, p] = rng.uniform(0.5, 1.0, len(idx))
        link(idx, p, load_prog[idx, p])
        taken[idx] = True
    for p in [p for p, k in enumerate(kinds) if k == "weak"]:
        idx = rng.permutation(np.flatnonzero(~taken))[:max(8, genes // 5)]
        load_prog[idx, p] = rng.choice([-1.0, 1.0], len(idx)) * rng.uniform(0.1, 0.3, len(idx))
        link(idx, p, load_prog[idx, p])
        taken[idx] = True
    # NA genes among the genes that cause nothing, so dropping genes with any NA keeps every link.
    unlinked = rng.permutation([g for g in range(genes) if gene_program[g] is None])
    na_genes = [int(g) for g in unlinked[:int(round(na_fraction * genes))]]
    na_rate = np.zeros(genes)
    na_rate[na_genes] = rng.uniform(0.03, 0.25, len(na_genes))
    return _Model(cluster, within, scale, load_nuis, load_prog, baseline, dispersion, drivers, modules, gene_program,
                  effects, na_rate, na_genes)


def _ensure_na(counts: np.ndarray, na_genes: list[int]) -> None:
    """Every NA gene shows at least one NA, whatever the cohort size."""
    subjects = counts.shape[1]
    for g in na_genes:
        if not np.isnan(counts[g]).any():
            counts[g, g % subjects] = np.nan


def _symbols(genes: int) -> list[str]:
    return [f"GENE{g + 1:05d}" for g in range(genes)]


def genes_tsv(expr: Expression) -> str:
    """GEO layout: header gene_symbol + subject ids, one row per gene, integers, literal NA."""
    buf = io.StringIO()
    buf.write("\t".join(["gene_symbol", *expr.subject_ids]) + "\n")
    for g, symbol in enumerate(expr.gene_symbols):
        cells = ["NA" if np.isnan(v) else str(int(v)) for v in expr.counts[g]]
        buf.write("\t".join([symbol, *cells]) + "\n")
    return buf.getvalue()
