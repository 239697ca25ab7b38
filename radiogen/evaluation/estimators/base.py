"""The one interface of every radiogenomic map estimator: what it reads (MapInputs) and what it returns (MapEstimate).

An estimator is fitted on the training subjects only: their genes (normalised as the generator reads them)
and their real phenotype (radiogen.evaluation.phenotype proxies, one column per program). A model-based
estimator also gets held-out subjects, used for nothing but its calibration (the holdout randomisation test,
estimators.holdout), and the synthesis estimators a `Synthesizer`: the generator over fixed backgrounds and
noise. No estimator is refitted on held-out subjects, so every map is scored the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from radiogen.train_step import local_rng

from ..phenotype import PROGRAMS, empty_fraction, proxies

LEVELS = (0.05, 0.10)
"""Nominal FDR levels at which every estimator that reports p-values makes calls."""


@dataclass
class MapInputs:
    """What an estimator may use."""

    genes: np.ndarray                   # (N, G) training subjects, normalised as the generator reads them
    phenotype: np.ndarray               # (N, P) their real phenotype proxies, PROGRAMS order
    gene_names: list[str]
    heldout_genes: np.ndarray | None = None      # (M, G) subjects for calibration only (None: no p-values)
    heldout_phenotype: np.ndarray | None = None  # (M, P)
    synthesizer: "Synthesizer | None" = None
    seed: int = 0

    def __post_init__(self) -> None:
        n, g = self.genes.shape
        if self.phenotype.shape != (n, len(PROGRAMS)):
            raise ValueError(f"phenotype must be ({n}, {len(PROGRAMS)}) (subjects x {list(PROGRAMS)}), "
                             f"got {self.phenotype.shape}")
        if len(self.gene_names) != g:
            raise ValueError(f"{len(self.gene_names)} gene names for {g} gene columns")
        if not (np.isfinite(self.genes).all() and np.isfinite(self.phenotype).all()):
            raise ValueError("genes and phenotype must be finite: leave out subjects without a measurable nodule")

    @property
    def has_holdout(self) -> bool:
        return self.heldout_genes is not None and len(self.heldout_genes) >= 3

    def gene_sd(self) -> np.ndarray:
        """(G,) the +1 SD shift of each gene (training subjects; 1 where a gene is constant)."""
        sd = self.genes.std(axis=0)
        return np.where(sd > 1e-12, sd, 1.0)

    def phenotype_sd(self) -> np.ndarray:
        """(P,) real phenotype SD on the training subjects: effects are in these units."""
        sd = self.phenotype.std(axis=0)
        return np.where(sd > 1e-12, sd, 1.0)

    def readout(self, n: int) -> np.ndarray:
        """Indices of at most n training subjects (seeded, sorted) an intervention is averaged over."""
        N = len(self.genes)
        return np.arange(N) if N <= n else np.sort(np.random.default_rng(self.seed).choice(N, n, replace=False))


@dataclass
class MapEstimate:
    """A gene x program map."""

    method: str
    scores: np.ndarray                           # (G, P) >= 0: evidence of a link, larger is stronger
    effects: np.ndarray | None = None            # (G, P) signed effect in phenotype SDs per +1 SD of the gene
    pvalues: np.ndarray | None = None            # (G, P) calibrated p-values (None: the method has none)
    calls: dict[float, np.ndarray] | None = None  # nominal FDR level -> (G, P) bool links called at it
    undefined: str | None = None                 # why the map means nothing (e.g. empty synthetic masks)
    note: str = ""                               # how its p-values / calls were made
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.calls is None and self.pvalues is not None:
            self.calls = {q: bh_calls(self.pvalues, q) for q in LEVELS}


def bh_calls(pvalues: np.ndarray, q: float) -> np.ndarray:
    """(G, P) Benjamini-Hochberg calls at level q over all cells of the map at once (one family, so on a cohort
    where nothing is linked the chance of any call, the family-wise error, is at most q); NaN is never called."""
    p = np.where(np.isfinite(pvalues), pvalues, 1.0)
    return (stats.false_discovery_control(p.ravel(), method="bh") <= q).reshape(p.shape)


@contextmanager
def evaluation_mode(module: torch.nn.Module) -> Iterator[None]:
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


@dataclass
class Synthesizer:
    """A generator G drawing genes over K fixed backgrounds with fixed noise: genes -> mean phenotype proxies.

    Every call draws with the same seeded noise (its own RNG stream, the global one untouched), so two calls
    with the same batch layout differ only by their genes: an intervention's difference is the genes' effect.
    """

    G: torch.nn.Module
    backgrounds: torch.Tensor   # (K, 1, H, W) in [-1, 1]
    seed: int = 0
    device: str = "cpu"
    batch: int = 512            # images per forward pass

    def __post_init__(self) -> None:
        bg = torch.as_tensor(self.backgrounds, dtype=torch.float32)
        self.backgrounds = (bg[:, None] if bg.ndim == 3 else bg).to(self.device)
        noise_dim = int(getattr(getattr(self.G, "cfg", None), "noise_dim", 0) or 0)
        with local_rng(self.seed, torch.device(self.device)):
            self.noise = torch.randn(len(self.backgrounds), noise_dim, device=self.device) if noise_dim else None

    @property
    def K(self) -> int:
        return len(self.backgrounds)

    def first(self, k: int) -> "Synthesizer":
        """The same generator over its first k backgrounds (and their noise): a cheaper read-out."""
        out = Synthesizer(self.G, self.backgrounds[:k], self.seed, self.device, self.batch)
        out.noise = None if self.noise is None else self.noise[:k]
        return out

    def draw(self, genes: torch.Tensor):
        """G's output for every (subject, background) pair, rows subject-major: (B * K, 1, H, W)."""
        B, K = len(genes), self.K
        with local_rng(self.seed + 1, torch.device(self.device)):  # e.g. MC-GAN's conditioning-augmentation draw
            return self.G(self.backgrounds.repeat(B, 1, 1, 1), genes.repeat_interleave(K, dim=0),
                          None if self.noise is None else self.noise.repeat(B, 1))

    def phenotype(self, genes: torch.Tensor) -> torch.Tensor:
        """(B, P) proxies of the B subjects' nodules, averaged over the K backgrounds; differentiable in genes."""
        out = self.draw(genes)
        return proxies(out.image, out.mask).view(len(genes), self.K, -1).mean(dim=1)

    @torch.no_grad()
    def phenotype_np(self, genes: np.ndarray) -> np.ndarray:
        """`phenotype` of (B, G) numpy genes in chunks of `batch` images, as float64 (B, P)."""
        g = torch.as_tensor(np.asarray(genes), dtype=torch.float32, device=self.device)
        step = max(1, self.batch // self.K)
        with evaluation_mode(self.G):
            return torch.cat([self.phenotype(c) for c in g.split(step)]).double().cpu().numpy()

    @torch.no_grad()
    def empty_fraction(self, genes: np.ndarray) -> float:
        """Fraction of the subjects' synthetic masks that are empty (phenotype.EMPTY_PIXELS)."""
        g = torch.as_tensor(np.asarray(genes), dtype=torch.float32, device=self.device)
        step = max(1, self.batch // self.K)
        with evaluation_mode(self.G):
            masks = torch.cat([self.draw(c).mask.float().cpu() for c in g.split(step)])
        return empty_fraction(masks[:, 0].numpy())


EMPTY_LIMIT = 0.5
"""A synthesis map is undefined when more than this fraction of the synthetic masks is empty: its phenotype
then measures the few pixels G draws by chance, and an AUROC over it is noise."""


def undefined_reason(synth: Synthesizer, genes: np.ndarray) -> str | None:
    empty = synth.empty_fraction(genes)
    if empty > EMPTY_LIMIT:
        return (f"undefined: {empty:.0%} of the synthetic masks are empty (< 5 px); a map read off them measures "
                f"noise")
    return None
