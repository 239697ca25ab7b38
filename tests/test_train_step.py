"""A short single-process training on a tiny fixed batch learns and stays finite."""

from __future__ import annotations

import pytest
import torch

from radiogen.toy import toy_batch
from radiogen.train_step import build_training, train_step

from .helpers import tiny


@pytest.mark.parametrize("arch", ["proposed", "mcgan"])
def test_tiny_training_lowers_background_l1_and_stays_finite(arch):
    cfg = tiny(generator={"arch": arch})
    torch.manual_seed(0)
    state = build_training(cfg)
    ema_start = [p.clone() for p in state.G_ema.parameters()]
    batch, _ = toy_batch(8, cfg.data.image_size, cfg.data.n_genes, seed=0)
    history = [train_step(state, batch) for _ in range(150)]  # L1 at 0.15x by then
    for metrics in history:
        assert all(torch.isfinite(v) for v in metrics.values())
    l1 = torch.stack([m["loss/G/l1"] for m in history])
    assert l1[-20:].mean() < 0.4 * l1[:5].mean(), f"background L1 {l1[:5].mean():.4f} -> {l1[-20:].mean():.4f}"
    assert state.step == 150
    # Both players' gradients were computed every step, and the EMA moved away from its start.
    assert all(m["grad_norm/D"] > 0 and m["grad_norm/G"] > 0 for m in history)
    assert any(not torch.equal(a, b) for a, b in zip(ema_start, state.G_ema.parameters()))


def test_step_returns_every_term_as_device_tensors():
    cfg = tiny(generator={"arch": "mcgan"})
    state = build_training(cfg)
    batch, _ = toy_batch(8, cfg.data.image_size, cfg.data.n_genes)
    metrics = train_step(state, batch)
    assert set(metrics) == {"loss/D/I", "loss/D/IS", "loss/D/ISG", "loss/D/total", "loss/G/I", "loss/G/IS",
                            "loss/G/ISG", "loss/G/l1", "loss/G/kl", "loss/G/total", "grad_norm/D", "grad_norm/G",
                            "gen/mask_area", *(f"acc/D/{h}/{w}" for h in ("I", "IS", "ISG") for w in ("real", "fake"))}
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in metrics.values())


def test_gradient_clipping_bounds_the_update():
    cfg = tiny(optim={"grad_clip": 1e-3})
    state = build_training(cfg)
    batch, _ = toy_batch(8, cfg.data.image_size, cfg.data.n_genes)
    before = [p.clone() for p in state.D.parameters()]
    metrics = train_step(state, batch)
    assert metrics["grad_norm/D"] > 1e-3  # the reported norm is the norm before clipping
    total = torch.nn.utils.get_total_norm([p.grad for p in state.D.parameters() if p.grad is not None])
    assert total <= 1e-3 * 1.01
    assert any(not torch.equal(a, b) for a, b in zip(before, state.D.parameters()))


def test_discriminator_step_does_not_touch_generator_and_ema_follows_g():
    cfg = tiny(train={"ema_decay": 0.5})
    torch.manual_seed(0)
    state = build_training(cfg)
    ema_before = [p.clone() for p in state.G_ema.parameters()]
    batch, _ = toy_batch(8, cfg.data.image_size, cfg.data.n_genes)
    train_step(state, batch)
    # Step 0 of the EMA ramp: decay min(0.5, 1/10) = 0.1.
    for e0, e1, g1 in zip(ema_before, state.G_ema.parameters(), state.G.parameters()):
        torch.testing.assert_close(e1, 0.1 * e0 + 0.9 * g1)
    assert all(p.requires_grad for p in state.D.parameters())  # D left trainable for the next D step


STABILISERS = {"loss": {"r1_gamma": 1.0, "code_to_d": "detached"}, "discriminator": {"spectral_norm": True},
               "train": {"augment": "diffaugment"}}


@pytest.mark.parametrize("arch,stabilisers", [("mcgan", False), ("proposed", True), ("mcgan", True)],
                         ids=["mcgan", "proposed+stabilisers", "mcgan+stabilisers"])
def test_step_has_no_host_syncs(monkeypatch, arch, stabilisers):
    """The step never pulls a value to the host (.item(), .cpu(), .tolist(), .numpy(), bool(tensor)):
    on a GPU each of those would stall the CUDA stream. Checked on CPU by making them raise. Adam reads
    its step counter with .item(); torch keeps that counter on the CPU on purpose, so it is exempt.
    Also with R1, spectral norm, DiffAugment and the detached code on."""
    import sys

    cfg = tiny(generator={"arch": arch}, optim={"grad_clip": 1.0}, **(STABILISERS if stabilisers else {}))
    state = build_training(cfg)
    batch, _ = toy_batch(8, cfg.data.image_size, cfg.data.n_genes)

    def forbidden(name):
        original = getattr(torch.Tensor, name)

        def check(*args, **kwargs):
            if "torch/optim/" in sys._getframe(1).f_code.co_filename:
                return original(*args, **kwargs)
            raise AssertionError(f"train_step called Tensor.{name}, a host sync")
        return check

    for name in ("item", "cpu", "tolist", "numpy", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden(name))
    metrics = train_step(state, batch)
    monkeypatch.undo()
    assert all(torch.isfinite(v) for v in metrics.values())
    assert ("loss/D/r1" in metrics) == stabilisers


def test_diagnostics_are_the_heads_accuracies_and_the_mask_area():
    cfg = tiny()
    torch.manual_seed(0)
    state = build_training(cfg)
    batch, _ = toy_batch(8, cfg.data.image_size, cfg.data.n_genes)
    seen = []
    state.D.register_forward_hook(lambda m, args, out: seen.append(out))
    fakes = []
    state.G.register_forward_hook(lambda m, args, out: fakes.append(out))
    metrics = train_step(state, batch)
    real, gen = seen[0], seen[1]  # the D step: real tuples, then fakes
    for h in ("I", "IS", "ISG"):
        assert metrics[f"acc/D/{h}/real"] == (getattr(real, h) > 0.5).float().mean()
        assert metrics[f"acc/D/{h}/fake"] == (getattr(gen, h) < 0.5).float().mean()
    assert metrics["gen/mask_area"] == (fakes[0].mask >= 0.5).float().mean()
    # Diagnostics are reported, never optimised: the totals are the weighted loss terms alone.
    torch.testing.assert_close(metrics["loss/D/total"], sum(metrics[f"loss/D/{h}"] for h in ("I", "IS", "ISG")))
    torch.testing.assert_close(metrics["loss/G/total"], sum(metrics[f"loss/G/{h}"] for h in ("I", "IS", "ISG"))
                               + cfg.loss.lambda_l1 * metrics["loss/G/l1"])
