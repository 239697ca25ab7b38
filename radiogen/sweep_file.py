"""Sweep files: what `radiogen sweep` searches over, read from YAML and checked before any trial starts.

A sweep file names the experiment it modifies and says what to search or which ablation grid to run:

    experiment: tiny.yaml            # the base experiment, relative to this file
    objectives:                      # one metric = single-objective; several = multi-objective (Pareto front)
      - {metric: val/frechet_radiomic, mode: min}
    max_steps: 60                    # every trial's full budget (train.max_steps)
    report_every: 10                 # validation + checkpoint + report to the scheduler every N steps
    trials: 8                        # search mode: how many configurations Optuna proposes
    seed: 0                          # seeds the sampler (TPE) and, in search mode, train.seed
    asha: {grace_period: 20, reduction_factor: 2}    # early stopping on the first objective; `asha: off` = none
    set: {train.batch_size: 4}       # fixed for every trial
    space:                           # search mode
      loss.lambda_l1: {loguniform: [1, 300]}
      generator.code_dim: {choice: [16, 32, 64, 128, 256]}
      generator.fusion_levels: {int: [1, 4], when: {generator.fusion: [paper, additive]}}
    points_to_evaluate: [{loss.lambda_l1: 100, generator.code_dim: 128}]   # tried first
    grid:                            # grid mode: variants x seeds, each variant a set of config values
      seeds: [0, 1]
      reference: full
      variants: {full: {}, no_adain: {generator.adain: "off"}}
    mode: search                     # or grid

Every parameter name is a dotted config key (`section.field`, as `--set` takes it). A parameter with
`when` exists only while the named categorical parameters take one of the listed values (a conditional
parameter: e.g. AdaIN's position exists only for the fusion variants that have AdaIN).

`load_sweep` checks everything it can without training: unknown keys and parameters, empty choice
lists, reversed or non-positive bounds, a `when` that no value of its parent can satisfy, and every
bound, choice and grid variant built into a config (so a value the config rejects fails here, named).
The spec it returns is radiogen/search_space.py. This module is pure Python + YAML.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from .config import ConfigError, ExperimentConfig, from_dict
from .search_space import (FIXED_BY_SWEEP, KINDS, METRIC_PREFIXES, MODES, SWEEP_MODES, TOP_KEYS, Asha, Grid, Objective,
                           Param, SearchSpaceError, SweepSpec, base_data, read_value, trial_config)
from .strict_yaml import read_mapping


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise SearchSpaceError(f"{where}: expected a mapping, got {value!r}")
    return value


def _int(value: Any, where: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise SearchSpaceError(f"{where}: must be an integer >= {low}, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise SearchSpaceError(f"{where}: must be a finite number, got {value!r}")
    return value


def _parse_objectives(raw: Any) -> tuple[Objective, ...]:
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise SearchSpaceError("objectives: give at least one {metric: val/..., mode: min|max}")
    out = []
    for i, item in enumerate(raw):
        item = _mapping(item, f"objectives[{i}]")
        unknown = set(item) - {"metric", "mode"}
        if unknown:
            raise SearchSpaceError(f"objectives[{i}]: unknown key(s) {sorted(unknown)}; use metric and mode")
        metric, mode = item.get("metric"), item.get("mode")
        if not isinstance(metric, str) or not metric.startswith(METRIC_PREFIXES):
            raise SearchSpaceError(f"objectives[{i}].metric: {metric!r} is not a reported metric; trials report "
                                   f"the validation metrics (val/frechet_radiomic, val/l1_background, "
                                   f"val/map_objective, ...) and the losses (loss/...)")
        if mode not in MODES:
            raise SearchSpaceError(f"objectives[{i}].mode: must be min or max, got {mode!r}")
        out.append(Objective(metric, mode))
    if len({o.metric for o in out}) != len(out):
        raise SearchSpaceError("objectives: a metric is listed twice")
    return tuple(out)


def _parse_param(key: str, raw: Any) -> Param:
    where = f"space.{key}"
    raw = _mapping(raw, where)
    kinds = [k for k in KINDS if k in raw]
    unknown = set(raw) - {*KINDS, "when"}
    if unknown or len(kinds) != 1:
        raise SearchSpaceError(f"{where}: give exactly one of {', '.join(KINDS)} (plus an optional `when`), "
                               f"got {sorted(raw)}")
    kind = kinds[0]
    when = ()
    if "when" in raw:
        cond = _mapping(raw["when"], f"{where}.when")
        if not cond:
            raise SearchSpaceError(f"{where}.when: is empty; name the parameter(s) this one depends on")
        when = tuple((str(k), tuple(v) if isinstance(v, list) else (v,)) for k, v in cond.items())
    if kind == "choice":
        choices = raw["choice"]
        if not isinstance(choices, list):
            raise SearchSpaceError(f"{where}.choice: must be a list of values, got {choices!r}")
        if not choices:
            raise SearchSpaceError(f"{where}.choice: the choice list is empty; give at least one value")
        return Param(key, kind, choices=tuple(choices), when=when)
    bounds = raw[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise SearchSpaceError(f"{where}.{kind}: must be [low, high], got {bounds!r}")
    if kind == "int":
        low, high = (_int(b, f"{where}.{kind}", -2**62) for b in bounds)
    else:
        low, high = (_number(b, f"{where}.{kind}") for b in bounds)
    if not low < high:
        raise SearchSpaceError(f"{where}.{kind}: bounds are reversed or equal (low {low} >= high {high}); "
                               f"write [low, high] with low < high (a single value belongs in `set:`)")
    if kind == "loguniform" and low <= 0:
        raise SearchSpaceError(f"{where}.loguniform: needs low > 0, got {low}; use uniform for ranges that include 0")
    return Param(key, kind, low=low, high=high, when=when)


def _parents_first(space: tuple[Param, ...]) -> tuple[Param, ...]:
    """The parameters ordered so that every parent comes before the parameters that depend on it (file order
    otherwise); a `when` naming no parameter, or a cycle of conditions, is an error."""
    by_key = {p.key: p for p in space}
    for p in space:
        for parent, _ in p.when:
            if parent not in by_key:
                raise SearchSpaceError(f"space.{p.key}.when: {parent!r} is not a parameter of this search space")
    ordered: list[Param] = []
    while len(ordered) < len(space):
        ready = [p for p in space if p not in ordered and all(by_key[k] in ordered for k, _ in p.when)]
        if not ready:
            stuck = [p.key for p in space if p not in ordered]
            raise SearchSpaceError(f"space: the `when` conditions of {stuck} depend on each other in a cycle")
        ordered.append(ready[0])
    return tuple(ordered)


def _check_conditions(space: tuple[Param, ...]) -> None:
    seen: dict[str, Param] = {}
    for p in space:
        for parent, allowed in p.when:
            parent_param = seen[parent]
            if parent_param.kind != "choice":
                raise SearchSpaceError(f"space.{p.key}.when: {parent!r} is a {parent_param.kind} range; a condition "
                                       f"needs a choice parameter")
            missing = [v for v in allowed if v not in parent_param.choices]
            if missing:
                raise SearchSpaceError(f"space.{p.key}.when: {parent} never takes {missing} (its choices are "
                                       f"{list(parent_param.choices)}), so no variant uses this parameter")
        seen[p.key] = p
    # A parameter whose parents can never all hold together (e.g. a chain that excludes itself) is never drawn.
    for p in space:
        if not any(p.active(v) for v in _parent_assignments(p, space)):
            raise SearchSpaceError(f"space.{p.key}: its `when` conditions can never hold together, so no variant "
                                   f"uses this parameter")


def _parent_assignments(p: Param, space: tuple[Param, ...]) -> list[dict[str, Any]]:
    """Every assignment of choice values to p's ancestors that is reachable (each ancestor active itself)."""
    by_key = {q.key: q for q in space}
    ancestors: list[Param] = []

    def visit(q: Param) -> None:
        for parent, _ in q.when:
            if by_key[parent] not in ancestors:
                visit(by_key[parent])
                ancestors.append(by_key[parent])

    visit(p)
    assignments: list[dict[str, Any]] = [{}]
    for a in ancestors:  # parents first
        nxt = []
        for values in assignments:
            if not a.active(values):
                nxt.append(values)
                continue
            nxt.extend({**values, a.key: c} for c in a.choices)
        assignments = nxt
    return assignments


def _probe_values(p: Param) -> list[Any]:
    if p.kind == "choice":
        return list(p.choices)
    return [p.low, p.high]


def _check_buildable(spec: SweepSpec, overrides: tuple[str, ...]) -> SweepSpec:
    """Build a config for every bound, choice and grid variant; return the spec with canonical choice values."""
    try:
        base = base_data(spec, overrides)
        from_dict(ExperimentConfig, base)
    except ConfigError as err:
        raise SearchSpaceError(f"the base experiment with the sweep's `set:` and --set does not build: {err}") from None
    swept = set(spec.param_keys)
    for text in overrides:
        key = text.partition("=")[0]
        if key in swept:
            raise SearchSpaceError(f"--set {text}: {key} is a parameter of the search space; remove it from one")
    canonical = []
    for p in spec.space:
        contexts = [v for v in _parent_assignments(p, spec.space) if p.active(v)]
        read_back = []
        for value in _probe_values(p):
            try:
                cfg = trial_config(spec, {**contexts[0], p.key: value}, base=base)
                for ctx in contexts[1:]:
                    trial_config(spec, {**ctx, p.key: value}, base=base)
            except ConfigError as err:
                message = str(err)
                if message.startswith("unknown key"):
                    raise SearchSpaceError(f"space.{p.key}: unknown parameter ({message})") from None
                raise SearchSpaceError(f"space.{p.key}: the config rejects {value!r}: {message}") from None
            read_back.append(read_value(cfg, p.key))
        if p.kind == "choice":
            if len(set(map(repr, read_back))) != len(read_back):
                raise SearchSpaceError(f"space.{p.key}.choice: {list(p.choices)} lists the same value twice "
                                       f"(as the config reads them: {read_back})")
            p = dataclasses.replace(p, choices=tuple(read_back))
        canonical.append(p)
    space = tuple(canonical)
    # Conditions name the parent's values as written; map them to the canonical ones too.
    raw_to_canon = {p.key: dict(zip(map(repr, _probe_values(orig)), p.choices))
                    for p, orig in zip(space, spec.space) if p.kind == "choice"}
    space = tuple(dataclasses.replace(p, when=tuple((k, tuple(raw_to_canon[k].get(repr(v), v) for v in vs))
                                                    for k, vs in p.when)) for p in space)
    points = []
    for i, point in enumerate(spec.points_to_evaluate):
        unknown = set(point) - swept
        if unknown:
            raise SearchSpaceError(f"points_to_evaluate[{i}]: {sorted(unknown)} are not parameters of the space")
        try:
            cfg = trial_config(spec, point, base=base)
        except ConfigError as err:
            raise SearchSpaceError(f"points_to_evaluate[{i}]: the config rejects it: {err}") from None
        points.append({k: read_value(cfg, k) for k in point})  # as the config reads them (off, not False)
    spec = dataclasses.replace(spec, space=space, points_to_evaluate=tuple(points))
    if spec.grid:
        for name, values in spec.grid.variants.items():
            try:
                trial_config(spec, values, base=base, seed=spec.grid.seeds[0])
            except ConfigError as err:
                message = str(err)
                what = "unknown parameter" if message.startswith("unknown key") else "the config rejects it"
                raise SearchSpaceError(f"grid.variants.{name}: {what}: {message}") from None
    return spec


def _parse_grid(raw: Any) -> Grid:
    raw = _mapping(raw, "grid")
    unknown = set(raw) - {"variants", "seeds", "reference"}
    if unknown:
        raise SearchSpaceError(f"grid: unknown key(s) {sorted(unknown)}; use variants, seeds, reference")
    variants = raw.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise SearchSpaceError("grid.variants: give at least one variant, e.g. {full: {}, no_adain: "
                               "{generator.adain: \"off\"}}")
    clean: dict[str, dict[str, Any]] = {}
    for name, values in variants.items():
        values = {} if values is None else _mapping(values, f"grid.variants.{name}")
        for key in values:
            if key in (*FIXED_BY_SWEEP, "train.seed"):
                raise SearchSpaceError(f"grid.variants.{name}: {key} is set by the sweep (max_steps, grid.seeds)")
        clean[str(name)] = dict(values)
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise SearchSpaceError(f"grid.seeds: give a non-empty list of integer seeds, got {seeds!r}")
    seeds = [_int(s, "grid.seeds", 0) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise SearchSpaceError(f"grid.seeds: {seeds} repeats a seed; paired differences need distinct seeds")
    reference = raw.get("reference", next(iter(clean)))
    if reference not in clean:
        raise SearchSpaceError(f"grid.reference: {reference!r} is not one of the variants {list(clean)}")
    return Grid(clean, tuple(seeds), str(reference))


def parse_sweep(data: dict[str, Any], path: Path) -> SweepSpec:
    """The sweep file's structure (no config built yet); `load_sweep` adds the config checks."""
    unknown = set(data) - set(TOP_KEYS)
    if unknown:
        raise SearchSpaceError(f"{path.name}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(TOP_KEYS)}")
    if not isinstance(data.get("experiment"), str):
        raise SearchSpaceError(f"{path.name}: `experiment:` must name the base experiment file (e.g. tiny.yaml)")
    experiment = (path.parent / data["experiment"]).resolve()
    if not experiment.is_file():
        raise SearchSpaceError(f"experiment: {experiment} does not exist (the path is relative to {path.name})")
    mode = data.get("mode", "search")
    if mode not in SWEEP_MODES:
        raise SearchSpaceError(f"mode: must be search or grid, got {mode!r}")
    max_steps = _int(data.get("max_steps"), "max_steps", 1)
    report_every = _int(data.get("report_every", max_steps), "report_every", 1)
    if report_every > max_steps:
        raise SearchSpaceError(f"report_every: {report_every} is more than max_steps {max_steps}")
    asha = None
    raw_asha = data.get("asha", False)
    if raw_asha not in (None, False):
        raw_asha = _mapping(raw_asha, "asha")
        unknown = set(raw_asha) - {"grace_period", "reduction_factor"}
        if unknown:
            raise SearchSpaceError(f"asha: unknown key(s) {sorted(unknown)}; use grace_period and reduction_factor "
                                   f"(the budget is max_steps)")
        grace = _int(raw_asha.get("grace_period"), "asha.grace_period", 1)
        rf = _int(raw_asha.get("reduction_factor", 2), "asha.reduction_factor", 2)
        if grace >= max_steps:
            raise SearchSpaceError(f"asha.grace_period: {grace} must be below max_steps {max_steps}, or nothing is "
                                   f"ever stopped early (write `asha: off` for no early stopping)")
        if grace < report_every:
            raise SearchSpaceError(f"asha.grace_period: {grace} is shorter than report_every {report_every}; the "
                                   f"first decision needs a report")
        asha = Asha(grace, rf)
    fixed = _mapping(data.get("set") or {}, "set")
    for key in fixed:
        if key in FIXED_BY_SWEEP:
            raise SearchSpaceError(f"set.{key}: the budget is the sweep's max_steps")
    raw_space = _mapping(data.get("space") or {}, "space")
    space = _parents_first(tuple(_parse_param(str(k), v) for k, v in raw_space.items()))
    for p in space:
        if p.key in (*FIXED_BY_SWEEP, "train.seed") or p.key in fixed:
            raise SearchSpaceError(f"space.{p.key}: " + ("set by the sweep (max_steps, seed)" if p.key not in fixed
                                                         else "is also fixed in `set:`; keep one"))
    _check_conditions(space)
    points = data.get("points_to_evaluate") or []
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise SearchSpaceError("points_to_evaluate: must be a list of {parameter: value} mappings")
    grid = _parse_grid(data["grid"]) if data.get("grid") is not None else None
    if mode == "search" and not space:
        raise SearchSpaceError("space: search mode needs at least one parameter (or use mode: grid)")
    if mode == "grid" and grid is None:
        raise SearchSpaceError("grid: grid mode needs a `grid:` section with variants and seeds")
    seed = _int(data.get("seed", 0), "seed", 0)
    fixed = dict(fixed)
    if mode == "search":
        fixed.setdefault("train.seed", seed)
    return SweepSpec(
        path=str(path), experiment=str(experiment), name=str(data.get("name") or path.stem), mode=mode,
        objectives=_parse_objectives(data.get("objectives")), max_steps=max_steps, report_every=report_every,
        trials=_int(data.get("trials", 1), "trials", 1), seed=seed, asha=asha, fixed=fixed, space=space,
        points_to_evaluate=tuple(points), grid=grid)


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = (), mode: str | None = None,
               trials: int | None = None, max_steps: int | None = None, variants: str | None = None,
               seeds: str | None = None) -> SweepSpec:
    """Read and check a sweep file; `mode`, `trials` and `max_steps` replace the file's (report_every is capped at
    max_steps); `variants` and `seeds` ("a,b", "0,1") narrow a grid, e.g. a quick run of a long study. Raises
    SearchSpaceError."""
    path = Path(path).resolve()
    data = read_mapping(path, SearchSpaceError, "sweep file")
    if mode is not None:
        data["mode"] = mode
    if trials is not None:
        if trials < 1:
            raise SearchSpaceError(f"--trials must be >= 1, got {trials}")
        data["trials"] = trials
    if max_steps is not None:
        if max_steps < 1:
            raise SearchSpaceError(f"--max-steps must be >= 1, got {max_steps}")
        data["max_steps"] = max_steps
        if isinstance(data.get("report_every"), int) and data["report_every"] > max_steps:
            data["report_every"] = max_steps
    if variants is not None or seeds is not None:
        data["grid"] = _narrow_grid(data.get("grid"), variants, seeds)
    return _check_buildable(parse_sweep(data, path), tuple(overrides))


def _narrow_grid(grid: Any, variants: str | None, seeds: str | None) -> dict:
    if not isinstance(grid, dict) or not isinstance(grid.get("variants"), dict):
        raise SearchSpaceError("--variants/--seeds narrow a grid, but the sweep file has no `grid:` with variants")
    grid = dict(grid)
    if variants is not None:
        names = [v.strip() for v in variants.split(",") if v.strip()]
        unknown = [v for v in names if v not in grid["variants"]]
        if unknown or not names:
            raise SearchSpaceError(f"--variants {variants!r}: {unknown or 'no name'} not among the file's variants "
                                   f"{list(grid['variants'])}")
        if grid.get("reference") not in names:
            raise SearchSpaceError(f"--variants {variants!r}: include the reference {grid.get('reference')!r}, which "
                                   f"every variant is compared with")
        grid["variants"] = {v: grid["variants"][v] for v in names}
    if seeds is not None:
        try:
            grid["seeds"] = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise SearchSpaceError(f"--seeds {seeds!r}: give integers separated by commas, e.g. 0,1") from None
    return grid
