"""The evaluation's figures (docs/design.md §5): Fig. 2 and Fig. 3 of the paper from the gene swap, and per split
Fig. 4 (t-SNE of representations by cluster) and the association-map heatmaps. Each function takes what it
draws and returns {file name: {"caption", "width", "height"}} of the PNGs it wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radiogen.figures import fig2_grid, fig3_grid, fig4_tsne, map_heatmap, save_figure

FIG_COLUMNS = 7  # gene sources in Fig. 3, as in the paper
MIN_SUBJECTS = 3


def _save(folder: Path, name: str, fig, caption: str) -> dict[str, dict]:
    save_figure(fig, folder / name)
    width, height = (fig.get_size_inches() * 100).round().astype(int)  # save_figure writes at dpi 100
    return {name: {"caption": caption, "width": int(width), "height": int(height)}}


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(x, dtype=np.float64))


def representative_slices(images: np.ndarray, masks: np.ndarray, slice_subject: np.ndarray) -> dict[str, np.ndarray]:
    """Each subject's real slice with the largest nodule area (the image shown for it in Fig. 3/4)."""
    area = masks.sum(axis=(1, 2))
    best: dict[str, int] = {}
    for i, s in enumerate(slice_subject):
        if s not in best or area[i] > area[best[s]]:
            best[s] = i
    return {s: images[i] for s, i in best.items()}


def paper_figures(folder: Path, backgrounds: np.ndarray, subjects: list[str], rows_heldout: np.ndarray,
                  rows_train: np.ndarray, swap, baseline_swap, slice_of: dict[str, np.ndarray]) -> dict[str, dict]:
    """Fig. 2 on held-out subjects (training ones when there are none) and Fig. 3 with training gene sources;
    swap / baseline_swap: synthesis.SwapResult of the model and of the baseline (or None)."""
    K = len(backgrounds)
    rows = (rows_heldout if len(rows_heldout) else rows_train)[:4]
    cols = np.arange(len(rows)) % K  # subject j on background j
    out = _save(folder, "fig2_synthesis.png",
                fig2_grid(backgrounds[cols], swap.images[rows, cols],
                          None if swap.weights is None else swap.weights[rows, cols], swap.masks[rows, cols]),
                "Fig. 2: (a) background, (b) synthetic image, (c) background weight map, (d) mask; one held-out "
                "subject's genes per row")
    src = (rows_train if len(rows_train) else rows_heldout)[:FIG_COLUMNS]
    cols = np.arange(len(src)) % K
    base = baseline_swap.images[src, cols] if baseline_swap is not None else None
    out |= _save(folder, "fig3_gene_swap.png",
                 fig3_grid(np.stack([slice_of[subjects[i]] for i in src]), backgrounds[cols], swap.images[src, cols],
                           base, [subjects[i] for i in src]),
                 "Fig. 3: columns are gene sources (training subjects); rows: the source's training image, the "
                 "background, " + ("the baseline's synthesis, " if baseline_swap is not None else "")
                 + "the proposed model's synthesis from that source's genes")
    return out


def split_figures(folder: Path, split: str, panels: dict[str, np.ndarray], clusters: dict[str, np.ndarray | None],
                  silhouettes: dict[str, float], examples_of: list[str], slice_of: dict[str, np.ndarray],
                  maps: dict[str, object], n_clusters: int, n_perm: int, seed: int) -> dict[str, dict]:
    """Fig. 4 (t-SNE of each representation in `panels`, coloured by its clusters; real nodules of the subjects
    `examples_of` per cluster of the last panel, the proposed code) and the heatmap of `maps`."""
    out: dict[str, dict] = {}
    if len(examples_of) < MIN_SUBJECTS:
        return out
    if all(clusters.get(t) is not None for t in panels):
        own = clusters[list(panels)[-1]]
        examples = [np.stack([slice_of[examples_of[i]] for i in np.flatnonzero(own == c)[:6]])
                    for c in range(n_clusters) if (own == c).any()]
        emb = {t: _tsne(x, seed) for t, x in panels.items()}
        out |= _save(folder, f"fig4_tsne_{split}.png",
                     fig4_tsne(emb, {t: clusters[t] for t in panels}, examples, silhouettes,
                               "real nodules of each proposed-code cluster"),
                     f"Fig. 4 ({split}): t-SNE of " + ", ".join(panels) + f", coloured by {n_clusters} KMeans "
                     f"clusters of each (raw genes clustered on their PCA); below, real nodules of the subjects in "
                     f"each proposed-code cluster")
    if all(v is not None for v in maps.values()):
        out |= _save(folder, f"map_{split}.png", map_heatmap(maps),
                     f"Radiogenomic map ({split}): Spearman rho of code dimensions and of metagenes with nodule "
                     f"features across subjects; dots: BH FDR q < 0.05 against {n_perm} permutations")
    return out
