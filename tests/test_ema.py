"""The generator users see (G_ema): ramped EMA decay, BatchNorm statistics of its own, and evaluation on
its own RNG stream so that validation never changes the training noise."""

from __future__ import annotations

import numpy as np
import torch

from radiogen.toy import toy_batch
from radiogen.train_step import (build_training, ema_decay_at, ema_update, local_rng, recompute_bn_stats,
                                 refresh_ema_bn, train_step)
from ray_jobs.loop import validate

from .helpers import tiny


def test_ema_decay_ramps_up_to_the_configured_decay():
    assert ema_decay_at(0.999, 0) == 0.1
    assert ema_decay_at(0.999, 90) == 0.91
    assert ema_decay_at(0.999, 100_000) == 0.999
    assert ema_decay_at(0.0, 50) == 0.0  # 0 = G_ema is G


def test_initial_weights_are_forgotten_after_a_short_run():
    """With the live weights held at P, G_ema after t updates is w*E0 + (1-w)*P; w must be negligible after
    the demo's 200 steps (a fixed 0.999 keeps w = 0.82 of the random initial weights)."""
    start, live = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    ema = torch.nn.Linear(4, 4)
    ema.load_state_dict(start.state_dict())
    for t in range(200):
        ema_update(ema, live, ema_decay_at(0.999, t))
    w = ((ema.weight - live.weight) / (start.weight - live.weight)).detach()
    assert float(w.abs().max()) < 1e-3


def test_ema_batchnorm_statistics_are_recomputed_on_training_batches():
    cfg = tiny()
    torch.manual_seed(0)
    state = build_training(cfg)
    batch, _ = toy_batch(8, cfg.data.image_size, cfg.data.n_genes, seed=0)
    for _ in range(5):
        train_step(state, batch)
    first_bn = next(m for m in state.G_ema.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = first_bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().mean((0, 2, 3))))
    rng_before = torch.get_rng_state()
    refresh_ema_bn(state)
    hook.remove()
    assert torch.equal(torch.get_rng_state(), rng_before)  # the training noise stream is untouched
    assert len(seen) == len(state.recent) == 5 and not state.G_ema.training
    # Cumulative average of the batch means of G_ema's own activations, not the live G's statistics.
    torch.testing.assert_close(first_bn.running_mean, torch.stack(seen).mean(0))
    live_bn = next(m for m in state.G.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(first_bn.running_mean, live_bn.running_mean)
    assert state.ema_bn_step == state.step
    # Once per step: a second call changes nothing.
    before = first_bn.running_mean.clone()
    refresh_ema_bn(state)
    assert torch.equal(first_bn.running_mean, before)


def test_recompute_bn_stats_restores_momentum_and_mode():
    cfg = tiny()
    state = build_training(cfg)
    batch, _ = toy_batch(8, cfg.data.image_size, cfg.data.n_genes, seed=0)
    recompute_bn_stats(state.G_ema, [(batch.background, batch.genes)])
    bns = [m for m in state.G_ema.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.momentum == 0.1 for m in bns) and not state.G_ema.training
    assert all(int(m.num_batches_tracked) == 1 for m in bns)


def test_local_rng_restores_the_global_stream():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    with local_rng(7, torch.device("cpu")):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with local_rng(7, torch.device("cpu")):
        assert torch.equal(torch.rand(3), inside)  # the block's own stream is seeded, hence repeatable


def test_validation_does_not_reseed_training_noise(tmp_path):
    cfg = tiny()
    torch.manual_seed(0)
    state = build_training(cfg)
    batch, _ = toy_batch(8, cfg.data.image_size, cfg.data.n_genes, seed=0)
    train_step(state, batch)
    n = 4
    masks = (batch.mask[:n] > 0.5).float()
    pairs = (np.array([f"s{i}" for i in range(n)]), batch.image[:n], masks, batch.genes[:n], batch.background[:n])
    torch.manual_seed(11)
    expected = torch.rand(5)
    torch.manual_seed(11)
    metrics, figure = validate(state, pairs, 1, tmp_path)
    assert torch.equal(torch.rand(5), expected), "validate() changed the global RNG stream"
    assert figure.is_file() and "val/l1_background" in metrics
    # The same noise at every validation: a second call gives the same metrics.
    again = validate(state, pairs, 1, tmp_path)[0]
    np.testing.assert_equal([again[k] for k in sorted(again)], [metrics[k] for k in sorted(metrics)])
