"""The logged generator: the final EMA generator behind the dataset's gene normalisation.

A user feeds a new patient's RAW expression profile (the units of the dataset's genes.parquet, in
the order of `gene_names`); the model applies the stored normalisation (`radiogen.genes.apply_gene_stats`
semantics: log2(x + 1), z-score with the training split's statistics, clip to +-clip) and runs G_ema.

Two files per run, side by side in MLflow:
- `generator_ema_weights.pt`: weights only (`torch.load(path, weights_only=True)`): the EMA generator's
  state_dict, the experiment config, the gene names and the normalisation statistics.
- `generator_ema`: an MLflow pyfunc model logged as "model from code" (this file is copied into the
  model and run on load: no pickled objects) over that weights file, with a signature and an input
  example. Loading it needs only the core library `radiogen` installed:

      model = mlflow.pyfunc.load_model("runs:/<run id>/generator_ema")
      out = model.predict({"background": bg, "genes": raw}, params={"seed": 0})
      # bg (B, 1, S, S) float32 in [-1, 1]; raw (B, n_genes) float32 -> out["image"], out["mask"]
      # (and out["weight"] for generators with a fusion weight map), each (B, 1, S, S)
      G = model.unwrap_python_model().module  # torch: G(background, raw_genes, noise=None)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel
from torch import nn

from radiogen.config import ExperimentConfig, from_dict
from radiogen.genes import GeneStats
from radiogen.models import build_generator

WEIGHTS_FORMAT = "radiogen-generator"
WEIGHTS_FILE = "generator_ema_weights.pt"
WEIGHTS_VERSION = 1


class RawExpressionGenerator(nn.Module):
    """G(background, raw genes, noise=None): normalises the raw expression as prep's statistics say, then G."""

    def __init__(self, generator: nn.Module, gene_names: list[str], stats: GeneStats):
        super().__init__()
        if len(gene_names) != len(stats.mean):
            raise ValueError(f"{len(gene_names)} gene names but statistics of {len(stats.mean)} genes")
        self.generator, self.gene_names, self.stats = generator, list(gene_names), stats
        self.register_buffer("mean", torch.tensor(stats.mean, dtype=torch.float64), persistent=False)
        self.register_buffer("std", torch.tensor(stats.std, dtype=torch.float64), persistent=False)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """(..., n_genes) raw expression -> the generator's float32 input (radiogen.genes.apply_gene_stats)."""
        if raw.shape[-1] != len(self.gene_names):
            raise ValueError(f"gene vector has {raw.shape[-1]} genes; this model takes {len(self.gene_names)} "
                             f"(in the order of its gene_names)")
        if self.stats.method == "raw":
            return raw.float()
        x = raw.double()
        if bool((x < 0).any()):
            raise ValueError("log_zscore expects non-negative raw expression values (counts/FPKM)")
        z = (torch.log2(x + 1.0) - self.mean) / self.std
        return z.clamp(-self.stats.clip, self.stats.clip).float()

    def forward(self, background: torch.Tensor, genes: torch.Tensor, noise: torch.Tensor | None = None):
        return self.generator(background, self.normalise(genes).to(background.device), noise)


def save_weights(path: str | Path, generator: nn.Module, config: dict[str, Any], gene_names: list[str],
                 stats: GeneStats) -> Path:
    payload = {"format": WEIGHTS_FORMAT, "format_version": WEIGHTS_VERSION, "config": config,
               "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
               "gene_names": list(gene_names), "gene_stats": stats.to_dict()}
    torch.save(payload, Path(path))
    return Path(path)


def load_weights(path: str | Path) -> RawExpressionGenerator:
    """The generator of a weights-only file, in eval mode, behind its gene normalisation."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("format") != WEIGHTS_FORMAT or payload.get("format_version") != WEIGHTS_VERSION:
        raise ValueError(f"{path} is not a radiogen generator weights file of version {WEIGHTS_VERSION}")
    G = build_generator(from_dict(ExperimentConfig, payload["config"]))
    G.load_state_dict(payload["state_dict"])
    return RawExpressionGenerator(G, payload["gene_names"], GeneStats.from_dict(payload["gene_stats"])).eval()


def weights_config(path: str | Path) -> dict[str, Any]:
    """The experiment config stored in a weights-only file."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)["config"]


def predict_arrays(module: RawExpressionGenerator, background: np.ndarray, genes: np.ndarray,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """One forward pass with the noise drawn from `seed` (without touching the caller's RNG)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        out = module(torch.as_tensor(np.asarray(background, dtype=np.float32)),
                     torch.as_tensor(np.asarray(genes, dtype=np.float32)))
    arrays = {"image": out.image, "mask": out.mask, "weight": out.weight}
    return {k: v.float().cpu().numpy() for k, v in arrays.items() if v is not None}


# predict takes a dict of arrays, which MLflow's type-hint schemas cannot express (the signature does);
# MLflow warns about the missing hint at class creation and forces it on ("once"), so silence it here only.
with warnings.catch_warnings():
    warnings.showwarning = lambda *args, **kwargs: None

    class GeneratorModel(PythonModel):
        """pyfunc: {"background": (B, 1, S, S), "genes": raw (B, n_genes)} -> {"image", "mask"[, "weight"]}."""

        def load_context(self, context) -> None:
            self.module = load_weights(context.artifacts["weights"])

        def predict(self, context, model_input, params=None):
            return predict_arrays(self.module, model_input["background"], model_input["genes"],
                                  (params or {}).get("seed", 0))


def signature_and_example(module: RawExpressionGenerator, image_size: int):
    """A signature (batch dimension free, a `seed` param) and an input example that holds no patient's
    data: a blank background and the raw profile that normalises to the training mean."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    mean = np.asarray(module.stats.mean, dtype=np.float64)
    genes = (np.exp2(mean) - 1.0) if module.stats.method == "log_zscore" else mean
    example = {"background": np.zeros((1, 1, image_size, image_size), np.float32),
               "genes": genes.astype(np.float32)[None]}
    outputs = predict_arrays(module, example["background"], example["genes"])
    f32, image = np.dtype(np.float32), (-1, 1, image_size, image_size)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(f32, image, "background"), TensorSpec(f32, (-1, len(module.gene_names)), "genes")]),
        outputs=Schema([TensorSpec(f32, image, k) for k in outputs]),
        params=ParamSchema([ParamSpec("seed", "long", 0)]))
    return signature, example


mlflow.models.set_model(GeneratorModel())  # the model object when MLflow loads this file as model code
