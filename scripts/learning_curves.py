"""Learning curves of the gene -> nodule map: train configs in process on a prepared synthetic dataset and, every
--every steps, record what the training step reports (LSGAN losses per head, D's accuracy on real and fake
tuples, the synthetic mask area) and what the cohort's truth says about G_ema (program response of the
gene-swapped nodules on training and held-out subjects, radiogen.evaluation.truth.program_response).

    python scripts/learning_curves.py --data runs/learnability/data --truth runs/learnability/cohort/truth.json \
        --out runs/curves [--steps 4000] [--every 250] [--seed 0] [--config LABEL=CONFIG[:key=value,...]] ...

The step is `radiogen.train_step.train_step`, as in `radiogen train`; batches are drawn uniformly (with
replacement) from the training split held in memory instead of by epochs, so the curves are cheap enough to
take every few hundred steps (about 4000 steps in 4 minutes per config on one CPU thread). Writes
OUT/curves.json and OUT/curves.png; defaults compare ablations/tiny.yaml (the paper's method) with
ablations/stable_tiny.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [f"paper={REPO / 'ablations' / 'tiny.yaml'}", f"stable={REPO / 'ablations' / 'stable_tiny.yaml'}"]
SPLITS = ("train", "heldout")


def curves(data_dir: Path, truth: dict, config: str, sets: list[str], steps: int, every: int, seed: int,
           log=print) -> list[dict]:
    import numpy as np
    import torch

    from radiogen import schema
    from radiogen.batch import Batch
    from radiogen.config import load_config
    from radiogen.data import read_records
    from radiogen.evaluation.pipeline import PROGRAMS, load_data
    from radiogen.evaluation.synthesis import gene_swap, nanmean
    from radiogen.evaluation.truth import nodule_measures, program_response
    from radiogen.genes import apply_gene_stats
    from radiogen.train_step import build_training, refresh_ema_bn, train_step

    data = load_data(data_dir, seed=seed)
    manifest = schema.read_manifest(data_dir)
    cfg = load_config(config, [*sets, f"data.n_genes={len(manifest['gene_names'])}", f"train.seed={seed}"])
    genes = torch.from_numpy(apply_gene_stats(schema.gene_stats(manifest, cfg.data.gene_norm), data.genes_raw)).float()
    programs = np.array([[truth["subjects"][s]["programs"][p] for p in PROGRAMS] for s in data.subjects])
    index = {s: i for i, s in enumerate(data.subjects)}
    train_ids = {data.subjects[i] for i in data.indices("train")}
    rows = np.array([s in train_ids for s in data.slice_subject])
    images = torch.from_numpy(data.images[rows]).float()[:, None]                  # (N, 1, S, S)
    masks = torch.from_numpy(data.masks[rows]).float()[:, None]
    subject = np.array([index[s] for s in data.slice_subject[rows]])               # (N,) row of `genes`
    bg = read_records(data_dir, "train", "background")
    backgrounds = torch.from_numpy(schema.decode_images(bg["image"], cfg.data.image_size).copy())[:, None]

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    state = build_training(cfg)
    B = cfg.train.batch_size

    def response(split: str) -> dict[str, float]:
        idx = data.indices(split)
        swap = gene_swap(state.G_ema, data.backgrounds, genes[idx].numpy(), seed=seed)
        measures = nanmean(nodule_measures(swap.images, swap.masks), axis=1)       # (S, 4) over backgrounds
        return program_response(measures, programs[idx], PROGRAMS)

    history, window, start = [], {}, time.perf_counter()
    for step in range(1, steps + 1):
        i = rng.integers(0, len(images), B)
        other = np.array([rng.choice(np.flatnonzero(subject != s)) for s in subject[i]])  # another subject's row
        batch = Batch(image=images[i], mask=masks[i], genes=genes[subject[i]],
                      background=backgrounds[rng.integers(0, len(backgrounds), B)],
                      mask_mismatch=masks[other], genes_mismatch=genes[subject[other]])
        for k, v in train_step(state, batch).items():
            window[k] = window.get(k, 0.0) + float(v) / every
        if step % every == 0:
            refresh_ema_bn(state)
            point = {"step": step, "seconds": round(time.perf_counter() - start, 1), **window}
            for split in SPLITS:
                point |= {f"{split}/{k}": v for k, v in response(split).items()}
            history.append(point)
            window = {}
            log(f"  step {step}: D/I {point['loss/D/I']:.3f} G/I {point['loss/G/I']:.3f} mask area "
                f"{point['gen/mask_area']:.3f} | size rho train {point['train/response/size']:.2f} held-out "
                f"{point['heldout/response/size']:.2f} | density {point['train/response/density']:.2f} / "
                f"{point['heldout/response/density']:.2f}")
    return history


def plot(results: dict[str, list[dict]], real_area: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    panels = [("size program ρ (solid: train, dashed: held-out)", "response/size"),
              ("density program ρ", "response/density"), ("decoy program |ρ|", "response/decoy"),
              ("D accuracy, head I (solid: real, dashed: fake)", None),
              ("LSGAN loss, head I (solid: D, dashed: G)", None),
              ("synthetic mask area (fraction of slice)", "gen/mask_area")]
    for n, ((title, key), ax) in enumerate(zip(panels, axes.flat)):
        for c, (label, hist) in enumerate(results.items()):
            x, color = [p["step"] for p in hist], f"C{c}"
            if key and key.startswith("response/"):
                for split, style in zip(SPLITS, ("-", "--")):
                    ax.plot(x, [p[f"{split}/{key}"] for p in hist], style, color=color, label=f"{label} {split}")
                ax.set_ylim(-1 if key != "response/decoy" else 0, 1)
            elif n == 3:
                for who, style in (("real", "-"), ("fake", "--")):
                    ax.plot(x, [p.get(f"acc/D/I/{who}") for p in hist], style, color=color, label=f"{label} {who}")
            elif n == 4:
                for who, style in (("D", "-"), ("G", "--")):
                    ax.plot(x, [p[f"loss/{who}/I"] for p in hist], style, color=color, label=f"{label} {who}")
            else:
                ax.plot(x, [p[key] for p in hist], color=color, label=label)
        if key == "gen/mask_area":
            ax.axhline(real_area, color="black", lw=0.8, ls=":", label="real nodules")
        if key in ("response/size", "response/density"):
            ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a prepared dataset of a synthetic cohort")
    ap.add_argument("--truth", required=True, help="the cohort's truth.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", dest="configs", action="append", default=None, metavar="LABEL=CONFIG[:k=v,...]")
    args = ap.parse_args(argv)
    if args.every < 1 or args.steps < args.every:
        ap.error("need 1 <= --every <= --steps")
    sys.path[:0] = [str(REPO), str(REPO / "scripts")]
    import numpy as np
    import torch

    from bench_learnability import parse_config
    from radiogen.evaluation.pipeline import load_data

    torch.set_num_threads(1)
    truth = json.loads(Path(args.truth).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for spec in args.configs or DEFAULT_CONFIGS:
        label, config, sets = parse_config(spec)
        print(f"[curves] {label}: {config} {' '.join(sets)} ({args.steps} steps, seed {args.seed})", flush=True)
        results[label] = curves(Path(args.data), truth, config, sets, args.steps, args.every, args.seed,
                                log=lambda m: print(m, flush=True))
    data = load_data(args.data, seed=args.seed)
    real_area = float(np.mean(data.masks >= 0.5))
    (out / "curves.json").write_text(json.dumps({"settings": vars(args), "real_mask_area": real_area,
                                                 "curves": results}, indent=1) + "\n")
    plot(results, real_area, out / "curves.png")
    print(f"written: {out / 'curves.json'}, {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
