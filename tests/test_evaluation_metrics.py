"""Evaluation metrics (radiogen.evaluation) on constructed inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from radiogen.evaluation import codes, conditioning, features, radiomap, realism, truth

# ---------------------------------------------------------------------------------------------
# Drawn nodules: images in [-1, 1] (CT window [-1000, 500] HU), lung at -850 HU.

LUNG = -0.8
SIZE = 32


def hu(value: float) -> float:
    return (value + 1000.0) / 1500.0 * 2.0 - 1.0


def disc_mask(radius: float, size: int = SIZE, lobes: int = 0, amplitude: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r, theta = np.hypot(yy, xx), np.arctan2(yy, xx)
    return (r <= radius * (1.0 + amplitude * np.cos(lobes * theta))).astype(np.float64)


def slice_with(mask: np.ndarray, value_hu: float, noise_hu: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    nodule = hu(value_hu) + noise_hu / 750.0 * rng.standard_normal(mask.shape)
    return np.where(mask > 0, nodule, LUNG)


def feature_of(image: np.ndarray, mask: np.ndarray, name: str) -> float:
    values, names = features.radiomic_features(image[None], mask[None])
    return float(values[0, names.index(name)])


def test_radiomic_features_shape_names_and_nan_rows():
    masks = np.stack([disc_mask(6), np.zeros((SIZE, SIZE)), disc_mask(0.5)])  # disc, empty, one pixel
    images = np.stack([slice_with(m, -300.0) for m in masks])
    values, names = features.radiomic_features(images, masks)
    assert values.shape == (3, len(names)) and values.dtype == np.float64
    assert names == list(features.FEATURE_NAMES) and len(set(names)) == len(names)
    assert {n.split("_")[0] for n in names} == set(features.FEATURE_CLASSES)
    assert set(features.PHENOTYPE_FEATURES.values()) <= set(names)
    assert np.isfinite(values[0]).all()
    assert np.isnan(values[1]).all() and np.isnan(values[2]).all()
    # Probabilities are binarised at 0.5 and the HU scale is restored.
    soft, _ = features.radiomic_features(images[:1], masks[:1] * 0.6)
    np.testing.assert_allclose(soft, values[:1])
    assert values[0, names.index("firstorder_Mean")] == pytest.approx(-300.0, abs=1e-6)


def test_phenotype_features_respond_in_the_expected_direction():
    f = features.PHENOTYPE_FEATURES
    disc = disc_mask(6)
    base = slice_with(disc, -500.0, noise_hu=5.0)
    assert feature_of(slice_with(disc_mask(10), -500.0, 5.0), disc_mask(10), f["size"]) > feature_of(base, disc, f["size"])
    assert feature_of(slice_with(disc, 0.0, 5.0), disc, f["density"]) > feature_of(base, disc, f["density"])
    noisy = slice_with(disc, -500.0, noise_hu=80.0)
    assert feature_of(noisy, disc, f["texture"]) > feature_of(base, disc, f["texture"])
    star = disc_mask(8, lobes=5, amplitude=0.45)
    irregular = feature_of(slice_with(star, -500.0, 5.0), star, f["irregularity"])
    regular = feature_of(base, disc, f["irregularity"])
    assert features.PHENOTYPE_DIRECTION["irregularity"] * (irregular - regular) > 0


def test_subject_means_groups_sorted_subjects_and_ignores_nan():
    values = np.array([[1.0, np.nan], [3.0, 2.0], [5.0, np.nan], [np.nan, np.nan]])
    means, ids = features.subject_means(values, ["b", "b", "a", "c"])
    assert ids == ["a", "b", "c"]
    np.testing.assert_allclose(means, [[5.0, np.nan], [2.0, 2.0], [np.nan, np.nan]])


# ---------------------------------------------------------------------------------------------
# Realism


def test_normalise_on_uses_reference_statistics_and_drops_nan_rows_and_constant_columns():
    rng = np.random.default_rng(0)
    ref = np.column_stack([rng.normal(5, 2, 50), np.full(50, 3.0), rng.normal(-1, 1, 50)])
    other = ref[:10] + 1.0
    other[0, 0] = np.nan
    ref_z, other_z = realism.normalise_on(ref, other)
    assert ref_z.shape == (50, 2) and other_z.shape == (9, 2)
    np.testing.assert_allclose(ref_z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(ref_z.std(axis=0), 1)
    np.testing.assert_allclose(other_z, ref_z[1:10] + 1.0 / ref[:, [0, 2]].std(axis=0))


def test_frechet_and_kid_are_near_zero_for_identical_sets_and_grow_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 5))
    assert realism.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert realism.frechet_distance(a, a + 1.0) == pytest.approx(5.0, rel=1e-6)  # ||mean shift||^2
    same, _ = realism.kid(a, a, n_subsets=10)
    shifted, shifted_std = realism.kid(a, a + 1.0, n_subsets=10)
    assert shifted > 1.0 and abs(same) < 0.05 * shifted and shifted_std >= 0
    # Singular covariances (fewer rows than features) still give a finite distance.
    assert np.isfinite(realism.frechet_distance(a[:4], a[4:8] + 1.0))


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    vals = [realism.kid(np.random.default_rng(s).standard_normal((100, 5)),
                        np.random.default_rng(1000 + s).standard_normal((100, 5)), n_subsets=5, seed=s)[0]
            for s in range(20)]
    shifted = realism.kid(np.random.default_rng(0).standard_normal((100, 5)),
                          np.random.default_rng(1).standard_normal((100, 5)) + 0.5, n_subsets=5)[0]
    assert min(vals) < 0 < max(vals)  # an unbiased estimate scatters around 0
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals)) + 1e-3
    assert abs(np.mean(vals)) < 0.1 * shifted


def test_background_fidelity_only_sees_pixels_outside_the_dilated_mask():
    rng = np.random.default_rng(0)
    bg = np.clip(rng.normal(-0.6, 0.2, (3, SIZE, SIZE)), -1, 1)
    masks = np.stack([disc_mask(5)] * 3)
    perfect = realism.background_fidelity(bg, bg, masks)
    assert perfect == {"l1": 0.0, "ssim": pytest.approx(1.0)}
    inside_only = np.where(masks > 0, 0.9, bg)
    edited = realism.background_fidelity(inside_only, bg, masks, dilate=5)
    assert edited["l1"] == 0.0 and edited["ssim"] == pytest.approx(1.0)
    noisy = realism.background_fidelity(np.clip(bg + rng.normal(0, 0.2, bg.shape), -1, 1), bg, masks)
    assert noisy["l1"] > 0.05 and noisy["ssim"] < 0.9


def test_realism_on_drawn_nodules():
    rng = np.random.default_rng(0)
    radii = rng.uniform(4, 9, 24)
    real_m = np.stack([disc_mask(r) for r in radii])
    real_i = np.stack([slice_with(m, v, 20.0, seed=i) for i, (m, v) in enumerate(zip(real_m, rng.uniform(-600, 0, 24)))])
    same = realism.realism(real_i, real_m, real_i, real_m)
    assert same["frechet_radiomic"] == pytest.approx(0.0, abs=1e-6)
    assert same["empty_mask_fraction"] == 0.0 and same["mask_area_ratio"] == pytest.approx(1.0)
    small_m = np.stack([disc_mask(r / 2) for r in radii])
    small_m[:6] = 0  # a quarter of the synthetic masks empty
    small_i = np.where(small_m > 0, real_i, LUNG)
    other = realism.realism(real_i, real_m, small_i, small_m)
    assert other["empty_mask_fraction"] == 0.25 and other["mask_area_ratio"] < 0.3
    assert other["frechet_radiomic"] > 10 * max(same["frechet_radiomic"], 1.0)
    assert other["kid_radiomic"] > abs(same["kid_radiomic"]) + 3 * same["kid_radiomic_std"]
    none = realism.realism(real_i, real_m, small_i, np.zeros_like(small_m))
    assert np.isnan(none["frechet_radiomic"]) and none["empty_mask_fraction"] == 1.0


# ---------------------------------------------------------------------------------------------
# Conditioning


def test_retrieval_perfect_conditioner_and_random_one():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((30, 6))
    perfect = conditioning.retrieval(real + 0.01 * rng.standard_normal(real.shape), real, n_perm=200)
    assert perfect["top1"] == 1.0 and perfect["top5"] == 1.0 and perfect["n_subjects"] == 30
    assert perfect["chance_top1"] == pytest.approx(1 / 30) and perfect["chance_top5"] == pytest.approx(5 / 30)
    assert perfect["p_top1"] < 0.01 and perfect["p_top5"] < 0.01
    random = conditioning.retrieval(rng.standard_normal(real.shape), real, n_perm=200)
    assert random["top1"] < 0.3 and random["p_top1"] > 0.05 and random["p_top5"] > 0.05
    # A conditioner that ignores the genes (every synthetic row identical) is not rewarded for ties.
    collapsed = conditioning.retrieval(np.zeros_like(real), real, n_perm=50)
    assert collapsed["top1"] <= 1 / 30


# ---------------------------------------------------------------------------------------------
# Codes


def test_linear_probe_encoded_program_and_random_code():
    rng = np.random.default_rng(0)
    code = rng.standard_normal((80, 4))
    program = code @ np.array([1.0, -2.0, 0.5, 0.0])
    res = codes.linear_probe(code, np.column_stack([program, rng.standard_normal(80)]), n_perm=20)
    assert res["r2"][0] > 0.99 and res["p"][0] <= 1 / 21 + 1e-12
    assert res["r2"][1] < 0.05 and res["null_mean"].shape == (2,)
    random = codes.linear_probe(rng.standard_normal((80, 4)), program, n_perm=20)
    assert random["r2"][0] < 0.05 and random["p"][0] > 0.05
    # More folds than rows: lowered to leave-one-out rather than failing.
    assert codes.linear_probe(code[:4], program[:4], n_splits=10, n_perm=0)["r2"].shape == (1,)


def test_cluster_codes_and_pca_codes():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]])
    truth_labels = np.repeat(np.arange(3), 20)
    labels, silhouette = codes.cluster_codes(centres[truth_labels] + rng.standard_normal((60, 2)), 3)
    assert adjusted_rand_score(truth_labels, labels) == 1.0 and silhouette > 0.7
    assert codes.pca_codes(rng.standard_normal((10, 50)), 20).shape == (10, 9)
    assert codes.pca_codes(rng.standard_normal((30, 3)), 20).shape == (30, 3)


# ---------------------------------------------------------------------------------------------
# Radiogenomic map


def test_spearman_matrix_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((25, 3)), rng.standard_normal((25, 2))
    x[:5, 0] = 1.0  # ties
    expected = stats.spearmanr(x, y).statistic[:3, 3:]
    np.testing.assert_allclose(radiomap.spearman_matrix(x, y), expected, atol=1e-12)


def test_association_map_finds_a_planted_link_and_few_false_ones():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((60, 5))
    x = rng.standard_normal((60, 20))
    x[:, 0] = feats[:, 2] + 0.3 * rng.standard_normal(60)
    amap = radiomap.association_map(x, feats, row_names=[f"c{i}" for i in range(20)],
                                    col_names=[f"f{j}" for j in range(5)], n_perm=200)
    assert amap.rho.shape == amap.p.shape == amap.q.shape == amap.significant.shape == (20, 5)
    assert amap.significant[0, 2] and amap.rho[0, 2] > 0.8
    assert not amap.significant[0, 0] and not amap.significant[5, 3]
    assert amap.q[0, 2] == amap.q.min()
    # Pure noise: false positives are rare (BH under the global null) and p-values ~uniform.
    fpr, mean_p = [], []
    for seed in range(5):
        noise_rng = np.random.default_rng(100 + seed)
        noise = radiomap.association_map(noise_rng.standard_normal((60, 20)), noise_rng.standard_normal((60, 5)),
                                         row_names=list("abcdefghijklmnopqrst"), col_names=list("vwxyz"),
                                         n_perm=100, seed=seed)
        fpr.append(noise.significant.mean())
        mean_p.append(noise.p.mean())
    assert np.mean(fpr) <= 0.01
    assert 0.4 < np.mean(mean_p) < 0.6


def test_association_map_p_values_match_a_brute_force_permutation_count():
    rng = np.random.default_rng(3)
    x, feats = rng.standard_normal((15, 3)), rng.standard_normal((15, 2))
    x[:, 1] += feats[:, 0]
    names = dict(row_names=list("abc"), col_names=list("uv"))
    rho = stats.spearmanr(x, feats).statistic[:3, 3:]
    perm_rng = np.random.default_rng(7)
    nulls = np.stack([stats.spearmanr(x[perm_rng.permutation(15)], feats).statistic[:3, 3:] for _ in range(50)])
    pooled = radiomap.association_map(x, feats, n_perm=50, seed=7, **names)
    cell = radiomap.association_map(x, feats, n_perm=50, seed=7, null="cell", **names)
    np.testing.assert_allclose(pooled.rho, rho, atol=1e-12)
    expected_pooled = (1 + (np.abs(nulls).ravel()[None, None, :] >= np.abs(rho)[..., None] - 1e-9).sum(-1)) / (1 + nulls.size)
    np.testing.assert_allclose(pooled.p, expected_pooled)
    np.testing.assert_allclose(cell.p, (1 + (np.abs(nulls) >= np.abs(rho) - 1e-9).sum(0)) / 51)


def _modules(n: int, seed: int, per_module: int = 12, nuisance: int = 60):
    """Genes (N, G) from 4 programs (modules) plus nuisance genes on 3 shared nuisance factors."""
    rng = np.random.default_rng(seed)
    programs = rng.standard_normal((n, 4))
    h = rng.standard_normal((n, 3))
    module_genes = np.repeat(programs, per_module, axis=1) * rng.uniform(0.7, 1.2, 4 * per_module)
    nuis = h[:, rng.integers(0, 3, nuisance)] * rng.uniform(0.5, 1.0, nuisance)
    genes = np.hstack([module_genes, nuis]) + 0.6 * rng.standard_normal((n, 4 * per_module + nuisance))
    gene_programs = [p for p in ("size", "density", "irregularity", "texture") for _ in range(per_module)]
    return programs, genes, gene_programs + [None] * nuisance


def test_metagenes_recover_planted_modules():
    _, genes, gene_programs = _modules(60, seed=0)
    labels, expression = radiomap.metagenes(genes, 7)
    module = np.array([g is not None for g in gene_programs])
    assert adjusted_rand_score(np.array(gene_programs, dtype=object)[module].astype(str), labels[module]) > 0.8
    assert expression.shape == (60, 7) and set(labels) == set(range(7))


def test_classical_pipeline_recovers_the_simulated_radiogenomic_map():
    programs, genes, gene_programs = _modules(60, seed=1)
    names = ["size", "density", "irregularity", "texture"]
    rng = np.random.default_rng(2)
    # Phenotype features: monotone (not linear) functions of the programs plus noise, and a noise feature.
    phenotype = np.column_stack([np.exp(programs[:, 0]), programs[:, 1] ** 3, -programs[:, 2], np.tanh(programs[:, 3])])
    feats = np.column_stack([phenotype + 0.3 * rng.standard_normal(phenotype.shape), rng.standard_normal(60)])
    links = np.array([[g == n for n in names] for g in gene_programs]).ravel()
    labels, amap = radiomap.classical_pipeline(genes, feats, feature_names=names + ["noise"], n_metagenes=8, n_perm=200)
    assert amap.row_names == [f"metagene_{k}" for k in range(8)] and amap.col_names[-1] == "noise"
    # A gene scored by its metagene's |rho| ranks the true links first, as does each gene's own |rho|.
    assert roc_auc_score(links, np.abs(amap.rho[labels][:, :4]).ravel()) > 0.9
    assert roc_auc_score(links, np.abs(radiomap.spearman_matrix(genes, feats[:, :4])).ravel()) > 0.9
    assert amap.significant[:, :4].any(axis=0).all() and not amap.significant[:, 4].any()
    probe = truth.program_probe(programs, programs, names, n_perm=10)
    assert set(probe) == {f"probe_{k}/{n}" for k in ("r2", "p") for n in names}
    assert all(probe[f"probe_r2/{n}"] > 0.99 for n in names)
    pca = truth.program_probe(codes.pca_codes(genes, 8), programs, names, n_perm=10)
    assert all(pca[f"probe_r2/{n}"] > 0.3 for n in names)


def test_nodule_measures_area_and_mean_inside():
    from radiogen.evaluation.truth import nodule_measures

    images = np.full((2, 3, 4, 4), -1.0)
    masks = np.zeros((2, 3, 4, 4))
    masks[0, 0, :2, :3], images[0, 0, :2, :3] = 0.9, 0.5       # 6 pixels at 0.5
    masks[0, 1, :, 0], images[0, 1, :, 0] = 0.5, [0.0, 0.3, 0.6, 0.3]  # 4 pixels at the 0.5 threshold: too few
    masks[0, 1, 0, 1], images[0, 1, 0, 1] = 0.5, 0.3            # a 5th: enough
    masks[1, 2, 0, 0] = 0.49                                     # below the threshold: empty
    out = nodule_measures(images, masks)
    assert out.shape == (2, 3, 4)
    np.testing.assert_allclose(out[0, 0, :2], [6, 0.5])
    np.testing.assert_allclose(out[0, 1, :2], [5, 0.3])
    assert out[1, 2, 0] == 0 and np.isnan(out[1, 2, 1:]).all()


def test_program_response_follows_the_programs_and_flags_the_decoy():
    from radiogen.evaluation.truth import program_response

    rng = np.random.default_rng(0)
    programs = rng.normal(size=(40, 4))                          # size, density, irregularity, texture
    names = ["size", "density", "irregularity", "texture"]
    follows = np.stack([np.exp(programs[:, 0]), programs[:, 1] * 2 + 1], axis=1)  # monotone in each program
    res = program_response(follows, programs, names)
    assert res["response/size"] == pytest.approx(1.0) and res["response/density"] == pytest.approx(1.0)
    assert res["response/decoy"] < 0.4
    decoyed = np.stack([-programs[:, 3], programs[:, 1]], axis=1)  # area driven by the texture program
    res = program_response(decoyed, programs, names)
    assert res["response/decoy"] == pytest.approx(1.0) and abs(res["response/size"]) < 0.4
    constant = np.ones((40, 2))
    assert program_response(constant, programs, names) == {"response/size": 0.0, "response/density": 0.0,
                                                           "response/decoy": 0.0}
    with_nan = follows.copy()
    with_nan[:38, 1] = np.nan                                   # 2 subjects left: too few for a rank
    assert np.isnan(program_response(with_nan, programs, names)["response/density"])
