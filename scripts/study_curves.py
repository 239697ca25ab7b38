"""Validation curves of a grid sweep's variants, read back from MLflow: per objective, the mean over seeds of each
variant's value at every report, with the issue's target and, for the program responses, the real nodules'
ceiling (val/real/response/*, constant in every trial).

    python scripts/study_curves.py --tracking-uri sqlite:///runs/mlflow.db --sweep ablation \
        [--variants stable,paper,speckle,...] --out docs/img/ablation_curves.png

Plain reading of what `radiogen sweep` logged (the sweep's parent run is found by its name tag; its children
carry radiogen.variant and radiogen.seed); nothing is retrained.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

PANELS = (  # metric, title, target line (None: no target), ceiling metric
    ("val/frechet_over_floor", "radiomic Fréchet / real-vs-real floor (target <= 2)", 2.0, None),
    ("val/speckle_ratio", "speckle: HF energy synthetic / real (target <= 1.5)", 1.5, None),
    ("val/response/size", "size response rho (target >= 0.7)", 0.7, "val/real/response/size"),
    ("val/response/density", "density response rho (target >= 0.7)", 0.7, "val/real/response/density"),
    ("val/response/irregularity", "irregularity response rho (target >= 0.4)", 0.4,
     "val/real/response/irregularity"),
    ("val/response/texture", "texture response rho (target >= 0.4)", 0.4, "val/real/response/texture"),
    ("val/response/decoy", "decoy |rho| (target < 0.2)", 0.2, "val/real/response/decoy"),
    ("val/map_objective", "map AUPRC (val/map_objective)", None, None),
)


def read_curves(uri: str, sweep: str) -> tuple[dict, dict]:
    """({variant: {metric: {step: [value per seed]}}}, {metric: ceiling}) of the sweep's complete trials."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(experiments, filter_string=f"tags.`radiogen.sweep` = '{sweep}' and "
                                                            f"tags.`radiogen.sweep_role` = 'parent'")
    if not parents:
        raise SystemExit(f"no sweep {sweep!r} in {uri}: give the sweep's --name and the tracking URI it logged to")
    parent = parents[0]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    curves: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    ceiling: dict = {}
    for child in children:
        variant = child.data.tags.get("radiogen.variant")
        if variant is None or child.info.status != "FINISHED":
            continue
        for metric, _, _, real in PANELS:
            for m in client.get_metric_history(child.info.run_id, metric):
                curves[variant][metric][m.step].append(m.value)
            if real and real in child.data.metrics:
                ceiling[metric] = child.data.metrics[real]
    return curves, ceiling


def draw(curves: dict, ceiling: dict, variants: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    colours = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")  # distinct colours for every variant
    for ax, (metric, title, target, _) in zip(axes.flat, PANELS):
        for i, variant in enumerate(variants):
            points = sorted(curves.get(variant, {}).get(metric, {}).items())
            if points:
                steps = [s for s, _ in points]
                means = [np.nanmean(v) if np.isfinite(v).any() else np.nan for _, v in points]  # NaN: no nodule
                ax.plot(steps, means, marker="o", color=colours(i % colours.N),
                        lw=2.5 if variant == "stable" else 1.2, label=variant)
        if target is not None:
            ax.axhline(target, color="k", ls="--", lw=1, label="target")
        if metric in ceiling:
            ax.axhline(ceiling[metric], color="tab:green", ls=":", lw=1.5, label="real nodules")
        if metric in ("val/frechet_over_floor", "val/speckle_ratio"):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    handles, labels = axes.flat[2].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 11), fontsize=9)  # 2 rows for a full grid
    fig.suptitle("ablation study: validation curves, mean over seeds (held-out subjects)")
    fig.tight_layout(rect=(0, 0.05 if len(labels) <= 11 else 0.09, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default="sqlite:///runs/mlflow.db")
    p.add_argument("--sweep", default="ablation", help="the sweep's --name")
    p.add_argument("--variants", default=None, help="variants to draw, comma-separated (default: all)")
    p.add_argument("--out", type=Path, default=Path("docs/img/ablation_curves.png"))
    args = p.parse_args(argv)
    curves, ceiling = read_curves(args.tracking_uri, args.sweep)
    variants = args.variants.split(",") if args.variants else sorted(curves)
    missing = [v for v in variants if v not in curves]
    if missing:
        print(f"error: no finished trial of variant(s) {missing}; the sweep has {sorted(curves)}", file=sys.stderr)
        return 2
    draw(curves, ceiling, variants, args.out)
    print(f"wrote {args.out} ({len(variants)} variants)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
