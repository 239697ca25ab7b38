"""Shape and gradient tests for G and D over every ablation variant and the baseline; fusion and AdaIN math."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from radiogen.models import Discriminator, build_discriminator, build_generator
from radiogen.models.adain import AdaIN
from radiogen.models.fusion import PaperFusion
from radiogen.train_step import build_training, train_step

from .helpers import random_batch, tiny

VARIANTS = [
    {"fusion": f, "adain": a, "final_blend": b, "fusion_levels": lv}
    for f, a, b, lv in itertools.product(["paper", "concat", "concat_all", "additive"], ["affine", "off"],
                                         [True, False], [None, 1])
] + [{"fusion": f, "adain_position": "before_gate"} for f in ("paper", "additive")] \
  + [{"weight_activation": "tanh", "mask_activation": "tanh"}, {"noise_dim": 0}, {"arch": "mcgan"},
     {"arch": "mcgan", "noise_dim": 0, "mask_activation": "tanh"}]


def _id(v: dict) -> str:
    return ",".join(f"{k}={x}" for k, x in v.items())


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_generator_shapes_and_gradients(variant):
    cfg = tiny(generator=variant)
    torch.manual_seed(0)
    G = build_generator(cfg)
    b = random_batch(cfg)
    out = G(b.background, b.genes)
    s = cfg.data.image_size
    assert out.image.shape == out.mask.shape == (4, 1, s, s)
    assert out.code.shape == (4, cfg.generator.code_dim)
    assert out.image.min() >= -1 and out.image.max() <= 1
    assert out.mask.min() >= 0 and out.mask.max() <= 1
    if variant.get("fusion") in ("concat", "concat_all"):
        assert out.weight is None  # concatenation has no weight map
    else:
        assert out.weight.shape == (4, 1, s, s) and 0 <= out.weight.min() and out.weight.max() <= 1
    assert (out.kl is not None) == (cfg.generator.arch == "mcgan")
    loss = out.image.mean() + out.mask.mean() + out.code.pow(2).mean() + (out.kl if out.kl is not None else 0)
    loss.backward()
    without_grad = [n for n, p in G.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not without_grad, f"parameters that get no gradient: {without_grad}"


def test_fusion_levels_count_blocks():
    assert len(build_generator(tiny()).fusion) == 4  # depth 3 -> 32, 16, 8, 4 px
    G = build_generator(tiny(generator={"fusion_levels": 2}))
    assert sorted(G.fusion) == ["4px", "8px"]  # counted from the bottleneck


@pytest.mark.parametrize("levels", [None, 3])
def test_concat_is_the_mcgan_style_bottleneck_concatenation(levels):
    G = build_generator(tiny(generator={"fusion": "concat", "adain": "affine", "fusion_levels": levels}))
    assert list(G.fusion) == ["4px"]  # the bottleneck only, whatever fusion_levels says
    assert not any(isinstance(m, AdaIN) and m.mode != "off" for m in G.modules())  # no AdaIN
    G_all = build_generator(tiny(generator={"fusion": "concat_all"}))
    assert len(G_all.fusion) == 4 and any(isinstance(m, AdaIN) and m.mode == "affine" for m in G_all.modules())


def _style_leak(adain_position: str) -> tuple[float, float]:
    """Mean |change of the block's output| when the style is swapped, where w = 0 and where w = 1.

    The weight map is forced to 0 on the left half and 1 on the right half of the map by a stand-in for
    the block's conv stack (the thing under test is the gating and AdaIN order, not the convolutions)."""
    torch.manual_seed(0)
    block = PaperFusion(4, 6, "affine", "sigmoid", adain_position=adain_position).eval()
    obj = torch.randn(2, 4, 8, 8)
    logits = torch.full((2, 4, 8, 8), -1e4)
    logits[..., 4:] = 1e4
    block.encode = torch.nn.Identity()
    synth = torch.cat([logits, obj], dim=1)  # chunk(2) -> w logits, obj
    bg = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        a, w = block(synth, bg, torch.randn(2, 6))
        b, _ = block(synth, bg, torch.randn(2, 6))
    delta = (a - b).abs()
    return float(delta[w == 0].mean()), float(delta[w == 1].mean())


def test_adain_after_gate_leaks_style_into_the_background_and_before_gate_does_not():
    leak_paper, obj_paper = _style_leak("after_gate")
    leak_before, obj_before = _style_leak("before_gate")
    assert leak_paper > 0.1 and obj_paper > 0.1  # the paper's order: the style reaches w = 0 pixels
    assert leak_before == 0.0 and obj_before > 0.1  # AdaIN before gating: the background is untouched


@pytest.mark.parametrize("heads", [("I",), ("IS",), ("ISG",), ("I", "ISG"), ("I", "IS", "ISG")])
def test_discriminator_heads_shapes_and_gradients(heads):
    cfg = tiny()
    D = Discriminator(cfg.discriminator, cfg.generator.code_dim, heads)
    b = random_batch(cfg)
    code = torch.randn(4, cfg.generator.code_dim)
    out = D(b.image, b.mask, code, wrong_mask=b.mask_mismatch, wrong_code=torch.randn(4, cfg.generator.code_dim))
    patch = cfg.data.image_size // 2**cfg.discriminator.depth
    computed = {k for k, v in out._asdict().items() if v is not None}
    expected = set(heads) | ({"IS_wrong_mask"} if "IS" in heads else set()) \
        | ({"ISG_wrong_mask", "ISG_wrong_code"} if "ISG" in heads else set())
    assert computed == expected
    for k in computed:
        assert getattr(out, k).shape == (4, 1, patch, patch)
    sum(getattr(out, k).mean() for k in computed).backward()
    assert all(p.grad is not None for p in D.parameters())


def test_discriminator_builds_only_weighted_heads():
    D = build_discriminator(tiny(loss={"weight_IS": 0.0}))
    assert D.heads == ("I", "ISG") and not hasattr(D, "head_IS") and hasattr(D, "enc_IS")
    D = build_discriminator(tiny(loss={"weight_IS": 0.0, "weight_ISG": 0.0}))
    assert not hasattr(D, "enc_IS")
    with pytest.raises(ValueError, match="not built"):
        D(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32), torch.zeros(1, 16), heads=("IS",))


def test_isg_code_changes_only_isg():
    cfg = tiny()
    D = build_discriminator(cfg).eval()
    b = random_batch(cfg)
    c1, c2 = torch.randn(4, 16), torch.randn(4, 16)
    o1, o2 = D(b.image, b.mask, c1), D(b.image, b.mask, c2)
    assert torch.equal(o1.I, o2.I) and torch.equal(o1.IS, o2.IS)
    assert not torch.allclose(o1.ISG, o2.ISG)


def _forced_fusion(minus_path: bool) -> tuple[PaperFusion, torch.Tensor, torch.Tensor, torch.Tensor]:
    block = PaperFusion(3, 5, "off", "sigmoid", minus_path=minus_path).eval()
    torch.manual_seed(0)
    synth, bg, style = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 5)
    return block, synth, bg, style


@pytest.mark.parametrize("minus_path", [True, False])
def test_fusion_block_follows_the_paper(minus_path):
    block, synth, bg, style = _forced_fusion(minus_path)
    out, w = block(synth, bg, style)
    w_logit, obj = block.encode(synth).chunk(2, dim=1)
    torch.testing.assert_close(w, torch.sigmoid(w_logit))
    expected = obj * w + (bg * (1 - w) if minus_path else bg)
    torch.testing.assert_close(out, expected)


def test_fusion_weight_extremes_select_paths():
    block, synth, bg, style = _forced_fusion(True)
    last = block.encode[-1]  # BN of the doubled channels: force the weight half to +-inf
    with torch.no_grad():
        last.bias[:3] = 1e4
        out_obj, w = block(synth, bg, style)
        last.bias[:3] = -1e4
        out_bg, _ = block(synth, bg, style)
    obj = block.encode(synth).chunk(2, dim=1)[1]
    torch.testing.assert_close(out_obj, obj)  # w = 1: object only, background suppressed
    torch.testing.assert_close(out_bg, bg)  # w = 0: background passes unchanged


def test_adain_normalises_then_styles():
    ada = AdaIN(4, 6, "affine")
    x, s = torch.randn(3, 4, 8, 8) * 5 + 2, torch.randn(3, 6)
    with torch.no_grad():
        ada.to_scale.weight.zero_(), ada.to_scale.bias.fill_(1.0)  # scale = 1 + 1 = 2
        ada.to_bias.weight.zero_(), ada.to_bias.bias.fill_(0.5)
    y = ada(x, s)
    torch.testing.assert_close(y.mean((2, 3)), torch.full((3, 4), 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((2, 3), unbiased=False), torch.full((3, 4), 2.0), atol=1e-3, rtol=0)
    assert torch.equal(AdaIN(4, 6, "off")(x, s), x)


def test_final_blend_keeps_background_where_mask_is_zero():
    cfg = tiny()
    G = build_generator(cfg).eval()
    with torch.no_grad():
        G.head.conv.bias[1] = -1e4  # mask channel -> 0 everywhere
        b = random_batch(cfg)
        out = G(b.background, b.genes)
    torch.testing.assert_close(out.image, b.background)


@pytest.mark.parametrize("arch", ["proposed", "mcgan"])
def test_channels_last_matches_contiguous(arch):
    cfg = tiny(generator={"arch": arch})
    torch.manual_seed(0)
    G = build_generator(cfg).eval()
    b = random_batch(cfg)
    noise = torch.randn(4, cfg.generator.noise_dim)
    G_cl = copy.deepcopy(G).to(memory_format=torch.channels_last)  # .to() converts in place: keep G contiguous
    assert G_cl.encoder.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(1)  # the baseline's CA draws eps; same seed for both calls
    ref = G(b.background, b.genes, noise).image
    torch.manual_seed(1)
    out_cl = G_cl(b.background.contiguous(memory_format=torch.channels_last), b.genes, noise).image
    torch.testing.assert_close(out_cl, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["proposed", "mcgan"])
def test_bf16_autocast_and_channels_last_training_step_is_finite(arch):
    cfg = tiny(generator={"arch": arch}, train={"precision": "bf16", "channels_last": True})
    torch.manual_seed(0)
    state = build_training(cfg)
    b = random_batch(cfg).to("cpu", channels_last=True)
    for _ in range(3):
        metrics = train_step(state, b)
    assert all(torch.isfinite(v) for v in metrics.values())
    assert state.G.encoder.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
