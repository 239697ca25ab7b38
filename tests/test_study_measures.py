"""The ablation study's measures on constructed nodules with known answers: the irregularity and texture
measurements, the speckle ratio, the realism floor's ingredients, the speckle loss and the cosine schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiogen.evaluation.truth import MEASURES, nodule_measures, program_response
from radiogen.losses import high_frequency_energy, speckle_gap
from radiogen.metrics import high_frequency_rms, realism_report, speckle_ratio
from radiogen.train_step import lr_scale

SIZE = 32


def lobed(amplitude: float, lobes: int = 7, radius: float = 7.0) -> np.ndarray:
    """A nodule mask whose boundary radius swings by +-amplitude (a fraction) over `lobes` lobes."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2 + 0.5
    angle = np.arctan2(yy, xx)
    return (np.hypot(yy, xx) < radius * (1 + amplitude * np.cos(lobes * angle))).astype(np.float32)


def flat(mask: np.ndarray, inside: float = 0.2, outside: float = -0.9) -> np.ndarray:
    return np.where(mask > 0, inside, outside).astype(np.float32)


def test_a_rougher_boundary_gives_a_higher_isoperimetric_ratio_lower_sphericity():
    masks = np.stack([lobed(a) for a in (0.0, 0.1, 0.2, 0.35)])
    iso = nodule_measures(np.stack([flat(m) for m in masks]), masks)[:, MEASURES.index("isoperimetric")]
    assert np.all(np.diff(iso) > 0), iso
    assert 0.8 < iso[0] < 1.2, "a disc is about 1 (2-D sphericity 1)"


def test_added_noise_gives_more_speckle_and_a_flat_nodule_none_whatever_its_outline():
    rng = np.random.default_rng(0)
    masks = np.stack([lobed(0.0), lobed(0.35)])
    assert np.allclose(high_frequency_rms(np.stack([flat(m) for m in masks]), masks), 0, atol=1e-9), \
        "the step to the lung outside is not texture"
    real = np.stack([flat(lobed(0.0)) + rng.normal(0, 0.02, (SIZE, SIZE)) for _ in range(4)])
    real_masks = np.stack([lobed(0.0)] * 4)
    ratios = [speckle_ratio(real, real_masks, flat(lobed(0.0))[None] + rng.normal(0, sd, (4, SIZE, SIZE)), real_masks)
              for sd in (0.02, 0.05, 0.1)]
    assert ratios[0] == pytest.approx(1, abs=0.3)
    assert ratios[0] < ratios[1] < ratios[2] and ratios[2] > 15, ratios
    assert np.isnan(speckle_ratio(real, real_masks, real, np.zeros_like(real_masks)))  # no synthetic nodule


def test_the_four_measurements_follow_constructed_programs_and_empty_masks_are_nan():
    rng = np.random.default_rng(1)
    programs = rng.uniform(size=(12, 4))  # size, density, irregularity, texture
    images, masks = [], []
    for size, density, irregular, texture in programs:
        m = lobed(0.3 * irregular, radius=5 + 6 * size)
        images.append(flat(m, inside=-0.5 + density) + np.where(m > 0, rng.normal(0, 0.01 + 0.1 * texture,
                                                                                  (SIZE, SIZE)), 0))
        masks.append(m)
    measures = nodule_measures(np.stack(images), np.stack(masks))
    res = program_response(measures, programs, ["size", "density", "irregularity", "texture"])
    assert min(res[f"response/{p}"] for p in ("size", "density", "irregularity", "texture")) > 0.8, res
    empty = nodule_measures(np.zeros((1, SIZE, SIZE)), np.zeros((1, SIZE, SIZE)))[0]
    assert empty[0] == 0 and np.isnan(empty[1:]).all()


def test_two_halves_of_one_real_set_score_a_small_frechet_floor_and_a_shifted_set_a_large_one():
    rng = np.random.default_rng(2)
    masks = np.stack([lobed(rng.uniform(0, 0.3), radius=rng.uniform(4, 9)) for _ in range(40)])
    images = np.stack([flat(m, inside=rng.uniform(-0.3, 0.3)) + rng.normal(0, 0.03, m.shape) for m in masks])
    floor = realism_report(images[:20], masks[:20], images[20:], masks[20:])["frechet_radiomic"]
    shifted = realism_report(images[:20], masks[:20], images[20:] + rng.normal(0, 0.3, images[20:].shape),
                             masks[20:])["frechet_radiomic"]
    assert 0 < floor < shifted / 5


def test_the_speckle_loss_is_the_metric_in_torch_and_pulls_a_noisy_nodule_towards_the_real_energy():
    rng = np.random.default_rng(3)
    mask = np.stack([lobed(0.2)] * 2)
    image = flat(lobed(0.2))[None] + rng.normal(0, 0.1, (2, SIZE, SIZE)).astype(np.float32)
    torch_energy = high_frequency_energy(torch.tensor(image)[:, None], torch.tensor(mask)[:, None]).numpy()
    np.testing.assert_allclose(torch_energy, high_frequency_rms(image, mask) ** 2, rtol=0.02)
    fake = torch.tensor(image)[:, None].requires_grad_(True)
    real = torch.tensor(flat(lobed(0.2))[None] + rng.normal(0, 0.02, (2, SIZE, SIZE)).astype(np.float32))[:, None]
    m = torch.tensor(mask)[:, None]
    gap = speckle_gap(fake, m, real, m)
    assert gap.item() > 1
    gap.backward()
    smoother = (fake - 0.01 * fake.grad / fake.grad.abs().max()).detach()  # a small step down the gradient
    assert speckle_gap(smoother, m, real, m).item() < gap.item()
    assert speckle_gap(real, m, real, m).item() == pytest.approx(0, abs=1e-6)


def test_cosine_schedule_falls_from_one_to_a_tenth_and_constant_stays():
    assert lr_scale("constant", 500, 1000) == 1
    values = [lr_scale("cosine", s, 1000) for s in (0, 250, 500, 1000, 2000)]
    assert values[0] == pytest.approx(1) and values[3] == pytest.approx(0.1) and values[4] == pytest.approx(0.1)
    assert values[0] > values[1] > values[2] > values[3]
