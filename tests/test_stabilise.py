"""The limited-data stabilisers: R1, spectral norm, DiffAugment, the detached D code. Each is off by
default and then never computed; when on it does what it claims, with finite gradients and no host syncs."""

from __future__ import annotations


import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import radiogen.augment
import radiogen.losses
from radiogen.augment import cutout, diff_augment, translate
from radiogen.checkpoint import load_checkpoint, save_checkpoint
from radiogen.config import ConfigError, load_config
from radiogen.losses import GANLoss, masked_background_l1
from radiogen.models import GeneratorOutput, build_discriminator, build_generator
from radiogen.toy import toy_batch
from radiogen.train_step import build_training, train_step

from .helpers import REPO, counting, random_batch, tiny

TINY = REPO / "ablations" / "tiny.yaml"
STABILISERS = ["loss.r1_gamma=1.0", "discriminator.spectral_norm=true", "train.augment=diffaugment"]
"""The usual limited-data stabilisers together (measured on the synthetic cohort: not what the stable configs use)."""


def stabilised():
    return load_config(TINY, STABILISERS)


def detached_fake(cfg, b):
    return GeneratorOutput(torch.rand_like(b.image) * 2 - 1, torch.rand_like(b.mask), None,
                           torch.randn(b.image.shape[0], cfg.generator.code_dim), None)


# --- configuration -------------------------------------------------------------------------------


def test_defaults_are_off():
    cfg = load_config(REPO / "ablations" / "tiny.yaml")
    assert (cfg.loss.r1_gamma, cfg.loss.code_to_d, cfg.discriminator.spectral_norm, cfg.train.augment) == \
        (0.0, "attached", False, "off")


def test_new_fields_load_from_set_and_are_checked(tmp_path):
    cfg = load_config(REPO / "ablations" / "tiny.yaml", ["loss.r1_gamma=10", "discriminator.spectral_norm=true",
                                                         "train.augment=diffaugment", "loss.code_to_d=detached"])
    assert (cfg.loss.r1_gamma, cfg.discriminator.spectral_norm, cfg.train.augment, cfg.loss.code_to_d) == \
        (10.0, True, "diffaugment", "detached")
    p = tmp_path / "x.yaml"
    p.write_text(f"extends: {TINY}\ntrain:\n  augment: off\ndiscriminator:\n  spectral_norm: off\n")
    assert (load_config(p).train.augment, load_config(p).discriminator.spectral_norm) == ("off", False)
    with pytest.raises(ConfigError, match="loss.r1_gamma: must be >= 0"):
        load_config(TINY, ["loss.r1_gamma=-1"])
    with pytest.raises(ConfigError, match="train.augment: must be one of 'off', 'diffaugment'"):
        load_config(TINY, ["train.augment=color"])


# --- DiffAugment ---------------------------------------------------------------------------------


def test_translate_is_an_edge_padded_shift_within_an_eighth():
    torch.manual_seed(0)
    x = torch.randn(16, 2, 32, 32)
    y = translate(x)
    assert y.shape == x.shape
    pad = nn.functional.pad(x, (4, 4, 4, 4), mode="replicate")
    for b in range(16):  # each sample is exactly one shift (dy, dx) in [-4, 4]^2 of its edge-padded self
        hits = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                if torch.equal(y[b], pad[b, :, 4 - dy:36 - dy, 4 - dx:36 - dx])]
        assert len(hits) == 1
    assert not torch.equal(y, x)


def test_cutout_zeroes_one_square_of_at_most_half_the_side():
    torch.manual_seed(0)
    x = torch.ones(64, 1, 32, 32)
    y = cutout(x)
    zero = y[:, 0] == 0
    assert zero.any() and zero.sum((1, 2)).max() <= 16 * 16
    assert torch.equal(y[~zero[:, None]], x[~zero[:, None]])


def test_diff_augment_moves_image_and_mask_together_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 32, 32, requires_grad=True)
    torch.manual_seed(1)
    a, b = diff_augment(x, x.detach().clone())
    assert torch.equal(a, b)  # same draw for every tensor of the tuple
    assert not torch.equal(a, x)
    a.sum().backward()
    assert x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    torch.manual_seed(1)
    again, _ = diff_augment(x.detach(), x.detach())
    assert torch.equal(again, a.detach())  # seeded by torch's RNG


def test_augmentation_off_is_never_called(monkeypatch):
    calls = counting(monkeypatch, radiogen.augment, "diff_augment")
    state = build_training(tiny())
    seen: list[torch.Tensor] = []
    state.D.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    b, _ = toy_batch(8, 32, 64)
    train_step(state, b)
    assert calls == [] and state.loss.augment is False
    assert seen[0] is b.image  # D reads the real image itself


def test_augmentation_on_changes_d_inputs_jointly_in_both_steps(monkeypatch):
    calls = counting(monkeypatch, radiogen.augment, "diff_augment")
    cfg = tiny(train={"augment": "diffaugment"})
    torch.manual_seed(0)
    state = build_training(cfg)
    b, _ = toy_batch(8, 32, 64)
    b.image = torch.where(b.mask > 0, 0.8, -0.8)  # image > 0 exactly on the mask: survives a joint transform
    b.mask_mismatch = b.mask.clone()
    seen: list[tuple] = []
    state.D.register_forward_pre_hook(lambda m, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    metrics = train_step(state, b)
    assert len(calls) == 3  # reals and fakes in the D step, fakes in the G step
    (image, mask, _), kwargs = seen[0]
    assert not torch.equal(image, b.image) and not torch.equal(mask, b.mask)
    assert torch.equal((image > 0).float(), mask)  # same shift and cutout for the image and its mask
    assert torch.equal(kwargs["wrong_mask"], mask)  # and for the mismatched mask
    assert all(torch.isfinite(v) for v in metrics.values())


def test_background_l1_is_not_augmented():
    cfg = tiny(train={"augment": "diffaugment"})
    b = random_batch(cfg)
    fake = detached_fake(cfg, b)
    terms = GANLoss(cfg.loss, augment="diffaugment").generator(build_discriminator(cfg), b, fake)
    want = masked_background_l1(fake.image, b.background, fake.mask, cfg.loss.erosion)
    torch.testing.assert_close(terms["loss/G/l1"], want)


# --- R1 ------------------------------------------------------------------------------------------


def test_r1_off_is_never_computed(monkeypatch):
    calls = counting(monkeypatch, radiogen.losses, "r1_penalty")
    cfg = tiny()
    b = random_batch(cfg)
    seen: list[torch.Tensor] = []
    D = build_discriminator(cfg)
    D.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    fake = detached_fake(cfg, b)
    terms = GANLoss(cfg.loss).discriminator(D, b, fake, fake.code, torch.randn_like(fake.code))
    assert calls == [] and "loss/D/r1" not in terms
    assert not seen[0].requires_grad  # no graph is even built to the real image


def test_r1_matches_its_formula_and_raises_d_loss():
    cfg = tiny(loss={"r1_gamma": 4.0})
    torch.manual_seed(0)
    D = build_discriminator(cfg).eval()  # fixed BN statistics: repeated calls agree
    b = random_batch(cfg)
    fake = detached_fake(cfg, b)
    wrong = torch.randn_like(fake.code)
    on = GANLoss(cfg.loss).discriminator(D, b, fake, fake.code, wrong)
    off = GANLoss(tiny().loss).discriminator(D, b, fake, fake.code, wrong)
    x = b.image.clone().requires_grad_(True)
    out = D(x, b.mask, fake.code)
    grads = [torch.autograd.grad(getattr(out, h).sum(), x, retain_graph=True)[0] for h in ("I", "IS", "ISG")]
    by_hand = sum(g.pow(2).sum((1, 2, 3)).mean() for g in grads)
    torch.testing.assert_close(on["loss/D/r1"], by_hand)
    assert on["loss/D/r1"] > 0 and torch.isfinite(on["loss/D/r1"])
    torch.testing.assert_close(on["loss/D/total"], off["loss/D/total"] + 2.0 * on["loss/D/r1"])
    on["loss/D/total"].backward()  # the penalty is differentiable w.r.t. D's weights (double backward)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())
    assert b.image.grad is None  # the batch tensor itself is left alone


def test_r1_only_counts_computed_heads():
    cfg = tiny(loss={"r1_gamma": 1.0, "weight_IS": 0.0, "weight_ISG": 0.0})
    torch.manual_seed(0)
    D = build_discriminator(cfg).eval()
    b = random_batch(cfg)
    fake = detached_fake(cfg, b)
    terms = GANLoss(cfg.loss).discriminator(D, b, fake, fake.code, fake.code)
    x = b.image.clone().requires_grad_(True)
    grad = torch.autograd.grad(D(x, b.mask, fake.code).I.sum(), x)[0]
    torch.testing.assert_close(terms["loss/D/r1"], grad.pow(2).sum((1, 2, 3)).mean())


# --- spectral norm -------------------------------------------------------------------------------


def test_spectral_norm_off_leaves_the_papers_discriminator():
    D = build_discriminator(tiny())
    assert not any(parametrize.is_parametrized(m) for m in D.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in D.modules())


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)])
def test_spectral_norm_bounds_every_conv_and_drops_batch_norm(weights):
    cfg = tiny(discriminator={"spectral_norm": True}, loss=dict(zip(("weight_I", "weight_IS", "weight_ISG"), weights)))
    torch.manual_seed(0)
    D = build_discriminator(cfg)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(c, "weight") for c in convs)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    b = random_batch(cfg)
    code = torch.randn(4, cfg.generator.code_dim)
    with torch.no_grad():
        for _ in range(100):  # one power iteration per training-mode forward (a training step makes four)
            D(b.image, b.mask, code)
    for c in convs:
        sigma = torch.linalg.matrix_norm(c.weight.reshape(c.weight.shape[0], -1), ord=2)
        assert abs(sigma.item() - 1) < 0.02
    out = D(b.image, b.mask, code, wrong_mask=b.mask_mismatch, wrong_code=code)
    patch = 32 // 2**cfg.discriminator.depth
    scores = [v for v in out if v is not None]
    assert all(s.shape == (4, 1, patch, patch) for s in scores)
    sum(s.mean() for s in scores).backward()
    assert all(c.parametrizations.weight.original.grad.abs().sum() > 0 for c in convs)


def test_stabilised_checkpoint_round_trip(tmp_path):
    cfg = stabilised()
    torch.manual_seed(0)
    state = build_training(cfg)
    b = random_batch(cfg)
    train_step(state, b)
    restored, _ = load_checkpoint(save_checkpoint(tmp_path / "c.pt", state))
    code = torch.randn(4, cfg.generator.code_dim)
    with torch.no_grad():
        a, c = state.D.eval()(b.image, b.mask, code), restored.D.eval()(b.image, b.mask, code)
    assert all(torch.equal(x, y) for x, y in zip(a, c) if x is not None)


# --- the code D_ISG sees in the G step -----------------------------------------------------------


def test_code_to_d_attached_keeps_the_graph_and_detached_cuts_it():
    cfg = tiny(loss={"lambda_l1": 0.0, "weight_I": 0.0, "weight_IS": 0.0})
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    b = random_batch(cfg)
    seen: list[torch.Tensor] = []
    D.register_forward_pre_hook(lambda m, args: seen.append(args[2]))
    grads = {}
    for mode in ("attached", "detached"):
        torch.manual_seed(1)
        fake = G(b.background, b.genes)
        loss_cfg = tiny(loss={"lambda_l1": 0.0, "weight_I": 0.0, "weight_IS": 0.0, "code_to_d": mode}).loss
        G.zero_grad()
        GANLoss(loss_cfg).generator(D, b, fake)["loss/G/total"].backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in G.mapping.parameters()])
        assert seen[-1].requires_grad == (mode == "attached")
        assert torch.equal(seen[-1], fake.code)
    assert grads["detached"].abs().sum() > 0  # phi still learns through the image and mask
    assert not torch.allclose(grads["attached"], grads["detached"])
    assert GANLoss(tiny().loss).cfg.code_to_d == "attached"  # today's behaviour by default


# --- the whole step ------------------------------------------------------------------------------


def test_thirty_steps_with_all_stabilisers_stay_finite():
    cfg = stabilised()
    torch.manual_seed(0)
    state = build_training(cfg)
    batch, _ = toy_batch(8, cfg.data.image_size, cfg.data.n_genes, seed=0)
    history = [train_step(state, batch) for _ in range(30)]
    assert all(torch.isfinite(v) for m in history for v in m.values())
    assert all(m["loss/D/r1"] > 0 for m in history)
