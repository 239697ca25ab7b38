"""Each loss term against the paper's formula on small hand-built tensors; mismatches; weight-0 heads."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from radiogen.batch import mismatch_index
from radiogen.config import LossConfig
from radiogen.losses import GANLoss, erode, masked_background_l1
from radiogen.models import DiscriminatorOutput, GeneratorOutput, build_discriminator

from .helpers import random_batch, tiny


class ScoreTable(nn.Module):
    """A test double for D that returns known constant scores per (input identity, head).

    Inputs are tagged by their first pixel/element: images carry 10 (real) or 20 (fake), masks 1
    (real), 2 (mismatched) or 3 (generated), codes 100 (real g) or 200 (g-bar). The score of a head
    is looked up from `table[(head, image, mask, code)]`, so every LSGAN term has a known value.
    """

    def __init__(self, table: dict):
        super().__init__()
        self.table, self.calls = table, []

    def _score(self, head, image, mask, code):
        key = (head, int(image[0, 0, 0, 0]), int(mask[0, 0, 0, 0]), int(code[0, 0]))
        self.calls.append(key)
        return torch.full((image.shape[0], 1, 2, 2), self.table[key])

    def forward(self, image, mask, code, *, wrong_mask=None, wrong_code=None, heads=None):
        out = {"I": self._score("I", image, mask, code), "IS": self._score("IS", image, mask, code),
               "ISG": self._score("ISG", image, mask, code)}
        if wrong_mask is not None:
            out["IS_wrong_mask"] = self._score("IS", image, wrong_mask, code)
            out["ISG_wrong_mask"] = self._score("ISG", image, wrong_mask, code)
        if wrong_code is not None:
            out["ISG_wrong_code"] = self._score("ISG", image, mask, wrong_code)
        return DiscriminatorOutput(**out)


def tagged(value: float, shape) -> torch.Tensor:
    t = torch.zeros(shape)
    t.view(-1)[0] = value
    return t


@pytest.fixture
def tuples():
    cfg = tiny()
    b = random_batch(cfg, batch_size=3)
    b.image, b.mask, b.mask_mismatch = tagged(10, b.image.shape), tagged(1, b.mask.shape), tagged(2, b.mask.shape)
    fake = GeneratorOutput(tagged(20, b.image.shape), tagged(3, b.mask.shape), None, tagged(100, (3, 16)), None)
    table = {("I", 10, 1, 100): 0.9, ("I", 20, 3, 100): 0.3,
             ("IS", 10, 1, 100): 0.8, ("IS", 10, 2, 100): 0.4, ("IS", 20, 3, 100): 0.2,
             ("ISG", 10, 1, 100): 0.7, ("ISG", 10, 2, 100): 0.5, ("ISG", 10, 1, 200): 0.6, ("ISG", 20, 3, 100): 0.1}
    return b, fake, table


def test_discriminator_terms_match_formula(tuples):
    b, fake, table = tuples
    loss = GANLoss(LossConfig(weight_I=2.0, weight_IS=3.0, weight_ISG=0.5))
    terms = loss.discriminator(ScoreTable(table), b, fake, fake.code, tagged(200, (3, 16)))
    L_DI = (0.9 - 1) ** 2 + 0.3**2
    L_DIS = (0.8 - 1) ** 2 + 0.4**2 + 0.2**2
    L_DISG = (0.7 - 1) ** 2 + 0.5**2 + 0.6**2 + 0.1**2
    assert terms["loss/D/I"].item() == pytest.approx(L_DI)
    assert terms["loss/D/IS"].item() == pytest.approx(L_DIS)
    assert terms["loss/D/ISG"].item() == pytest.approx(L_DISG)
    assert terms["loss/D/total"].item() == pytest.approx(2 * L_DI + 3 * L_DIS + 0.5 * L_DISG)


def test_generator_terms_match_formula(tuples):
    b, fake, table = tuples
    b.background = torch.zeros_like(b.background)
    loss = GANLoss(LossConfig(weight_I=2.0, weight_IS=3.0, weight_ISG=0.5, lambda_l1=10.0, erosion=1))
    terms = loss.generator(ScoreTable(table), b, fake)
    # Only the tagged pixel differs from the zero background: |20 * M| with M = 1 - G_m = 1 - 3 there.
    l1 = abs(20 * (1 - 3)) / fake.image.numel()
    expected = 2 * (0.3 - 1) ** 2 + 3 * (0.2 - 1) ** 2 + 0.5 * (0.1 - 1) ** 2 + 10 * l1
    assert terms["loss/G/I"].item() == pytest.approx((0.3 - 1) ** 2)
    assert terms["loss/G/l1"].item() == pytest.approx(l1)
    assert terms["loss/G/total"].item() == pytest.approx(expected)
    assert "loss/G/kl" not in terms


def test_kl_enters_generator_loss_with_its_weight(tuples):
    b, fake, table = tuples
    fake = fake._replace(kl=torch.tensor(0.25))
    terms = GANLoss(LossConfig(lambda_l1=0.0, kl_weight=2.0)).generator(ScoreTable(table), b, fake)
    assert terms["loss/G/kl"].item() == 0.25
    base = (0.3 - 1) ** 2 + (0.2 - 1) ** 2 + (0.1 - 1) ** 2
    assert terms["loss/G/total"].item() == pytest.approx(base + 2 * 0.25)
    assert "loss/G/l1" not in terms


def test_masked_background_l1_by_hand():
    image = torch.zeros(1, 1, 5, 5)
    background = torch.ones(1, 1, 5, 5)
    gen_mask = torch.zeros(1, 1, 5, 5)
    gen_mask[0, 0, 2, 2] = 1.0  # one nodule pixel in the centre
    # No erosion: M = 1 - G_m excludes one pixel -> 24 of 25 pixels differ by 1.
    assert masked_background_l1(image, background, gen_mask, 1).item() == pytest.approx(24 / 25)
    # 3x3 erosion of (1 - G_m) removes the centre's 3x3 neighbourhood -> 16 pixels remain.
    assert masked_background_l1(image, background, gen_mask, 3).item() == pytest.approx(16 / 25)


def test_erode_is_a_min_filter():
    m = torch.ones(1, 1, 7, 7)
    m[0, 0, 3, 3] = 0.2
    e = erode(m, 5)
    assert e[0, 0, 1:6, 1:6].eq(0.2).all() and e[0, 0, 0, 0] == 1.0
    assert torch.equal(erode(m, 1), m)


def test_no_gradient_through_the_l1_mask():
    image = torch.zeros(1, 1, 6, 6, requires_grad=True)
    mask = torch.full((1, 1, 6, 6), 0.3, requires_grad=True)
    masked_background_l1(image, torch.ones(1, 1, 6, 6), mask, 3).backward()
    assert mask.grad is None and image.grad.abs().sum() > 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=12).filter(lambda s: len(set(s)) > 1), st.integers(0, 10**6))
def test_mismatch_never_pairs_a_row_with_its_own_subject(subjects, seed):
    ids = [f"S{s}" for s in subjects]
    idx = mismatch_index(ids, torch.Generator().manual_seed(seed))
    assert all(ids[i] != ids[j] for i, j in enumerate(idx.tolist()))


def test_mismatch_needs_two_subjects():
    with pytest.raises(ValueError, match="at least two subjects"):
        mismatch_index(["A", "A", "A"])


@pytest.mark.parametrize("weights", [(0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)])
def test_weight_zero_heads_are_never_called(weights):
    cfg = tiny(loss=dict(zip(("weight_I", "weight_IS", "weight_ISG"), weights)))
    D = build_discriminator(cfg)
    called: set[str] = set()
    for name, module in D.named_children():
        if name.startswith("head_"):
            module.register_forward_hook(lambda m, i, o, name=name: called.add(name.removeprefix("head_")))
    b = random_batch(cfg)
    fake = GeneratorOutput(b.image.clone(), b.mask.clone(), None, torch.randn(4, 16), None)
    loss = GANLoss(cfg.loss)
    d_terms = loss.discriminator(D, b, fake, fake.code, torch.randn(4, 16))
    g_terms = loss.generator(D, b, fake)
    active = {h for h, w in zip(("I", "IS", "ISG"), weights) if w > 0}
    assert called == active
    assert {k.split("/")[-1] for k in d_terms if k.startswith("loss/")} - {"total"} == active
    assert {k.split("/")[2] for k in d_terms if k.startswith("acc/")} == active  # accuracies of computed heads only
    assert {k.split("/")[-1] for k in g_terms} - {"total", "l1"} == active


def test_real_discriminator_agrees_with_formula():
    """The loss object on the real D equals the formula written out from that D's own scores."""
    cfg = tiny()
    torch.manual_seed(0)
    D = build_discriminator(cfg).eval()  # eval: BN uses running stats, so repeated calls agree
    b = random_batch(cfg)
    code, wrong = torch.randn(4, 16), torch.randn(4, 16)
    fake = GeneratorOutput(torch.rand_like(b.image), torch.rand_like(b.mask), None, code, None)
    terms = GANLoss(cfg.loss).discriminator(D, b, fake, code, wrong)
    mse1 = lambda s: ((s - 1) ** 2).mean()  # noqa: E731
    mse0 = lambda s: (s**2).mean()  # noqa: E731
    r, f = D(b.image, b.mask, code), D(fake.image, fake.mask, code)
    isg_wm = D(b.image, b.mask_mismatch, code).ISG
    isg_wc = D(b.image, b.mask, wrong).ISG
    expected = mse1(r.ISG) + mse0(isg_wm) + mse0(isg_wc) + mse0(f.ISG)
    torch.testing.assert_close(terms["loss/D/ISG"], expected)
    torch.testing.assert_close(terms["loss/D/IS"], mse1(r.IS) + mse0(D(b.image, b.mask_mismatch, code).IS) + mse0(f.IS))
