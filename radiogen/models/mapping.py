"""Gene mapping network phi (paper Sec. 2.1): two fully connected layers from raw genes to the gene code."""

from __future__ import annotations

import torch
from torch import nn


class GeneMapping(nn.Module):
    """phi(g): (B, n_genes) -> (B, code_dim).

    Args:
        n_genes: length of the gene-expression vector.
        hidden: width of the hidden layer (paper/authors: 512).
        code_dim: size of the gene code (paper Fig. 4: 128).
    """

    def __init__(self, n_genes: int, hidden: int, code_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_genes, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, code_dim))

    def forward(self, genes: torch.Tensor) -> torch.Tensor:
        return self.net(genes)
