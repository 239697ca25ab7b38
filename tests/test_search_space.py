"""Sweep files: the shipped ones load, conditional parameters are drawn only where they exist, and every kind of
search-space error is refused before anything runs, with a message naming the problem."""

from __future__ import annotations

import optuna
import pytest
import yaml

from radiogen.search_space import SearchSpaceError, sample, trial_config
from radiogen.sweep_file import load_sweep

from .helpers import REPO

TINY = str(REPO / "ablations" / "tiny.yaml")
SHIPPED = sorted((REPO / "ablations").glob("sweep_*.yaml"))


def write(tmp_path, **fields) -> str:
    data = {"experiment": TINY, "objectives": [{"metric": "val/l1_background", "mode": "min"}], "max_steps": 12,
            "report_every": 3, "trials": 3, "space": {"loss.lambda_l1": {"loguniform": [1, 300]}}} | fields
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_shipped_sweep_files_load_in_both_modes():
    assert {p.name for p in SHIPPED} >= {"sweep_lambda_code.yaml", "sweep_fusion.yaml"}
    for path in SHIPPED:
        text = path.read_text()
        for mode in [m for m, section in (("search", "space:"), ("grid", "grid:")) if section in text]:
            spec = load_sweep(path, mode=mode)
            trials = spec.trials if mode == "search" else len(spec.grid.variants) * len(spec.grid.seeds)
            # CPU-sized: minutes on 2 cores (direct trials, about 0.05 s a tiny-config step on one core); the
            # ablation study and its search are the long sweeps (their budgets in the README)
            budget = {"sweep_ablation.yaml": 120_000, "sweep_stable_search.yaml": 48_000}.get(path.name, 8000)
            assert spec.mode == mode and spec.max_steps * trials <= budget, path.name
    lam = load_sweep(REPO / "ablations" / "sweep_lambda_code.yaml")
    assert [p.kind for p in lam.space] == ["loguniform", "choice"] and lam.multi_objective
    fusion = load_sweep(REPO / "ablations" / "sweep_fusion.yaml")
    assert fusion.grid.reference == "full" and len(fusion.grid.seeds) >= 2
    assert {"full", "no_adain", "concat", "no_final_blend", "no_D_ISG", "mcgan"} <= set(fusion.grid.variants)


def test_the_ablation_study_lists_every_variant_of_the_design_on_three_seeds_and_narrows_for_a_quick_run():
    study = load_sweep(REPO / "ablations" / "sweep_ablation.yaml")  # every variant's config is built here
    assert study.mode == "grid" and study.grid.reference == "stable" and len(study.grid.seeds) >= 3
    assert {"stable", "paper", "fusion_additive", "fusion_concat", "fusion_concat_all", "adain_off",
            "adain_before_gate", "no_final_blend", "no_D_I", "no_D_IS", "no_D_ISG", "code_128", "r1", "spectral_norm",
            "diffaugment", "translation", "aux_genes_3", "mcgan"} <= set(study.grid.variants)
    assert {o.metric for o in study.objectives} == {
        "val/frechet_over_floor", "val/speckle_ratio", "val/response/decoy", "val/map_objective",
        *(f"val/response/{p}" for p in ("size", "density", "irregularity", "texture"))}
    quick = load_sweep(REPO / "ablations" / "sweep_ablation.yaml", max_steps=4, variants="stable,mcgan", seeds="0,1")
    assert list(quick.grid.variants) == ["stable", "mcgan"] and list(quick.grid.seeds) == [0, 1]
    assert quick.max_steps == 4 and quick.report_every == 4
    with pytest.raises(SearchSpaceError, match="include the reference 'stable'"):
        load_sweep(REPO / "ablations" / "sweep_ablation.yaml", variants="paper,mcgan")
    with pytest.raises(SearchSpaceError, match="not among the file's variants"):
        load_sweep(REPO / "ablations" / "sweep_ablation.yaml", variants="stable,no_such")


def test_yaml_bool_words_become_the_config_enum_words():
    """`off` reads as False in YAML 1.1; the space holds what the config makes of it, so Optuna and MLflow see 'off'."""
    spec = load_sweep(REPO / "ablations" / "sweep_fusion.yaml", mode="search")
    adain = next(p for p in spec.space if p.key == "generator.adain")
    assert adain.choices == ("affine", "off")


def test_conditional_parameters_exist_only_for_their_variants():
    spec = load_sweep(REPO / "ablations" / "sweep_fusion.yaml", mode="search")
    seen = []
    for arch, fusion in [("mcgan", None), ("proposed", "concat"), ("proposed", "paper"), ("proposed", "concat_all")]:
        fixed = {"generator.arch": arch, "generator.final_blend": True, "loss.weight_ISG": 1.0,
                 "generator.adain": "affine", "generator.adain_position": "before_gate", "generator.fusion_levels": 2}
        if fusion:
            fixed["generator.fusion"] = fusion
        values = sample(optuna.trial.FixedTrial(fixed), spec.space)
        seen.append(set(values))
        cfg = trial_config(spec, values)  # every drawn combination builds
        assert cfg.generator.arch == arch and cfg.train.max_steps == spec.max_steps
    mcgan, concat, paper, concat_all = seen
    assert "generator.fusion" not in mcgan and "generator.final_blend" not in mcgan
    assert "generator.adain" not in concat and "generator.fusion_levels" not in concat
    assert {"generator.adain", "generator.adain_position", "generator.fusion_levels"} <= paper
    assert "generator.adain" in concat_all and "generator.adain_position" not in concat_all


def test_trial_config_applies_values_budget_and_seed():
    spec = load_sweep(REPO / "ablations" / "sweep_lambda_code.yaml")
    cfg = trial_config(spec, {"loss.lambda_l1": 7.5, "generator.code_dim": 64}, ["train.batch_size=4"])
    assert (cfg.loss.lambda_l1, cfg.generator.code_dim, cfg.train.batch_size) == (7.5, 64, 4)
    assert cfg.train.max_steps == spec.max_steps and cfg.train.seed == spec.seed and cfg.data.n_genes is None
    assert trial_config(spec, {}, seed=3).train.seed == 3


ERRORS = {
    "unknown parameter": ({"space": {"loss.lamda_l1": {"uniform": [1, 2]}}},
                          "space.loss.lamda_l1: unknown parameter"),
    "unknown section": ({"space": {"optimiser.lr_G": {"uniform": [1e-4, 2e-4]}}},
                        "space.optimiser.lr_G: unknown parameter"),
    "empty choice list": ({"space": {"generator.code_dim": {"choice": []}}},
                          "space.generator.code_dim.choice: the choice list is empty"),
    "reversed bounds": ({"space": {"loss.lambda_l1": {"loguniform": [300, 1]}}},
                        "space.loss.lambda_l1.loguniform: bounds are reversed"),
    "reversed int bounds": ({"space": {"generator.fusion_levels": {"int": [3, 1]}}},
                            "space.generator.fusion_levels.int: bounds are reversed"),
    "log range through 0": ({"space": {"loss.lambda_l1": {"loguniform": [0, 10]}}},
                            "needs low > 0"),
    "condition on a value the parent never takes": (
        {"space": {"generator.fusion": {"choice": ["paper", "concat"]},
                   "generator.adain_position": {"choice": ["after_gate", "before_gate"],
                                                "when": {"generator.fusion": "additive"}}}},
        "space.generator.adain_position.when: generator.fusion never takes ['additive']"),
    "condition on no parameter": (
        {"space": {"generator.adain_position": {"choice": ["after_gate"], "when": {"generator.fusion": "paper"}}}},
        "'generator.fusion' is not a parameter of this search space"),
    "value the config rejects": ({"space": {"generator.fusion_levels": {"int": [1, 9]}}},
                                 "space.generator.fusion_levels: the config rejects 9"),
    "choice the config rejects": ({"space": {"generator.fusion": {"choice": ["paper", "sum"]}}},
                                  "space.generator.fusion: the config rejects 'sum'"),
    "negative weight": ({"space": {"loss.lambda_l1": {"uniform": [-1, 5]}}},
                        "space.loss.lambda_l1: the config rejects -1"),
    "two kinds": ({"space": {"loss.lambda_l1": {"uniform": [1, 2], "choice": [1]}}}, "give exactly one of"),
    "budget swept": ({"space": {"train.max_steps": {"int": [1, 5]}}}, "set by the sweep"),
    "unknown top-level key": ({"trails": 3}, "unknown key(s) ['trails']"),
    "metric nobody reports": ({"objectives": [{"metric": "fid", "mode": "min"}]}, "'fid' is not a reported metric"),
    "bad mode": ({"objectives": [{"metric": "val/map_quality", "mode": "maximise"}]}, "must be min or max"),
    "grace period past the budget": ({"asha": {"grace_period": 12}}, "asha.grace_period: 12 must be below max_steps"),
    "grid variant with an unknown key": (
        {"mode": "grid", "grid": {"seeds": [0, 1], "variants": {"full": {}, "bad": {"generator.fusoin": "concat"}}}},
        "grid.variants.bad: unknown parameter"),
    "grid reference missing": ({"mode": "grid", "grid": {"reference": "paper", "variants": {"full": {}}}},
                               "grid.reference: 'paper' is not one of the variants"),
    "repeated seed": ({"mode": "grid", "grid": {"seeds": [1, 1], "variants": {"full": {}}}}, "repeats a seed"),
    "missing experiment": ({"experiment": "nope.yaml"}, "does not exist"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_search_space_errors_name_the_problem(tmp_path, case):
    fields, message = ERRORS[case]
    with pytest.raises(SearchSpaceError) as err:
        load_sweep(write(tmp_path, **fields))
    assert message in str(err.value)


def test_a_command_line_override_of_a_swept_parameter_is_refused(tmp_path):
    with pytest.raises(SearchSpaceError, match="--set loss.lambda_l1=5: loss.lambda_l1 is a parameter"):
        load_sweep(write(tmp_path), ["loss.lambda_l1=5"])
    with pytest.raises(SearchSpaceError, match="does not build: unknown key 'loss.lamda'"):
        load_sweep(write(tmp_path), ["loss.lamda=5"])


def test_spec_survives_the_json_round_trip_resume_relies_on():
    import json

    from radiogen.search_space import SweepSpec

    for mode in ("search", "grid"):
        spec = load_sweep(REPO / "ablations" / "sweep_fusion.yaml", mode=mode)
        assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_a_duplicate_key_in_a_sweep_file_is_refused_with_its_line(tmp_path):
    # An appended `max_steps: 5000` used to win silently over the file's own max_steps.
    text = (REPO / "ablations" / "sweep_lambda_code.yaml").read_text().replace(
        "experiment: tiny.yaml", f"experiment: {REPO / 'ablations' / 'tiny.yaml'}")
    path = tmp_path / "sweep.yaml"
    path.write_text(text + "max_steps: 5000\n")
    with pytest.raises(SearchSpaceError) as err:
        load_sweep(path)
    line = len(text.splitlines()) + 1
    assert str(path) in str(err.value) and f"duplicate key 'max_steps' at line {line}" in str(err.value)
    path.write_text(text)
    assert load_sweep(path).max_steps == 60  # the same file without the duplicate is read as before
