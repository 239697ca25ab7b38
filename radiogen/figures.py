"""The paper's Fig. 2 (DESIGN §5): background, synthetic image, background weight map and mask per example.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas, never pyplot, so making one
changes no global matplotlib state and needs no display (training workers are headless).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
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
