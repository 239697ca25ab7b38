"""Fig. 2 grid layout and atomic PNG writing."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from radiogen.figures import FIG2_TITLES, fig2_grid, save_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def example(n: int = 6, size: int = 32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "background": rng.uniform(-1, 1, (n, size, size)),
        "synthetic": rng.uniform(-1, 1, (n, size, size)),
        "weight": rng.uniform(0, 1, (n, size, size)),
        "mask": (rng.uniform(0, 1, (n, size, size)) > 0.7).astype(np.float32),
    }


@pytest.mark.parametrize("n, max_rows, rows", [(6, 4, 4), (2, 4, 2), (6, 1, 1)])
def test_grid_has_four_columns_per_row(n, max_rows, rows):
    fig = fig2_grid(**example(n), max_rows=max_rows)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4 * rows
    assert [ax.get_title() for ax in fig.axes[:4]] == list(FIG2_TITLES)
    assert all(ax.get_title() == "" for ax in fig.axes[4:])
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in fig.axes)


def test_colour_limits_follow_the_paper_ranges():
    fig = fig2_grid(**example(2))
    limits = [ax.images[0].get_clim() for ax in fig.axes[:4]]
    assert limits == [(-1.0, 1.0), (-1.0, 1.0), (0.0, 1.0), (0.0, 1.0)]


def test_weight_none_shows_text(tmp_path):
    ex = example(3)
    ex["weight"] = None
    fig = fig2_grid(**ex)
    assert len(fig.axes) == 12
    weight_axes = fig.axes[2::4]
    assert all(not ax.images and ax.texts[0].get_text() == "no weight map" for ax in weight_axes)
    assert save_figure(fig, tmp_path / "f.png").stat().st_size > 1000


def test_mismatched_shapes_are_rejected():
    ex = example(3)
    ex["mask"] = ex["mask"][:, :16]
    with pytest.raises(ValueError, match="one shape"):
        fig2_grid(**ex)


def test_save_figure_writes_png_atomically(tmp_path):
    out = save_figure(fig2_grid(**example(4)), tmp_path / "sub" / "fig2.png")
    assert out == tmp_path / "sub" / "fig2.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["fig2.png"]  # no temp file left behind
    # overwriting an existing file works and still leaves a single file
    save_figure(fig2_grid(**example(1)), out)
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in out.parent.iterdir()] == ["fig2.png"]


def test_save_failure_leaves_no_temp_file(tmp_path):
    class Broken(Figure):
        def savefig(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(Broken(), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
