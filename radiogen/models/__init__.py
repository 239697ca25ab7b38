"""Models of the paper: the multi-conditional generator, the MC-GAN baseline and the three-head discriminator."""

from __future__ import annotations

from torch import nn

from ..config import ConfigError, ExperimentConfig
from .discriminator import Discriminator, DiscriminatorOutput
from .generator import GeneratorOutput, MultiConditionalGenerator
from .mcgan import MCGANGenerator

# `generator.arch` in the config picks the generator.
GENERATORS = {"proposed": MultiConditionalGenerator, "mcgan": MCGANGenerator}


def build_generator(cfg: ExperimentConfig) -> nn.Module:
    if cfg.data.n_genes is None:
        raise ConfigError("data.n_genes is null (= taken from a prepared dataset); without a dataset give a number, "
                         "e.g. --set data.n_genes=64")
    return GENERATORS[cfg.generator.arch](cfg.generator, cfg.data.image_size, cfg.data.n_genes)


def build_discriminator(cfg: ExperimentConfig) -> Discriminator:
    aux = cfg.data.n_genes if cfg.loss.aux_genes > 0 else 0
    if aux is None:
        raise ConfigError("loss.aux_genes > 0 needs data.n_genes (the auxiliary head predicts the gene vector); "
                          "give a number or train on a prepared dataset")
    return Discriminator(cfg.discriminator, cfg.generator.code_dim, tuple(cfg.loss.head_weights), aux_genes=aux)


__all__ = ["GENERATORS", "Discriminator", "DiscriminatorOutput", "GeneratorOutput", "MCGANGenerator",
           "MultiConditionalGenerator", "build_discriminator", "build_generator"]
