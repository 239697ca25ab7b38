"""The paper's figures (docs/design.md §5): Fig. 2 (background / synthetic / weight map / mask), Fig. 3 (gene swap
across backgrounds), Fig. 4 (t-SNE of gene codes by cluster) and the radiogenomic-map heatmap.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas, never pyplot, so making one
changes no global matplotlib state and needs no display (training workers are headless).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FIG2_TITLES = ("(a) background", "(b) synthetic", "(c) background weight", "(d) mask")


def fig2_grid(background: np.ndarray, synthetic: np.ndarray, weight: np.ndarray | None,
              mask: np.ndarray, max_rows: int = 4) -> Figure:
    """One row per example (the first `max_rows`), columns (a)-(d) as in the paper's Fig. 2.

    background, synthetic: (N, H, W) in [-1, 1], drawn grey with vmin -1, vmax 1.
    weight: (N, H, W) in [0, 1], or None when the model has no weight map (e.g. concat fusion);
        column (c) then says so in text.
    mask: (N, H, W) in [0, 1].
    """
    arrays = {"background": background, "synthetic": synthetic, "mask": mask}
    if weight is not None:
        arrays["weight"] = weight
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    if any(len(s) != 3 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise ValueError(f"fig2_grid needs (N, H, W) arrays of one shape, got {shapes}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    rows = min(len(background), max_rows)
    if rows == 0:
        raise ValueError("fig2_grid needs at least one example")

    fig = Figure(figsize=(4 * 2.2, rows * 2.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 4, squeeze=False)
    for r in range(rows):
        panels = (
            (background[r], "gray", -1.0, 1.0),
            (synthetic[r], "gray", -1.0, 1.0),
            (None if weight is None else weight[r], "viridis", 0.0, 1.0),
            (mask[r], "gray", 0.0, 1.0),
        )
        for c, (img, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[r, c]
            if img is None:
                ax.text(0.5, 0.5, "no weight map", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(np.asarray(img, dtype=np.float32), cmap=cmap, vmin=vmin, vmax=vmax,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(FIG2_TITLES[c], fontsize=9)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write `fig` as a PNG atomically: a temp file in the same directory, then os.replace.

    A reader (e.g. an MLflow artifact upload) therefore never sees a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


FIG3_ROWS = ("gene source (training image)", "background", "baseline (MC-GAN)", "proposed")


def _show(ax, img: np.ndarray, cmap: str = "gray", vmin: float = -1.0, vmax: float = 1.0) -> None:
    ax.imshow(np.asarray(img, dtype=np.float32), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def fig3_grid(sources: np.ndarray, backgrounds: np.ndarray, proposed: np.ndarray, baseline: np.ndarray | None = None,
              column_titles: list[str] | None = None, max_columns: int = 7) -> Figure:
    """The paper's Fig. 3: one column per gene source; column j's synthetic images use source j's genes
    on background j.

    Rows: the source's training image, the background, the baseline's synthesis (row left out when
    `baseline` is None), the proposed model's synthesis. All (C, H, W) in [-1, 1]; column_titles
    (e.g. subject ids) label the columns; at most `max_columns` columns (the paper shows 7).
    """
    rows = [sources, backgrounds] + ([baseline] if baseline is not None else []) + [proposed]
    names = list(FIG3_ROWS[:2]) + ([FIG3_ROWS[2]] if baseline is not None else []) + [FIG3_ROWS[3]]
    shapes = {np.shape(r) for r in rows}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"fig3_grid needs (C, H, W) arrays of one shape, got {[np.shape(r) for r in rows]}")
    cols = min(len(sources), max_columns)
    if cols == 0:
        raise ValueError("fig3_grid needs at least one gene source")
    fig = Figure(figsize=(1.6 * cols + 1.6, 1.6 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (stack, name) in enumerate(zip(rows, names)):
        for c in range(cols):
            _show(axes[r, c], stack[c])
            if r == 0 and column_titles is not None:
                axes[r, c].set_title(str(column_titles[c]), fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8)
    return fig


def fig4_tsne(embeddings: dict[str, np.ndarray], labels: dict[str, np.ndarray],
              examples: list[np.ndarray] | None = None, scores: dict[str, float] | None = None,
              examples_title: str = "") -> Figure:
    """The paper's Fig. 4: 2-D t-SNE maps of gene representations coloured by cluster, and example
    nodules per cluster.

    embeddings: panel title -> (N, 2) t-SNE coordinates (e.g. "raw genes", "baseline code", "proposed code");
    labels: the same titles -> (N,) integer cluster labels (each panel coloured by its own clusters);
    scores: optional title -> silhouette, shown in the panel title;
    examples: per cluster (of the last panel), an (n, H, W) stack of nodule images in [-1, 1], drawn
        as a row below the maps (up to 6 per cluster).
    """
    if not embeddings or set(embeddings) != set(labels):
        raise ValueError(f"embeddings and labels need the same non-empty keys, got {list(embeddings)} and "
                         f"{list(labels)}")
    n_ex = max((min(len(e), 6) for e in examples or []), default=0)
    fig = Figure(figsize=(max(4.0 * len(embeddings), 1.2 * n_ex + 1.5), 4.0 + (1.3 * len(examples) if n_ex else 0)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.0, 1.3 * len(examples)]) if n_ex else (fig, None)
    axes = top.subplots(1, len(embeddings), squeeze=False)[0]
    cmap = colormaps["tab10"]
    for ax, (title, xy) in zip(axes, embeddings.items()):
        lab = np.asarray(labels[title])
        xy = np.asarray(xy)
        for k in np.unique(lab):
            pts = xy[lab == k]
            ax.scatter(pts[:, 0], pts[:, 1], s=14, color=cmap(int(k) % 10), label=f"cluster {int(k)}")
        score = (scores or {}).get(title)
        shown = "" if score is None or not np.isfinite(score) else f"\nsilhouette {score:.2f}"
        ax.set_title(title + shown, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(fontsize=7, loc="best")
    if bottom is not None:
        bottom.suptitle(examples_title, fontsize=9)
        ex_axes = bottom.subplots(len(examples), n_ex, squeeze=False)
        for r, stack in enumerate(examples):
            for c in range(n_ex):
                ax = ex_axes[r, c]
                if c < len(stack):
                    _show(ax, stack[c])
                else:
                    ax.axis("off")
            ex_axes[r, 0].set_ylabel(f"cluster {r}", fontsize=8, color=cmap(r % 10))
    return fig


def map_heatmap(maps: dict[str, object], max_rows: int = 32) -> Figure:
    """Radiogenomic maps side by side: Spearman rho of each map row (code dimension, cluster or metagene;
    drawn as a column) with each nodule image feature (drawn as a row, shared by the panels), cells
    significant after BH FDR against the permutation null marked with a dot.

    maps: panel title -> an association map with .rho, .significant (R, F), .row_names, .col_names
        (radiogen.evaluation.radiomap.AssociationMap); every map must have the same features. A map
        of more than `max_rows` rows shows the rows with the most significant cells (then the
        largest |rho|), and its title says so.
    """
    if not maps:
        raise ValueError("map_heatmap needs at least one map")
    features = list(next(iter(maps.values())).col_names)
    panels = []
    for title, m in maps.items():
        if list(m.col_names) != features:
            raise ValueError(f"map {title!r} has other features than the first map; maps must share their columns")
        rho, sig = np.asarray(m.rho, dtype=np.float64), np.asarray(m.significant, dtype=bool)
        rows = np.arange(len(rho))
        if len(rho) > max_rows:
            strength = sig.sum(1) * 10.0 + np.nan_to_num(np.abs(rho)).max(1)
            rows = np.sort(np.argsort(-strength, kind="stable")[:max_rows])
            title = f"{title}\n(top {max_rows} of {len(rho)})"
        panels.append((title, rho[rows].T, sig[rows].T, [m.row_names[i] for i in rows]))  # (F, R)
    widths = [max(len(p[3]), 3) for p in panels]
    fig = Figure(figsize=(2.5 + 0.2 * sum(widths) + 1.0 * len(panels), 1.5 + 0.16 * len(features)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    image = None
    for i, (ax, (title, rho, sig, names)) in enumerate(zip(axes, panels)):
        image = ax.imshow(rho, cmap="RdBu_r", vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest")
        yy, xx = np.nonzero(sig)
        ax.scatter(xx, yy, s=6, marker="o", color="black")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(features)), features if i == 0 else [], fontsize=6)
        ax.set_title(f"{title}\n{int(sig.sum())} of {sig.size} significant", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.5, label="Spearman rho")
    return fig
