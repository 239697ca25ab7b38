"""`synthesis-gradient`: attributions of the differentiable phenotype proxies to the genes, through G and phi.

Captum's IntegratedGradients from the training subjects' mean gene vector to each read-out subject, per
program proxy (phenotype.proxies of the nodules drawn over the fixed backgrounds): the score of gene g is the
mean |attribution| over subjects, in units of the real phenotype's SD; the signed effect is the mean local
slope (Captum's Saliency, not absolute) times the gene's SD, i.e. a first-order +1 SD intervention.

The split (proposed generator only: its code is phi(g)): gene -> code is phi's Jacobian averaged over the
read-out subjects, |d code_c / d gene_g| (C, G); code -> phenotype is IntegratedGradients of each proxy with
respect to the code, fed into G in place of phi(g) (P, C). Their product approximates the gene attributions
(chain rule), which says whether a map is carried by phi's wiring or by how G draws a code.

p-values: none of its own. The holdout randomisation test is a test of the generator, not of how its map is
read, so the calls of `synthesis-intervention` stand for both.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency

from .base import MapEstimate, MapInputs, Synthesizer, evaluation_mode, undefined_reason
from .intervention import READOUT_SUBJECTS


def _code_forward(synth: Synthesizer):
    """codes (B, C) -> (B, P) proxies, G drawing with the given code in place of phi(genes)."""
    G, K = synth.G, synth.K

    def forward(codes: torch.Tensor) -> torch.Tensor:
        fed = codes.repeat_interleave(K, dim=0)
        handle = G.mapping.register_forward_hook(lambda module, args, output: fed)
        try:
            dummy = torch.zeros(len(codes), G.mapping.net[0].in_features, device=codes.device)
            return synth.phenotype(dummy)
        finally:
            handle.remove()
    return forward


def estimate(inputs: MapInputs, *, readout: int = READOUT_SUBJECTS, n_steps: int = 16) -> MapEstimate:
    synth = inputs.synthesizer
    if synth is None:
        raise ValueError("synthesis-gradient needs a generator (MapInputs.synthesizer)")
    x_np = inputs.genes[inputs.readout(readout)]
    x = torch.as_tensor(x_np, dtype=torch.float32, device=synth.device)
    base = torch.as_tensor(inputs.genes.mean(axis=0), dtype=torch.float32, device=synth.device).expand_as(x)
    y_sd, g_sd = inputs.phenotype_sd(), inputs.gene_sd()
    P = len(y_sd)
    scores, effects = np.zeros((x.shape[1], P)), np.zeros((x.shape[1], P))
    extras: dict[str, np.ndarray] = {}
    rows = max(1, synth.batch // synth.K)
    with evaluation_mode(synth.G):
        ig, saliency = IntegratedGradients(synth.phenotype), Saliency(synth.phenotype)
        x.requires_grad_(True)
        for p in range(P):
            attr = ig.attribute(x, baselines=base, target=p, n_steps=n_steps, internal_batch_size=rows)
            slope = saliency.attribute(x, target=p, abs=False)
            scores[:, p] = attr.abs().mean(dim=0).detach().cpu().numpy() / y_sd[p]
            effects[:, p] = slope.mean(dim=0).detach().cpu().numpy() * g_sd / y_sd[p]
        if hasattr(synth.G, "mapping"):
            jac = torch.func.vmap(torch.func.jacrev(synth.G.gene_code))(x.detach()[:, None])  # (S, 1, C, 1, G)
            extras["gene_to_code"] = jac.abs().mean(dim=0).reshape(jac.shape[2], -1).detach().cpu().numpy()
            codes = synth.G.gene_code(x.detach()).detach()
            code_ig = IntegratedGradients(_code_forward(synth))
            code_base = synth.G.gene_code(base).detach()
            extras["code_to_phenotype"] = np.stack([
                code_ig.attribute(codes, baselines=code_base, target=p, n_steps=n_steps,
                                  internal_batch_size=rows).abs().mean(dim=0).detach().cpu().numpy() / y_sd[p]
                for p in range(P)])                                                       # (P, C)
    return MapEstimate("synthesis-gradient", scores, effects=effects, undefined=undefined_reason(synth, x_np),
                       extras=extras, note=f"IntegratedGradients ({n_steps} steps) over {len(x_np)} subjects x "
                                           f"{synth.K} backgrounds; no p-values of its own (see intervention)")
