"""What a sweep reports: the leaderboard, the Pareto front, the ablation-grid table and Optuna's plots.

Plain data in, text and files out (no Ray, no MLflow): `ray_jobs.sweep` collects one `TrialRow` per trial and
logs what these functions write to the sweep's parent run.

The grid table answers "does this ablation matter beyond seed noise?": per variant the mean ± sample std over
seeds, and against the reference variant the paired difference (same seed, variant - reference) with a 95%
t-interval over the seeds, mean ± t(0.975, n-1) * sd / sqrt(n). An interval that excludes 0 is marked.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radiogen.search_space import Objective, SweepSpec

STATES = ("complete", "pruned", "failed")


@dataclass
class TrialRow:
    trial_id: str
    state: str
    """complete (trained to max_steps), pruned (stopped early by ASHA) or failed."""
    step: int
    """The last step it reported."""
    metrics: dict[str, float]
    """Its last reported value of each objective metric."""
    values: dict[str, Any] = field(default_factory=dict)
    """The swept config values (search) or the variant's values (grid)."""
    variant: str | None = None
    seed: int | None = None
    run_id: str | None = None
    pareto: bool = False


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _key(o: Objective, value: Any) -> float:
    """Smaller is better; a missing or NaN value sorts last."""
    if not _finite(value):
        return math.inf
    return value if o.mode == "min" else -value


def _dominates(a: TrialRow, b: TrialRow, objectives: tuple[Objective, ...]) -> bool:
    ka = [_key(o, a.metrics.get(o.metric)) for o in objectives]
    kb = [_key(o, b.metrics.get(o.metric)) for o in objectives]
    return all(x <= y for x, y in zip(ka, kb)) and any(x < y for x, y in zip(ka, kb))


def rank(rows: list[TrialRow], spec: SweepSpec) -> list[TrialRow]:
    """Complete trials first (multi-objective: the Pareto front first), by the first objective; then pruned trials
    (later stops first: they got further), then failed ones. Marks `pareto` on the front's trials."""
    first = spec.objectives[0]
    complete = [r for r in rows if r.state == "complete"]
    scored = [r for r in complete if all(_finite(r.metrics.get(o.metric)) for o in spec.objectives)]
    for r in rows:
        r.pareto = r in scored and not any(_dominates(o, r, spec.objectives) for o in scored if o is not r)
    order = {"complete": 0, "pruned": 1, "failed": 2}
    return sorted(rows, key=lambda r: (order[r.state], not r.pareto if spec.multi_objective else 0,
                                       -r.step if r.state == "pruned" else 0, _key(first, r.metrics.get(first.metric)),
                                       r.trial_id))


def best(rows: list[TrialRow], spec: SweepSpec) -> TrialRow | None:
    """The first complete trial with finite objectives in `rank` order (multi-objective: on the Pareto front)."""
    ranked = rank(rows, spec)
    for r in ranked:
        if r.state == "complete" and all(_finite(r.metrics.get(o.metric)) for o in spec.objectives):
            return r
    return None


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return "" if x is None else str(x)


def leaderboard_table(rows: list[TrialRow], spec: SweepSpec) -> tuple[list[str], list[list[str]]]:
    ranked = rank(rows, spec)
    keys = sorted({k for r in rows for k in r.values}) if spec.mode == "search" else []
    header = ["rank", "trial", "state", "step", *(o.metric + f" ({o.mode})" for o in spec.objectives)]
    header += ["pareto"] if spec.multi_objective else []
    header += ["variant", "seed"] if spec.mode == "grid" else keys
    header += ["mlflow_run"]
    body = []
    for i, r in enumerate(ranked, 1):
        line = [str(i), r.trial_id, r.state, str(r.step), *(_fmt(r.metrics.get(o.metric)) for o in spec.objectives)]
        line += (["*" if r.pareto else ""] if spec.multi_objective else [])
        line += [r.variant or "", _fmt(r.seed)] if spec.mode == "grid" else [_fmt(r.values.get(k, "-")) for k in keys]
        line += [r.run_id or ""]
        body.append(line)
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, header: list[str], body: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(body)
    return path


# ---------------------------------------------------------------------------------------------
# The ablation grid.


def t_quantile(p: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(p, df))


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def paired_difference(values: dict[int, float], reference: dict[int, float]) -> dict[str, float]:
    """variant - reference over the seeds both have: mean, 95% t-interval (nan bounds below 2 pairs), pairs."""
    diffs = [values[s] - reference[s] for s in sorted(values) if s in reference]
    if not diffs:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    mean, sd = mean_std(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": 1}
    half = t_quantile(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)}


def grid_table(rows: list[TrialRow], spec: SweepSpec) -> tuple[list[str], list[list[str]]]:
    """One row per variant: per objective metric the mean ± std over its complete seeds and the paired difference
    to the reference variant with its 95% interval (`*` when the interval excludes 0)."""
    grid = spec.grid
    by: dict[str, dict[str, dict[int, float]]] = {v: {o.metric: {} for o in spec.objectives} for v in grid.variants}
    for r in rows:
        if r.state == "complete" and r.variant in by:
            for o in spec.objectives:
                if _finite(r.metrics.get(o.metric)):
                    by[r.variant][o.metric][r.seed] = r.metrics[o.metric]
    header = ["variant", "seeds"]
    for o in spec.objectives:
        header += [f"{o.metric} ({o.mode}) mean ± std", f"Δ vs {grid.reference} [95% CI]"]
    body = []
    for variant in grid.variants:
        seeds = sorted(set().union(*(by[variant][o.metric].keys() for o in spec.objectives)))
        line = [variant, str(len(seeds))]
        for o in spec.objectives:
            vals = by[variant][o.metric]
            if vals:
                mean, std = mean_std([vals[s] for s in sorted(vals)])
                line.append(f"{mean:.4g} ± {std:.2g}" if math.isfinite(std) else f"{mean:.4g}")
            else:
                line.append("n/a")
            if variant == grid.reference:
                line.append("(reference)")
                continue
            d = paired_difference(vals, by[grid.reference][o.metric])
            if d["n"] == 0:
                line.append("n/a")
            elif d["n"] == 1:
                line.append(f"{d['mean']:+.4g} (1 pair, no interval)")
            else:
                beyond = " *" if d["low"] > 0 or d["high"] < 0 else ""
                line.append(f"{d['mean']:+.4g} [{d['low']:+.4g}, {d['high']:+.4g}]{beyond}")
        body.append(line)
    return header, body


# ---------------------------------------------------------------------------------------------
# Optuna's plots (matplotlib backend).


def optuna_plots(study: Any, spec: SweepSpec, out: Path) -> tuple[list[Path], list[str]]:
    """PNG files of the optimisation history, parameter importances, parallel coordinates (and the Pareto front
    for several objectives); returns (written files, one reason per plot that could not be drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    first = spec.objectives[0].metric
    target = (lambda t: t.values[0]) if spec.multi_objective else None  # noqa: E731
    plots = {
        "optuna_history.png": lambda: vis.plot_optimization_history(study, target=target, target_name=first),
        "optuna_importances.png": lambda: vis.plot_param_importances(study, target=target, target_name=first),
        "optuna_parallel.png": lambda: vis.plot_parallel_coordinate(study, target=target, target_name=first),
    }
    if spec.multi_objective:
        names = [o.metric for o in spec.objectives]
        plots["optuna_pareto.png"] = lambda: vis.plot_pareto_front(study, target_names=names)
    written, skipped = [], []
    for name, draw in plots.items():
        try:
            ax = draw()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 6)
            fig.tight_layout()
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            written.append(out / name)
        except Exception as err:  # noqa: BLE001 - e.g. importances need >= 2 complete trials that differ
            skipped.append(f"{name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
            plt.close("all")
    return written, skipped
