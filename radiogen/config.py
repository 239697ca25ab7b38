"""Typed experiment configuration: one frozen dataclass per component, loaded from YAML.

An experiment file maps onto `ExperimentConfig`; each component receives only its own slice.
Unknown keys, wrong types, values out of range and impossible combinations are errors that name
the key (`generator.code_dim`) and say what is allowed. Nothing is silently repaired.

A file may start from another with `extends: other.yaml` (resolved relative to the file);
command-line overrides use dotted keys: `--set loss.lambda_l1=50`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from .strict_yaml import DuplicateKey, parse_yaml, read_mapping

HEADS = ("I", "IS", "ISG")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and how to fix it."""


class _FieldError(ValueError):
    """Raised by a slice's checks; the loader prefixes the slice path to the field name."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise _FieldError(name, message)


@dataclass(frozen=True)
class DataConfig:
    """What the model sees of the data."""

    image_size: int = 128
    """Side of the square 2D slices in pixels (paper: VOIs resampled to 128x128)."""
    n_genes: int | None = 5172
    """Length of the gene-expression vector (paper: 5172 genes without NA); null = the count of the prepared
    dataset, filled in by `radiogen train` (commands without a dataset need a number)."""
    gene_norm: Literal["raw", "log_zscore"] = "log_zscore"
    """raw: expression used as given; log_zscore: log2(x+1), then z-score fitted on the training split."""

    def __post_init__(self) -> None:
        _require(self.image_size >= 8, "image_size", f"must be >= 8 pixels, got {self.image_size}")
        _require(self.n_genes is None or self.n_genes >= 1, "n_genes", f"must be >= 1 or null, got {self.n_genes}")


@dataclass(frozen=True)
class GeneratorConfig:
    """The generator: the paper's multi-conditional GAN (`proposed`) or the MC-GAN baseline."""

    arch: Literal["proposed", "mcgan"] = "proposed"
    """proposed: Xu et al. 2019 (fusion blocks + AdaIN); mcgan: the Park et al. 2018 baseline, which reads
    only base/max_channels, depth, code_dim, noise_dim and mask_activation (and loss.kl_weight); the
    proposed-only fields are ignored so one file can switch arch (e.g. --set generator.arch=mcgan)."""
    base_channels: int = 32
    """Channels of the full-resolution background feature; doubled at every stride-2 level."""
    max_channels: int = 512
    """Cap on channels at any level."""
    depth: int = 4
    """Number of stride-2 levels of the background encoder; synthesis starts at image_size / 2**depth."""
    gene_hidden: int = 512
    """Width of the hidden layer of the two-layer gene mapping network (proposed) ."""
    code_dim: int = 128
    """Size of the gene code phi(g) (paper Fig. 4: 128); the baseline's conditioning-augmentation code."""
    gene_noise: float = 0.0
    """Std of Gaussian noise added to each normalised gene at the input of the mapping network phi, in training only
    (proposed): the generator then cannot tie a phenotype to one training subject's exact vector and must read the
    gene modules as a whole, which carries over to unseen subjects (input noise acts as ridge regularisation).
    0 = none (the paper)."""
    gene_dropout: float = 0.0
    """Dropout on the gene vector at the input of the mapping network phi, in training only (proposed): each gene
    is zeroed with this probability. 0 = none (the paper)."""
    noise_dim: int = 10
    """Size of the N(0, 1) noise concatenated with the code to form the style; 0 = no noise."""
    fusion: Literal["paper", "concat", "concat_all", "additive"] = "paper"
    """paper: weight-map gating with '+' (object*w, AdaIN) and '-' (background*(1-w)) paths at every fused level;
    concat: MC-GAN-style bottleneck concatenation: background and synthetic features concatenated and
    convolved at the bottleneck only, no weight map, no AdaIN (fusion_levels, adain, adain_position ignored);
    concat_all: that concatenation at every fused level, followed by AdaIN;
    additive: object*w styled by AdaIN added to the unsuppressed background (no '-' path)."""
    adain: Literal["affine", "off"] = "affine"
    """affine: AdaIN with scale/bias from a learned affine of the style; off: no style modulation
    inside the fusion blocks (the gene then enters only through the start of synthesis)."""
    adain_position: Literal["after_gate", "before_gate"] = "after_gate"
    """Where AdaIN sits on the '+' path of paper/additive fusion. after_gate: AdaIN(o * w), the paper's order,
    which leaks gene style into the background (instance norm and the style's bias act on the whole map);
    before_gate: AdaIN(o) * w, the style reaches only the object region."""
    fusion_levels: int | None = None
    """How many resolutions, counted from the bottleneck upward, get a fusion block; None = all
    (depth + 1). Levels without one pass the synthetic feature straight to the upsampler."""
    final_blend: bool = True
    """Output image = background * (1 - mask) + synthesis * mask; False = the synthesis itself."""
    weight_activation: Literal["sigmoid", "tanh"] = "sigmoid"
    """Squashing of the fusion weight map: sigmoid or (tanh + 1) / 2."""
    mask_activation: Literal["sigmoid", "tanh"] = "sigmoid"
    """Squashing of the generated mask channel: sigmoid or (tanh + 1) / 2."""

    def __post_init__(self) -> None:
        for name in ("base_channels", "max_channels", "depth", "gene_hidden", "code_dim"):
            _require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _require(self.max_channels >= self.base_channels, "max_channels",
                 f"must be >= base_channels ({self.base_channels}), got {self.max_channels}")
        _require(self.gene_noise >= 0, "gene_noise", f"must be >= 0 (0 = none), got {self.gene_noise}")
        _require(0 <= self.gene_dropout < 1, "gene_dropout", f"must be in [0, 1) (0 = none), got {self.gene_dropout}")
        _require(self.noise_dim >= 0, "noise_dim", f"must be >= 0 (0 = no noise), got {self.noise_dim}")
        if self.fusion_levels is not None:
            _require(1 <= self.fusion_levels <= self.depth + 1, "fusion_levels",
                     f"must be between 1 (bottleneck only) and depth + 1 = {self.depth + 1} (all), "
                     f"or null for all; got {self.fusion_levels}")

    @property
    def n_fusion_levels(self) -> int:
        """Fusion blocks in use: 1 (the bottleneck) for concat, else fusion_levels or all depth + 1."""
        if self.fusion == "concat":
            return 1
        return self.depth + 1 if self.fusion_levels is None else self.fusion_levels

    @property
    def adain_mode(self) -> str:
        """The AdaIN the fusion blocks use: none for the bottleneck concatenation."""
        return "off" if self.fusion == "concat" else self.adain


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The three-head discriminator (D_I, D_IS, D_ISG); which heads exist follows the loss weights."""

    base_channels: int = 64
    """Channels after the first stride-2 convolution; doubled per level."""
    max_channels: int = 512
    """Cap on channels at any level."""
    depth: int = 4
    """Number of stride-2 convolutions in each encoder (paper default: 64 -> 512 in 4 levels)."""
    spectral_norm: bool = False
    """Spectral normalisation (Miyato et al. 2018) of every convolution of D, and no BatchNorm in D (its
    per-batch rescaling would undo the Lipschitz bound and couple the samples of an R1 gradient; the
    convolutions BN followed get a bias instead). False = the paper's D: BatchNorm, no parametrisation."""

    def __post_init__(self) -> None:
        for name in ("base_channels", "max_channels", "depth"):
            _require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _require(self.max_channels >= self.base_channels, "max_channels",
                 f"must be >= base_channels ({self.base_channels}), got {self.max_channels}")


@dataclass(frozen=True)
class LossConfig:
    """Least-squares GAN losses of the paper, per-head weights and the background L1."""

    weight_I: float = 1.0
    """Weight of the D_I(image) head in both D and G losses; 0 = head not built, not computed."""
    weight_IS: float = 1.0
    """Weight of the D_IS(image, mask) head; 0 = not computed (its encoder still serves D_ISG)."""
    weight_ISG: float = 1.0
    """Weight of the D_ISG(image, mask, code) head; 0 = not computed."""
    lambda_l1: float = 100.0
    """lambda of the background L1 between synthetic image and background input; 0 = off."""
    erosion: int = 5
    """Side of the square erosion applied to the generated background (1 - mask); 1 = none."""
    kl_weight: float = 2.0
    """Weight of the KL term of the baseline's conditioning augmentation (read by mcgan only); 0 = off."""
    aux_genes: float = 0.0
    """Weight of the auxiliary gene regression (AC-GAN style, Odena et al. 2017): a head on D_IS's features predicts
    the subject's normalised gene vector from (image, mask). D learns it on real tuples only (mean squared error);
    G is charged the same error on its fakes, so what the genes say about the nodule must be visible in what G
    draws. A direct, dense conditioning signal beside D_ISG's matched/mismatched game. 0 = off (head not built)."""
    r1_gamma: float = 0.0
    """R1 penalty on real data for D (Mescheder et al. 2018): D's loss gets gamma/2 * sum over the computed
    heads of E_b ||grad_x D_h(x, m, code)||^2, the gradient taken w.r.t. the real image x only (mask and code
    as they are), each sample's score summed over patch positions; reported unscaled as loss/D/r1.
    Computed every D step when > 0; 0 = off (the real image needs no gradient, nothing is computed)."""
    mask_to_d: Literal["soft", "hard"] = "soft"
    """G's mask as the discriminator heads see it (D and G step). soft: as G draws it, in [0, 1] (the paper);
    hard: binarised at 0.5 like the real masks, with a straight-through gradient (forward (m >= 0.5), backward
    identity), so D cannot tell fakes by mask softness alone. The background L1's mask is unaffected."""
    code_to_d: Literal["attached", "detached"] = "attached"
    """The gene code D_ISG is given in the G step. attached (default): G's own code phi(g) as G returns it,
    with its graph, so the ISG term's gradient reaches the mapping network both through the image and mask
    and directly through the code input (G may lower the loss by moving the code D sees instead of the
    image); detached: the same values without gradient, so phi learns only through what G draws.
    The D step always sees detached codes."""
    speckle: float = 0.0
    """Weight of a frequency-aware realism term: (log E_fake - log E_real)^2, E the batch's mean high-frequency
    energy (image minus its Gaussian-smoothed self, sigma 1 px, normalised over the mask) inside G's masks and
    inside the real masks (losses.speckle_gap). Reported as loss/G/speckle. 0 = off (the paper). It assumes real
    nodules with some texture: on perfectly flat ones (energy 0, e.g. the toy batch) its target is degenerate and it
    outweighs the rest of G's loss."""
    phi_group_lasso: float = 0.0
    """Weight of a group-lasso penalty on the gene mapping's input weights: sum over genes of the L2 norm of
    each gene's column of the first layer that reads the genes (phi's first layer; the baseline's conditioning
    augmentation). It drives whole genes out of phi, so among co-expressed genes the code can rest on the few
    that carry the signal (the `drivers` cohort design) instead of spreading over all of them as ridge does.
    Reported as loss/G/phi_group_lasso (the unweighted sum). 0 = off (the paper; not computed)."""

    def __post_init__(self) -> None:
        for name in ("weight_I", "weight_IS", "weight_ISG", "lambda_l1", "kl_weight", "aux_genes", "r1_gamma",
                     "speckle", "phi_group_lasso"):
            _require(getattr(self, name) >= 0, name, f"must be >= 0 (0 = term off), got {getattr(self, name)}")
        _require(self.erosion >= 1 and self.erosion % 2 == 1, "erosion",
                 f"must be an odd size >= 1 (1 = no erosion), got {self.erosion}")
        _require(any(getattr(self, f"weight_{h}") > 0 for h in HEADS), "weight_I",
                 "at least one discriminator head needs a weight > 0 (weight_I, weight_IS, weight_ISG)")

    @property
    def head_weights(self) -> dict[str, float]:
        """Weights of the heads that are computed, in the order I, IS, ISG."""
        return {h: getattr(self, f"weight_{h}") for h in HEADS if getattr(self, f"weight_{h}") > 0}


@dataclass(frozen=True)
class OptimConfig:
    """Adam for G and D (paper defaults from the authors' code)."""

    lr_G: float = 1e-4
    """Generator learning rate."""
    lr_D: float = 1e-4
    """Discriminator learning rate."""
    beta1: float = 0.5
    """Adam beta1."""
    beta2: float = 0.999
    """Adam beta2."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """constant: lr_G and lr_D throughout (the paper); cosine: both decay from their value to a tenth of it along a
    half cosine over train.max_steps (a function of the step alone, so a resumed run continues the curve)."""
    grad_clip: float = 0.0
    """Clip each model's gradient norm to this value; 0 = no clipping (norms are still reported)."""
    adam: Literal["fused", "foreach", "for-loop"] = "fused"
    """Implementation of Adam's update (same maths, different kernels). fused: one fused kernel per parameter
    group (torch's fused=True; CUDA and CPU, where it matches the others to float rounding); foreach: multi-tensor
    kernels (what torch picks by default on CUDA, so the research loop's; ablations/reference.yaml); for-loop: one
    parameter at a time (torch's CPU default). A checkpoint's optimiser state loads into any of them: the
    optimiser keeps the implementation it was built with."""

    def __post_init__(self) -> None:
        for name in ("lr_G", "lr_D"):
            _require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            _require(0 <= getattr(self, name) < 1, name, f"must be in [0, 1), got {getattr(self, name)}")
        _require(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0 = off), got {self.grad_clip}")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop.

    The GPU fast path is precision auto (bf16 autocast on CUDA), channels_last, optim.adam fused, cudnn_benchmark
    and optionally compile, at a batch that fills the device; ablations/reference.yaml reproduces the research
    loop's settings (fp32, eager, batch 16, contiguous memory, foreach Adam, no cuDNN autotuning) to compare
    against (`radiogen bench`, stage gpu).
    """

    batch_size: int = 16
    """Samples per step per worker (paper: 16 per GPU)."""
    max_steps: int = 20000
    """Training steps (one D step and one G step each)."""
    seed: int = 0
    """Seed of weights, noise and data order."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of G's weights (G_ema: validation, figures, the logged model),
    ramped up as min(ema_decay, (1 + step) / (10 + step)); 0 = G_ema is G. G_ema's BatchNorm statistics
    are recomputed on recent training batches before each use, not copied from G."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 elsewhere; fp32; bf16: autocast to bfloat16 on any device."""
    channels_last: bool = False
    """Run both networks in channels_last memory format (faster convolutions on recent GPUs)."""
    compile: Literal["off", "default", "max-autotune"] = "off"
    """torch.compile of G's and D's forward (and, through AOTAutograd, their backward), applied in place with
    nn.Module.compile() before any DDP wrapping, as torch documents for DDP; checkpoints keep the plain
    state_dict keys. default: inductor's default mode; max-autotune: its autotuned kernels without CUDA graphs
    ("max-autotune-no-cudagraphs": D runs three times per step with earlier outputs still awaiting backward);
    off: eager (the research loop's). The first steps pay the compilation (about a minute or more)."""
    cudnn_benchmark: bool = True
    """Let cuDNN time its convolution algorithms on the first step of each input shape and keep the fastest
    (torch.backends.cudnn.benchmark, a process-wide switch set by build_training; shapes are fixed here).
    False = cuDNN's heuristic choice, the research loop's setting. No effect without cuDNN."""
    augment: Literal["off", "diffaugment", "translation"] = "off"
    """diffaugment: DiffAugment (Zhao et al. 2020) on every D input, real and fake, in the D and the G step:
    a random translation (up to 1/8 of the side, edge padding) and a cutout (half the side, set to 0),
    one draw per sample applied alike to the image and its mask(s); no colour transforms (intensity carries
    the density the genes drive). translation: the random translation alone (no cutout, which can hide most of a
nodule and with it what the genes drive). The background L1 is not augmented. off: D sees the tuples as they are."""

    def __post_init__(self) -> None:
        _require(self.batch_size >= 2, "batch_size",
                 f"must be >= 2 (mismatched tuples need another subject in the batch), got {self.batch_size}")
        _require(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        _require(0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: one slice per component."""

    name: str = "paper"
    """Name of the experiment / ablation (used for tags and run names)."""
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        size, g, d = self.data.image_size, self.generator, self.discriminator
        for where, depth in (("generator.depth", g.depth), ("discriminator.depth", d.depth)):
            if size % 2**depth != 0:
                raise _FieldError(where, f"data.image_size={size} is not divisible by 2**{depth}={2**depth}; "
                                         f"use an image size that is a multiple of {2**depth} or a smaller depth")


# ---------------------------------------------------------------------------------------------
# Typed conversion from plain data (YAML, --set, a checkpoint) to the dataclasses above.


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in typing.get_args(tp))
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


_YAML_BOOLS = {"on": True, "yes": True, "y": True, "true": True,
               "off": False, "no": False, "n": False, "false": False}
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _convert(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        # YAML 1.1 reads on/off/yes/no as booleans; an enum that has such a word means the word.
        if isinstance(value, bool):
            words = [c for c in choices if isinstance(c, str) and _YAML_BOOLS.get(c.lower()) is value]
            if len(words) == 1:
                return words[0]
        if value in choices and type(value) is type(choices[0]):
            return value
    elif origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _convert(arg, value, key)
                except ConfigError:
                    pass
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads 1e-4 (no dot) as a string; it is unambiguously the number the user wrote.
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: must be {_describe(tp)}, got {value!r}")


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and the slice's own rules."""
    label = where or "config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else "."
            raise ConfigError(f"unknown key '{where + '.' if where else ''}{key}'{hint} "
                              f"Allowed keys in {label}: {', '.join(names)}.")
    kwargs = {k: _convert(hints[k], v, f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except _FieldError as err:
        full = err.name if "." in err.name else f"{where + '.' if where else ''}{err.name}"
        raise ConfigError(f"{full}: {err.message}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (YAML-, JSON- and torch.load(weights_only)-safe)."""
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------
# YAML files, `extends` and --set overrides.


def _deep_merge(base: dict, top: Mapping) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read an experiment file, resolving `extends:` chains, into one plain dict."""
    path = Path(path).resolve()
    if path in _chain:
        raise ConfigError(f"'extends' loop: {' -> '.join(p.name for p in (*_chain, path))}")
    data = read_mapping(path, ConfigError, "config file")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must be a file name, got {parent!r}")
    return _deep_merge(read_yaml(path.parent / parent, (*_chain, path)), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'loss.lambda_l1=50' -> (['loss', 'lambda_l1'], 50); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects section.key=value (e.g. loss.lambda_l1=50), got {text!r}")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except DuplicateKey as err:
        raise ConfigError(f"--set {text!r}: {err}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_values(data: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `data` with dotted keys (`section.field`) set to Python values, as they are: the path a swept
    value takes into a trial's config (no string round trip; `from_dict` then checks it like any YAML value)."""
    out = copy.deepcopy(data)
    for key, value in values.items():
        path, node = key.split("."), out
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: '{'.'.join(path[:i + 1])}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`data` with `--set section.key=VALUE` strings applied (each VALUE read as YAML)."""
    out = data
    for text in overrides:
        path, value = parse_override(text)
        try:
            out = set_values(out, {".".join(path): value})
        except ConfigError as err:
            raise ConfigError(f"--set {text}: {str(err).split(': ', 1)[1]}") from None
    return out if overrides else copy.deepcopy(data)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load an experiment YAML (with `extends`) and apply `section.key=value` overrides."""
    data = apply_overrides(read_yaml(path), list(overrides))
    return from_dict(ExperimentConfig, data)


def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
