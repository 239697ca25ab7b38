"""Gene mapping network phi (paper Sec. 2.1): two fully connected layers from raw genes to the gene code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeneMapping(nn.Module):
    """phi(g): (B, n_genes) -> (B, code_dim).

    Args:
        n_genes: length of the gene-expression vector.
        hidden: width of the hidden layer (paper/authors: 512).
        code_dim: size of the gene code (paper Fig. 4: 128).
        dropout: probability of zeroing each input gene in training (0 = none, the paper).
        noise: std of Gaussian noise added to each input gene in training (0 = none, the paper).
    """

    def __init__(self, n_genes: int, hidden: int, code_dim: int, dropout: float = 0.0, noise: float = 0.0):
        super().__init__()
        # Input noise and dropout (training only) make the code rely on many genes of a module at once rather than
        # on the few that identify a training subject. Functional, so the weights' names match the paper's model.
        self.noise, self.dropout = noise, dropout
        self.net = nn.Sequential(nn.Linear(n_genes, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, code_dim))

    def forward(self, genes: torch.Tensor) -> torch.Tensor:
        if self.training and self.noise > 0:
            genes = genes + self.noise * torch.randn_like(genes)
        if self.training and self.dropout > 0:
            genes = F.dropout(genes, self.dropout)
        return self.net(genes)
