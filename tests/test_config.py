"""Every shipped YAML loads; bad keys, types, values and combinations are rejected with helpful messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from radiogen.config import ConfigError, ExperimentConfig, from_dict, load_config, to_dict

from .helpers import REPO

ABLATIONS = sorted(p for p in (REPO / "ablations").glob("*.yaml") if not p.name.startswith("sweep_"))
# sweep_*.yaml are sweep files, not experiments (tests/test_search_space.py loads them)


def test_ablations_exist():
    assert {p.stem for p in ABLATIONS} >= {"paper", "mcgan", "tiny"}


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: p.name)
def test_every_ablation_yaml_loads(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg  # round trip through plain data


def test_paper_defaults_match_design():
    cfg = load_config(REPO / "ablations" / "paper.yaml")
    assert cfg == ExperimentConfig()  # paper.yaml spells out the dataclass defaults
    assert (cfg.data.image_size, cfg.data.n_genes, cfg.generator.code_dim, cfg.generator.noise_dim) == (128, 5172, 128, 10)
    assert (cfg.loss.lambda_l1, cfg.loss.erosion, cfg.optim.lr_G, cfg.optim.beta1, cfg.train.batch_size) == (100, 5, 1e-4, 0.5, 16)
    assert load_config(REPO / "ablations" / "mcgan.yaml").generator.arch == "mcgan"


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, message", [
    ("loss:\n  lamda_l1: 5\n", r"unknown key 'loss.lamda_l1'; did you mean 'lambda_l1'\?.*Allowed keys in loss: .*erosion"),
    ("generatr:\n  depth: 3\n", r"unknown key 'generatr'; did you mean 'generator'"),
    ("train:\n  lr: 1\n", r"unknown key 'train.lr'\. Allowed keys in train: .*, augment\.$"),
    ("generator:\n  code_dim: big\n", r"generator.code_dim: must be an integer, got 'big'"),
    ("generator:\n  code_dim: 1.5\n", r"generator.code_dim: must be an integer"),
    ("generator:\n  fusion: gated\n", r"generator.fusion: must be one of 'paper', 'concat', 'concat_all', 'additive', got 'gated'"),
    ("generator:\n  final_blend: 1\n", r"generator.final_blend: must be true/false"),
    ("generator:\n  fusion_levels: 9\n", r"generator.fusion_levels: must be between 1 .* and depth \+ 1 = 5"),
    ("loss:\n  erosion: 4\n", r"loss.erosion: must be an odd size"),
    ("loss:\n  lambda_l1: -1\n", r"loss.lambda_l1: must be >= 0"),
    ("loss:\n  weight_I: 0\n  weight_IS: 0\n  weight_ISG: 0\n", r"at least one discriminator head"),
    ("data:\n  image_size: 100\n", r"generator.depth: data.image_size=100 is not divisible by 2\*\*4=16"),
    ("train:\n  batch_size: 1\n", r"train.batch_size: must be >= 2 \(mismatched tuples"),
    ("train:\n  precision: fp16\n", r"train.precision: must be one of 'auto', 'fp32', 'bf16'"),
    ("loss: 3\n", r"loss: expected a mapping of LossConfig fields"),
    ("loss:\n  erosion: 3\n  erosion: 5\n", r"duplicate key 'erosion' at line 3"),
    ("- a\n- b\n", r"expected a mapping at the top level"),
])
def test_bad_files_are_rejected_with_helpful_messages(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_a_duplicate_key_in_an_experiment_file_is_refused_with_the_file_and_line(tmp_path):
    path = write(tmp_path, "name: x\noptim:\n  lr_G: 1e-4\n  lr_D: 1e-4\n  lr_G: 2e-4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "duplicate key 'lr_G' at line 5" in str(err.value)
    with pytest.raises(ConfigError, match="duplicate key 'a' at line 1"):
        load_config(REPO / "ablations" / "paper.yaml", ["name={a: 1, a: 2}"])


def test_integers_and_yaml11_exponents_are_accepted_as_floats(tmp_path):
    cfg = load_config(write(tmp_path, "loss:\n  lambda_l1: 50\noptim:\n  lr_G: 2e-4\n"), ["optim.lr_D=3E-5"])
    assert cfg.loss.lambda_l1 == 50.0 and isinstance(cfg.loss.lambda_l1, float)
    assert (cfg.optim.lr_G, cfg.optim.lr_D) == (2e-4, 3e-5)
    with pytest.raises(ConfigError, match="optim.lr_G: must be a number, got '2e-4x'"):
        load_config(write(tmp_path, "optim:\n  lr_G: 2e-4x\n"))


def test_overrides(tmp_path):
    cfg = load_config(REPO / "ablations" / "paper.yaml",
                      ["loss.lambda_l1=50", "generator.fusion=concat", "generator.fusion_levels=null", "name=x"])
    assert (cfg.loss.lambda_l1, cfg.generator.fusion, cfg.generator.fusion_levels, cfg.name) == (50.0, "concat", None, "x")
    with pytest.raises(ConfigError, match="--set expects section.key=value"):
        load_config(REPO / "ablations" / "paper.yaml", ["loss.lambda_l1"])
    with pytest.raises(ConfigError, match="unknown key 'loss.lambda'"):
        load_config(REPO / "ablations" / "paper.yaml", ["loss.lambda=3"])
    with pytest.raises(ConfigError, match="'name' is a value, not a section"):
        load_config(REPO / "ablations" / "paper.yaml", ["name.x=3"])


def test_extends_merges_and_detects_loops(tmp_path):
    write(tmp_path, "name: base\nloss:\n  lambda_l1: 10\n  erosion: 3\n", "base.yaml")
    cfg = load_config(write(tmp_path, "extends: base.yaml\nname: child\nloss:\n  erosion: 7\n"))
    assert (cfg.name, cfg.loss.lambda_l1, cfg.loss.erosion) == ("child", 10.0, 7)
    write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError, match="'extends' loop: a.yaml -> b.yaml -> a.yaml"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "name: !!python/object/apply:os.system ['true']\n"))


def _enum_fields() -> list[tuple[str, str, str]]:
    """(section, field, value) for every value of every enum (Literal) field of every config slice."""
    import dataclasses
    import typing

    out = []
    for section, cls in typing.get_type_hints(ExperimentConfig).items():
        if not dataclasses.is_dataclass(cls):
            continue
        for name, tp in typing.get_type_hints(cls).items():
            if typing.get_origin(tp) is typing.Literal:
                out += [(section, name, value) for value in typing.get_args(tp)]
    return out


ENUMS = _enum_fields()


def test_enum_fields_are_found():
    assert ("generator", "adain", "off") in ENUMS and ("generator", "fusion", "paper") in ENUMS
    assert len({(s, f) for s, f, _ in ENUMS}) >= 6


@pytest.mark.parametrize("section,key,value", ENUMS, ids=lambda x: str(x))
def test_every_enum_value_is_accepted_from_yaml_text(tmp_path, section, key, value):
    # Plain YAML scalars, as a user (or a sweep) writes them: `adain: off` is a YAML 1.1 boolean.
    path = write(tmp_path, f"extends: {REPO / 'ablations' / 'tiny.yaml'}\n{section}:\n  {key}: {value}\n")
    assert getattr(getattr(load_config(path), section), key) == value
    assert getattr(getattr(load_config(REPO / "ablations" / "tiny.yaml", [f"{section}.{key}={value}"]), section),
                   key) == value


def test_yaml_boolean_is_not_taken_for_an_enum_without_that_word(tmp_path):
    with pytest.raises(ConfigError, match="generator.fusion: must be one of"):
        load_config(REPO / "ablations" / "tiny.yaml", ["generator.fusion=off"])
