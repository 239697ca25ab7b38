"""What `radiogen sweep` searches over, once read: the sweep's typed spec (objectives, parameters, ASHA, grid) and
how a trial's config is built from it. Reading and checking a sweep file is radiogen/sweep_file.py.

This module is pure Python: Tune, Optuna and MLflow live in ray_jobs/sweep*.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .config import ExperimentConfig, apply_overrides, from_dict, read_yaml, set_values

KINDS = ("loguniform", "uniform", "int", "choice")
MODES = ("min", "max")
SWEEP_MODES = ("search", "grid")
METRIC_PREFIXES = ("val/", "loss/")
"""What a trial reports to the scheduler: the validation metrics and the training losses of each checkpoint."""
FIXED_BY_SWEEP = ("train.max_steps",)
"""Keys the sweep itself sets (max_steps); train.seed is set by `seed` (search) or the grid's seeds."""
TOP_KEYS = ("experiment", "name", "mode", "objectives", "max_steps", "report_every", "trials", "seed", "asha", "set",
            "space", "points_to_evaluate", "grid")


class SearchSpaceError(ValueError):
    """A sweep file that cannot run; the message names the key or parameter and what is wrong."""


@dataclass(frozen=True)
class Objective:
    metric: str
    """A reported metric, e.g. val/frechet_radiomic."""
    mode: str
    """min or max."""


@dataclass(frozen=True)
class Param:
    """One searched config value."""

    key: str
    """Dotted config key, e.g. loss.lambda_l1."""
    kind: str
    """loguniform, uniform, int or choice."""
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()
    """choice only: the values, as the config reads them (YAML's on/off already mapped to enum words)."""
    when: tuple[tuple[str, tuple], ...] = ()
    """(parent key, allowed parent values) pairs; the parameter exists only when all hold. () = always."""

    def active(self, values: dict[str, Any]) -> bool:
        return all(parent in values and values[parent] in allowed for parent, allowed in self.when)


@dataclass(frozen=True)
class Asha:
    grace_period: int
    """Steps every trial runs before it can be stopped."""
    reduction_factor: int
    """Roughly 1/reduction_factor of the trials survive each rung (rungs at grace_period * rf**k steps)."""


@dataclass(frozen=True)
class Grid:
    variants: dict[str, dict[str, Any]]
    """Variant name -> {dotted key: value}; {} is the base experiment itself."""
    seeds: tuple[int, ...]
    reference: str
    """The variant every other one is compared with (paired by seed)."""


@dataclass(frozen=True)
class SweepSpec:
    path: str
    """The sweep file (absolute)."""
    experiment: str
    """The base experiment file (absolute)."""
    name: str
    mode: str
    objectives: tuple[Objective, ...]
    max_steps: int
    report_every: int
    trials: int
    seed: int
    asha: Asha | None
    fixed: dict[str, Any] = field(default_factory=dict)
    """`set:` of the file: dotted key -> value for every trial."""
    space: tuple[Param, ...] = ()
    points_to_evaluate: tuple[dict[str, Any], ...] = ()
    grid: Grid | None = None

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def param_keys(self) -> list[str]:
        return [p.key for p in self.space]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-safe) that `SweepSpec.from_dict` turns back into this spec."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepSpec":
        data = dict(data)
        data["objectives"] = tuple(Objective(**o) for o in data["objectives"])
        data["asha"] = Asha(**data["asha"]) if data["asha"] else None
        data["space"] = tuple(Param(**{**p, "choices": tuple(p["choices"]),
                                       "when": tuple((k, tuple(v)) for k, v in p["when"])}) for p in data["space"])
        data["points_to_evaluate"] = tuple(data["points_to_evaluate"])
        if data["grid"]:
            data["grid"] = Grid(**{**data["grid"], "seeds": tuple(data["grid"]["seeds"])})
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# Building a trial's config.


def base_data(spec: SweepSpec, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The base experiment as plain data with the file's `set:`, the command line's --set and the budget applied
    (a sweep's driver builds it once; every trial starts from it)."""
    data = apply_overrides(set_values(read_yaml(spec.experiment), spec.fixed), list(overrides))
    return set_values(data, {"train.max_steps": spec.max_steps})


def trial_config(spec: SweepSpec, values: dict[str, Any], overrides: list[str] | tuple[str, ...] = (),
                 seed: int | None = None, base: dict[str, Any] | None = None) -> ExperimentConfig:
    """The config of one trial, built once: base experiment + fixed values + --set + the trial's values (+ its seed)
    set on the nested data, then checked by `from_dict`."""
    values = values if seed is None else {**values, "train.seed": seed}
    return from_dict(ExperimentConfig, set_values(base if base is not None else base_data(spec, overrides), values))


def read_value(cfg: ExperimentConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def sample(trial: Any, space: tuple[Param, ...]) -> dict[str, Any]:
    """Draw one configuration with an Optuna-like `trial` (suggest_float / suggest_int / suggest_categorical),
    define-by-run: a conditional parameter is drawn only when its parents' values make it exist."""
    values: dict[str, Any] = {}
    for p in space:  # parents come before their children (ordered by load_sweep)
        if not p.active(values):
            continue
        if p.kind == "loguniform":
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, log=True)
        elif p.kind == "uniform":
            values[p.key] = trial.suggest_float(p.key, p.low, p.high)
        elif p.kind == "int":
            values[p.key] = trial.suggest_int(p.key, p.low, p.high)
        else:
            values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
    return values
