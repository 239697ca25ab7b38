"""Radiomic features, their Fréchet distance, the realism report and background L1 on hand-built slices."""

from __future__ import annotations

import numpy as np
import pytest

from radiogen.metrics import (FEATURE_NAMES, frechet_distance, outside_mask_l1, radiomic_features,
                              realism_report)

H = W = 64
IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def disc(radius: float, center: tuple[float, float] = (32, 32), size: int = H) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((yy - center[0]) ** 2 + (xx - center[1]) ** 2) <= radius**2).astype(np.float32)


def features(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return radiomic_features(image[None], mask[None])[0]


def test_feature_array_shape_and_dtype():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (3, H, W))
    masks = np.stack([disc(8)] * 3)
    out = radiomic_features(images, masks)
    assert out.shape == (3, len(FEATURE_NAMES)) and out.dtype == np.float64
    assert np.isfinite(out).all()


def test_disc_shape_features():
    r = 20
    f = features(np.zeros((H, W)), disc(r))
    assert f[IDX["area_fraction"]] == pytest.approx(np.pi * r**2 / (H * W), rel=0.02)
    assert f[IDX["compactness"]] == pytest.approx(1.0, abs=0.06)
    assert f[IDX["eccentricity"]] == pytest.approx(0.0, abs=0.05)
    assert f[IDX["solidity"]] > 0.95


def test_elongated_mask_is_eccentric_and_less_compact():
    ellipse = np.zeros((H, W), np.float32)
    yy, xx = np.mgrid[:H, :W]
    ellipse[((yy - 32) / 6.0) ** 2 + ((xx - 32) / 24.0) ** 2 <= 1] = 1
    f_e, f_d = features(np.zeros((H, W)), ellipse), features(np.zeros((H, W)), disc(12))
    assert f_e[IDX["eccentricity"]] > 0.9
    assert f_e[IDX["compactness"]] < f_d[IDX["compactness"]] - 0.2


def test_brighter_disc_has_larger_mean_and_percentiles():
    m = disc(10)
    dark, bright = features(np.full((H, W), -0.5), m), features(np.full((H, W), 0.3), m)
    assert dark[IDX["mean"]] == pytest.approx(-0.5)
    assert bright[IDX["mean"]] == pytest.approx(0.3)
    assert bright[IDX["p10"]] > dark[IDX["p90"]]


def test_first_order_moments_match_numpy():
    rng = np.random.default_rng(1)
    image = rng.normal(0, 0.2, (H, W)).clip(-1, 1)
    m = disc(15)
    v = image[m > 0.5]
    f = features(image, m)
    z = (v - v.mean()) / v.std()
    assert f[IDX["std"]] == pytest.approx(v.std())
    assert f[IDX["skewness"]] == pytest.approx(np.mean(z**3))
    assert f[IDX["kurtosis"]] == pytest.approx(np.mean(z**4) - 3)
    assert f[IDX["p10"]] == pytest.approx(np.percentile(v, 10))
    # a flat nodule has one histogram bin (entropy 0); noise spreads over several
    assert features(np.zeros((H, W)), m)[IDX["entropy"]] == 0.0
    assert f[IDX["entropy"]] > 2.0


def test_textured_nodule_has_higher_glcm_contrast_than_flat():
    m = disc(12)
    yy, xx = np.mgrid[:H, :W]
    checker = np.where((yy + xx) % 2 == 0, 0.6, -0.6)
    flat, textured = features(np.zeros((H, W)), m), features(checker, m)
    assert flat[IDX["glcm_contrast"]] == 0.0
    assert textured[IDX["glcm_contrast"]] > 10.0
    assert textured[IDX["glcm_dissimilarity"]] > flat[IDX["glcm_dissimilarity"]]
    assert textured[IDX["glcm_homogeneity"]] < flat[IDX["glcm_homogeneity"]] == 1.0
    assert flat[IDX["glcm_energy"]] == pytest.approx(1.0)


def test_features_ignore_pixels_outside_the_mask():
    rng = np.random.default_rng(2)
    m = disc(9, center=(30, 34))
    image = rng.uniform(-1, 1, (H, W))
    other = np.where(m > 0.5, image, rng.uniform(-1, 1, (H, W)))
    other_extreme = np.where(m > 0.5, image, 1.0)
    np.testing.assert_array_equal(features(image, m), features(other, m))
    np.testing.assert_array_equal(features(image, m), features(other_extreme, m))


def test_probability_masks_are_binarised_at_half():
    rng = np.random.default_rng(3)
    image = rng.uniform(-1, 1, (H, W))
    hard = disc(10)
    soft = np.where(hard > 0.5, 0.7, 0.3)
    np.testing.assert_array_equal(features(image, hard), features(image, soft))


def test_empty_mask_gives_nan_row():
    rng = np.random.default_rng(4)
    images = rng.uniform(-1, 1, (2, H, W))
    masks = np.stack([np.zeros((H, W)), disc(8)])
    out = radiomic_features(images, masks)
    assert np.isnan(out[0]).all()
    assert np.isfinite(out[1]).all()


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shapes differ"):
        radiomic_features(np.zeros((2, H, W)), np.zeros((2, H, W + 1)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        radiomic_features(np.zeros((H, W)), np.zeros((H, W)))


# --- Fréchet distance -------------------------------------------------------------------------

def gaussian_set(n: int = 4000, f: int = 4, seed: int = 0, mixing_seed: int = 0) -> np.ndarray:
    """Correlated features with very different units (scales 1, 10, 0.1, 100)."""
    a = np.random.default_rng(mixing_seed).normal(size=(f, f))
    return np.random.default_rng(seed).normal(size=(n, f)) @ a * np.array([1.0, 10.0, 0.1, 100.0])[:f] + 5.0


def test_identical_sets_have_zero_distance():
    x = gaussian_set()
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("k", [1.0, 2.0, 3.0])
def test_mean_shift_of_k_real_stds_adds_k_squared(k):
    x = gaussian_set()
    for j in (0, 3):  # features of very different units weigh the same after standardisation
        y = x.copy()
        y[:, j] += k * x[:, j].std()
        assert frechet_distance(x, y) == pytest.approx(k**2, rel=1e-4)


def test_symmetric_for_equal_spread_not_in_general():
    x = gaussian_set(seed=1)
    y = x + np.array([0.5, -3.0, 0.02, 40.0])
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-6)
    z = x * 2.0  # different spread: the real set's std sets the scale, so order matters
    assert frechet_distance(x, z) != pytest.approx(frechet_distance(z, x), rel=0.1)


def test_independent_samples_of_one_distribution_are_close():
    a, b = gaussian_set(seed=2), gaussian_set(n=2000, seed=3)
    assert frechet_distance(a, b) < 0.05
    assert frechet_distance(a, gaussian_set(seed=3, mixing_seed=1)) > 1.0


def test_nan_rows_are_dropped():
    x = gaussian_set(n=200)
    with_nan = np.vstack([x, np.full((5, x.shape[1]), np.nan)])
    assert frechet_distance(with_nan, x) == pytest.approx(0.0, abs=1e-6)


def test_fewer_than_two_valid_rows_raises():
    x = gaussian_set(n=50)
    one = np.vstack([x[:1], np.full((3, x.shape[1]), np.nan)])
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(x, one)
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(one, x)


def test_few_rows_singular_covariance_is_finite():
    x = gaussian_set(n=3, f=4)
    y = gaussian_set(n=3, f=4, seed=7)
    d = frechet_distance(x, y)
    assert np.isfinite(d) and d >= 0


# --- realism report ---------------------------------------------------------------------------

def nodule_batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.normal(-0.6, 0.1, (n, H, W)).clip(-1, 1)
    masks = np.stack([disc(rng.uniform(5, 14), center=tuple(rng.uniform(20, 44, 2))) for _ in range(n)])
    images = np.where(masks > 0.5, images + 0.5, images)
    return images, masks


def test_realism_report_all_empty_fake_masks_is_nan_not_error():
    ri, rm = nodule_batch(8, 0)
    fi = np.zeros_like(ri)
    rep = realism_report(ri, rm, fi, np.zeros_like(rm))
    assert set(rep) == {"frechet_radiomic", "speckle_ratio", "fake_empty_mask_fraction", "real_empty_mask_fraction"}
    assert np.isnan(rep["frechet_radiomic"]) and np.isnan(rep["speckle_ratio"])  # no synthetic nodule to measure
    assert rep["fake_empty_mask_fraction"] == 1.0
    assert rep["real_empty_mask_fraction"] == 0.0


def test_realism_report_distance_orders_good_and_bad_fakes():
    ri, rm = nodule_batch(64, 0)
    good_i, good_m = nodule_batch(64, 1)
    bad_m = good_m.copy()
    bad_m[:16] = 0  # a quarter of the fakes draw no nodule
    bad_i = np.where(bad_m > 0.5, 0.9, good_i)  # flat, too bright nodules
    good, bad = realism_report(ri, rm, good_i, good_m), realism_report(ri, rm, bad_i, bad_m)
    assert bad["fake_empty_mask_fraction"] == 0.25 and good["fake_empty_mask_fraction"] == 0.0
    assert np.isfinite(good["frechet_radiomic"]) and np.isfinite(bad["frechet_radiomic"])
    assert bad["frechet_radiomic"] > 5 * good["frechet_radiomic"]


# --- background fidelity ----------------------------------------------------------------------

def test_outside_mask_l1_by_hand():
    bg = np.zeros((1, 5, 5))
    img = np.zeros((1, 5, 5))
    img[0, 0, 0] = 1.0        # outside: counts
    img[0, 2, 3] = 8.0        # next to the mask: inside the dilated mask, ignored
    img[0, 2, 2] = 100.0      # under the mask: ignored
    mask = np.zeros((1, 5, 5))
    mask[0, 2, 2] = 0.9
    # dilate=1 (disk of radius 1) covers the centre and its 4 neighbours -> 20 outside pixels
    assert outside_mask_l1(img, bg, mask, dilate=1) == pytest.approx(1.0 / 20)
    # no dilation: (2,3) is outside too -> 24 outside pixels
    assert outside_mask_l1(img, bg, mask, dilate=0) == pytest.approx(9.0 / 24)


def test_outside_mask_l1_pools_over_slices_without_mixing_them():
    bg = np.zeros((2, 4, 4))
    img = np.ones((2, 4, 4)) * np.array([1.0, 3.0])[:, None, None]
    mask = np.zeros((2, 4, 4))
    mask[0, 0, 0] = 1  # slice 0: only its own corner is masked; slice 1 has no mask
    # dilate=1 on slice 0: (0,0),(0,1),(1,0) -> 13 outside pixels of value 1; slice 1: 16 of value 3
    assert outside_mask_l1(img, bg, mask, dilate=1) == pytest.approx((13 * 1 + 16 * 3) / 29)
    assert np.isnan(outside_mask_l1(img, bg, np.ones((2, 4, 4))))  # nothing outside the mask
    with pytest.raises(ValueError, match="dilate"):
        outside_mask_l1(img, bg, mask, dilate=-1)
