"""What every benchmark stage returns: measures, each an absolute figure and a ratio within one run.

A stage module (ray_jobs/bench/<stage>.py) exposes `run(ctx: Context) -> list[Measure]`; `radiogen bench`
(ray_jobs/bench/__init__.py) runs the stages in one process, one after another, on one machine, and
writes every measure into bench.json and a markdown table. No stage asserts a speed: targets are
reported as met or not, with a note on the bottleneck.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Measure:
    stage: str
    """"prep", "ingest", "train", "sweep" or "gpu"."""
    name: str
    """What was measured, e.g. "cached re-run vs cold"."""
    value: float | None
    """The absolute figure in `unit` (None = not measured here, e.g. a GPU figure on a CPU machine)."""
    unit: str
    ratio: float | None = None
    """`value` relative to `reference` measured in the same run (None when there is no reference)."""
    reference: str = ""
    """What the ratio is against, with its own absolute figure, e.g. "SimpleITK read alone (0.33 s)"."""
    target: str = ""
    """The issue's target for the ratio (or value), e.g. ">= 0.97" or "< 0.2"; "" = no target."""
    met: bool | None = None
    """Whether `target` is met (None = no target or not measured)."""
    note: str = ""
    """Setup and, when a target is missed, the measured bottleneck."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Context:
    """What the orchestrator hands each stage."""

    work: Path
    """Scratch folder of this bench run (stages make sub-folders named after themselves)."""
    quick: bool = False
    """Smallest sizes that still exercise every code path (tests, a first look); figures are not meaningful."""
    cohorts: dict[str, Path] = field(default_factory=dict)
    """Shared inputs made once per bench run, by name (e.g. "small": a prepared 64 px dataset)."""


def machine() -> dict:
    """The machine a figure came from: CPU count, platform, torch and Ray versions, the GPU if any."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        info["gpu"] = None
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "not measured"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def markdown_table(measures: list[Measure]) -> str:
    """One row per measure: what, the absolute figure, its reference, the ratio, the target and whether it is met."""
    met = {True: "yes", False: "**no**", None: ""}
    lines = ["| stage | measure | value | ratio | against | target | met | note |",
             "|---|---|---|---|---|---|---|---|"]
    for m in measures:
        ratio = "" if m.ratio is None else f"{m.ratio:.2f}x"
        lines.append(f"| {m.stage} | {m.name} | {fmt(m.value, m.unit)} | {ratio} | {m.reference} | {m.target} | "
                     f"{met[m.met]} | {m.note} |")
    return "\n".join(lines)


def ratio_measure(stage: str, name: str, value: float | None, unit: str, reference: float | None, ref_name: str,
                  target: float | None = None, higher_is_better: bool = True, note: str = "") -> Measure:
    """A Measure of `value` against `reference` (same unit) with an optional target on the ratio."""
    ratio = value / reference if value is not None and reference else None
    met = None
    if target is not None and ratio is not None:
        met = ratio >= target if higher_is_better else ratio < target
    return Measure(stage, name, value, unit, ratio, f"{ref_name} ({fmt(reference, unit)})",
                   "" if target is None else f"{'>=' if higher_is_better else '<'} {target:g}x", met, note)
