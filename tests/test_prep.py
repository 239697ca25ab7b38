"""`radiogen prep` end to end: synthetic cohorts (NIfTI and TCIA DICOM), geometry, resume, atomic output."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import SimpleITK as sitk

from data_prep import geometry
from data_prep.prep import PrepError, PrepOptions, PrepParams, assign_splits, main, run_prep, seed_with_splits
from radiogen import schema

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
FAST = dict(image_size=SIZE, bg_vois=1, bg_slices=4)


# ---------------------------------------------------------------------------------------------
# A chest phantom with known physical geometry (also used by test_prep_bad_input.py)


def phantom(*, size=(96, 80, 40), spacing=(2.0, 2.5, 3.0), origin=(-97.3, -41.9, -310.4),
            direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), nodule_offset_mm=(-45.0, 0.0, 0.0), radius_mm=8.0,
            seed=0) -> tuple[sitk.Image, sitk.Image, np.ndarray]:
    """CT (int16 HU: air, an elliptic body, two elliptic lungs with noise) and a spherical nodule
    mask. The nodule sits at the body centre + nodule_offset_mm (physical); returns its centre."""
    d = np.array(direction, float).reshape(3, 3)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    phys = np.asarray(origin) + (idx * np.asarray(spacing)) @ d.T
    body_centre = np.asarray(origin) + d @ ((np.asarray(size) - 1) / 2 * np.asarray(spacing))
    rel = phys - body_centre
    hu = np.full(len(idx), -1000.0)
    body = (rel[:, 0] / 90) ** 2 + (rel[:, 1] / 95) ** 2 <= 1
    hu[body] = 40
    for side in (-1, 1):
        lung = ((rel[:, 0] - side * 45) / 35) ** 2 + (rel[:, 1] / 55) ** 2 + (rel[:, 2] / 70) ** 2 <= 1
        hu[lung] = -850
    centre = body_centre + np.asarray(nodule_offset_mm)
    nodule = np.linalg.norm(phys - centre, axis=1) <= radius_mm
    hu[nodule] = 30
    hu += np.random.default_rng(seed).normal(0, 20, len(hu))

    def to_image(values: np.ndarray, pixel: int) -> sitk.Image:
        img = sitk.GetImageFromArray(values.reshape(size).transpose(2, 1, 0).copy())
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        img.SetDirection(tuple(float(v) for v in direction))
        return sitk.Cast(img, pixel)

    return to_image(hu, sitk.sitkInt16), to_image(nodule.astype(np.uint8), sitk.sitkUInt8), centre


def write_case(folder: Path, sid: str, ct: sitk.Image, mask: sitk.Image | None) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ct, str(folder / f"{sid}_ct.nii.gz"))
    if mask is not None:
        sitk.WriteImage(mask, str(folder / f"{sid}_mask.nii.gz"))
    return f"{sid}_ct.nii.gz", f"{sid}_mask.nii.gz"


def write_cases_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "image", "mask"])
        w.writerows(rows)
    return path


def write_genes(path: Path, subjects: list[str], n_genes: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["gene_symbol\t" + "\t".join(subjects)]
    for g in range(n_genes):
        lines.append(f"GENE{g}\t" + "\t".join(str(int(v)) for v in rng.poisson(50, len(subjects))))
    path.write_text("\n".join(lines) + "\n")
    return path


def rows_of(table, sid: str, kind: str | None = None):
    t = table.filter(pc.equal(table["subject_id"], sid))
    return t if kind is None else t.filter(pc.equal(t["kind"], kind))


# ---------------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (0, -1, 0, 1, 0, 0, 0, 0, 1)], ids=["identity", "flipped-xy", "rotated-90"])
def test_nodule_at_known_position_is_centred(direction) -> None:
    ct, mask, centre = phantom(direction=direction)
    nodules, _, _ = geometry.find_nodules(mask)
    assert len(nodules) == 1
    assert np.allclose(nodules[0].center_mm, centre, atol=0.6)  # voxelised sphere vs its true centre

    n = 48
    voi = geometry.extract_voi(ct, nodules[0].center_mm, voi_mm=60, image_size=n, window=(-1000, 500), own_mask=mask)
    rr, cc = np.mgrid[0:n, 0:n]
    m = voi.mask.astype(float)
    assert abs((m * rr).sum() / m.sum() - (n - 1) / 2) < 0.5
    assert abs((m * cc).sum() / m.sum() - (n - 1) / 2) < 0.5
    area = m.sum((1, 2))
    assert abs((area * voi.offsets_mm).sum() / area.sum()) < ct.GetSpacing()[2] / 2
    # CT planes within +-30 mm of the centre, 3 mm apart; the sphere spans its diameter of planes.
    assert len(voi.offsets_mm) in (20, 21) and np.allclose(np.diff(voi.offsets_mm), 3.0)
    present = np.flatnonzero(area)
    assert 4 <= len(present) <= 7 and np.all(np.abs(voi.offsets_mm[present]) <= 8.0 + 1.5)
    assert not voi.padded.any() and voi.in_ct.all()
    # Intensities: nodule ~30 HU -> (30 + 1000) / 1500 * 2 - 1 = 0.373; lung ~-850 HU -> -0.8.
    assert abs(np.median(voi.image[voi.mask == 1]) - 0.373) < 0.05
    assert abs(np.median(voi.image[voi.mask == 0]) + 0.8) < 0.1


def test_voi_axes_follow_the_ct_direction() -> None:
    """array[r, c] of a slice is voxel (i=c, j=r) of the VOI grid, whose axes are the CT's axes."""
    for direction in [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)]:
        ct, mask, centre = phantom(direction=direction)
        marker = np.asarray(centre) + 15.0 * np.array(direction[0::3], float)  # 15 mm along the CT's i axis
        arr = sitk.GetArrayFromImage(ct)
        i, j, k = ct.TransformPhysicalPointToIndex(tuple(marker))
        arr[k, j - 1:j + 2, i - 1:i + 2] = 1500
        bright = sitk.GetImageFromArray(arr)
        bright.CopyInformation(ct)
        n = 60  # 1 mm pixels
        voi = geometry.extract_voi(bright, centre, voi_mm=60, image_size=n, window=(-1000, 500))
        kc = ct.TransformPhysicalPointToContinuousIndex(tuple(centre))[2]
        plane = int(np.argmin(np.abs(voi.offsets_mm - (k - kc) * ct.GetSpacing()[2])))
        r, c = np.unravel_index(np.argmax(voi.image[plane]), (n, n))
        assert abs(r - (n - 1) / 2) <= 3 and abs(c - ((n - 1) / 2 + 15)) <= 3


def test_nodule_near_edge_is_padded_and_said() -> None:
    ct, mask, _ = phantom(nodule_offset_mm=(-45.0, 0.0, -48.0))  # 12 mm above the lowest plane
    voi = geometry.extract_voi(ct, geometry.find_nodules(mask)[0][0].center_mm, voi_mm=60, image_size=SIZE,
                               window=(-1000, 500), own_mask=mask)
    assert not voi.in_ct.all() and voi.padded[~voi.in_ct].all()


def test_background_centres_lie_inside_the_lungs() -> None:
    ct, mask, _ = phantom()
    centres, warning = geometry.background_centres(ct, mask, 5, np.random.default_rng(0))
    assert len(centres) == 5 and warning == ""
    arr = sitk.GetArrayViewFromImage(ct)
    for c in centres:
        i, j, k = ct.TransformPhysicalPointToIndex(c)
        assert arr[k, j, i] < -500  # in lung
    lungs = geometry.segment_lungs(ct)
    assert 0.5e6 < sitk.GetArrayViewFromImage(lungs).sum() * np.prod(lungs.GetSpacing()) < 2e6  # ~2 x 1.1 l
    # Given the VOI size, centres whose VOI has every CT plane and no nodule come first.
    centres, _ = geometry.background_centres(ct, mask, 5, np.random.default_rng(0), voi_mm=60)
    for c in centres:
        voi = geometry.extract_voi(ct, c, voi_mm=60, image_size=SIZE, window=(-1000, 500), all_nodules=mask)
        assert voi.in_ct.all() and not voi.padded.any() and not voi.other_nodules.any()


def test_assign_splits_is_by_subject_and_seeded() -> None:
    ids = [f"S{i:02d}" for i in range(20)]
    a = assign_splits(ids, (0.7, 0.15, 0.15), seed=1)
    assert a == assign_splits(list(reversed(ids)), (0.7, 0.15, 0.15), seed=1)
    assert a != assign_splits(ids, (0.7, 0.15, 0.15), seed=2)
    assert set(assign_splits(ids, (1.0, 0.0, 0.0), seed=1).values()) == {"train"}
    assert "test" not in assign_splits(ids, (0.67, 0.33, 0.0), seed=1).values()


def test_splits_are_stable_when_subjects_come_and_go() -> None:
    fractions = (0.7, 0.15, 0.15)
    ids = [f"R01-{i:03d}" for i in range(24)]
    full = assign_splits(ids, fractions, seed=0)
    for gone in ids:  # one subject dropped: nobody else moves
        rest = [s for s in ids if s != gone]
        assert assign_splits(rest, fractions, seed=0) == {s: full[s] for s in rest}
    more = assign_splits(ids + [f"R02-{i:03d}" for i in range(50)], fractions, seed=0)
    assert {s: more[s] for s in ids} == full  # subjects added: nobody moves


def test_split_fractions_hold_on_many_subjects() -> None:
    ids = [f"SUBJ-{i:05d}" for i in range(1000)]
    for fractions in [(0.7, 0.15, 0.15), (0.5, 0.5, 0.0)]:
        got = list(assign_splits(ids, fractions, seed=3).values())
        for name, want in zip(("train", "val", "test"), fractions):
            assert abs(got.count(name) / len(ids) - want) < 0.04, (name, got.count(name))


def test_seed_with_splits_names_a_seed_that_fills_the_splits() -> None:
    ids = ["R01-023", "R01-024"]
    assert "train" not in assign_splits(ids, (0.7, 0.15, 0.15), seed=0).values()  # why prep would refuse
    seed = seed_with_splits(ids, (0.7, 0.15, 0.15), 0)
    assert list(assign_splits(ids, (0.7, 0.15, 0.15), seed).values()) == ["train", "train"]
    six = [f"SYN-{i:04d}" for i in range(1, 7)]
    got = assign_splits(six, (0.5, 0.25, 0.25), seed_with_splits(six, (0.5, 0.25, 0.25), 0))
    assert sorted(set(got.values())) == ["test", "train", "val"] and list(got.values()).count("train") >= 2


# ---------------------------------------------------------------------------------------------
# Phantom cohort through the real command: Ray tasks, resume, atomic output


@pytest.fixture(scope="module")
def phantom_cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    rows = []
    for s in range(4):
        ct, mask, _ = phantom(nodule_offset_mm=(-45.0 + 3 * s, 5.0 * s, 0.0), seed=s)
        image, m = write_case(root / "images", f"PH-{s}", ct, mask)
        rows.append((f"PH-{s}", f"images/{image}", f"images/{m}"))
    write_cases_csv(root / "cases.csv", rows)
    write_genes(root / "genes.tsv", [r[0] for r in rows])
    return root


def _args(cohort: Path, out: Path, *extra: str) -> list[str]:
    return ["--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"), "--out", str(out),
            "--image-size", str(SIZE), "--bg-vois", "1", "--bg-slices", "4", *extra]


def test_phantom_cohort_with_ray_then_resume(phantom_cohort: Path, tmp_path: Path, ray_cluster, capsys) -> None:
    out = tmp_path / "ds"
    assert main(_args(phantom_cohort, out)) == 0
    first = schema.read_manifest(out)
    assert first["counts"]["processed"] == 4 and first["counts"]["subjects"]["ok"] == 4
    assert "prep: 4 subjects ok" in capsys.readouterr().out
    table = schema.open_dataset(out).to_table()
    for sid, outcome in first["subjects"].items():
        nod = rows_of(table, sid, "nodule")
        assert nod.num_rows == outcome["n_nodule_slices"] >= 4
        assert rows_of(table, sid, "background").num_rows == 4
        centre = [nod[f"voi_center_{a}_mm"][0].as_py() for a in "xyz"]
        assert np.allclose(centre, outcome["nodule_centres_mm"][0], atol=0.01)
    genes = schema.read_genes(out)
    assert genes.values.shape == (4, 12) and genes.gene_names == [f"GENE{g}" for g in range(12)]
    assert first["gene_stats"]["method"] == "log_zscore"
    train_ids = first["splits"]["train"]
    assert np.allclose(first["gene_stats"]["mean"],
                       np.log2(genes.values[[genes.subject_ids.index(s) for s in train_ids]] + 1).mean(0), atol=1e-5)

    # Re-run: nothing changed, nothing processed, same data.
    assert main(_args(phantom_cohort, out)) == 0
    again = schema.read_manifest(out)
    assert again["counts"]["processed"] == 0 and again["counts"]["from_cache"] == 4
    assert schema.open_dataset(out).to_table().equals(table)

    # One changed input file: only that subject is processed again.
    ct, mask, _ = phantom(nodule_offset_mm=(-40.0, 0.0, 3.0), seed=9)
    write_case(phantom_cohort / "images", "PH-2", ct, mask)
    assert main(_args(phantom_cohort, out)) == 0
    third = schema.read_manifest(out)
    assert third["counts"]["processed"] == 1 and third["counts"]["from_cache"] == 3
    assert [s for s, o in third["subjects"].items() if not o["from_cache"]] == ["PH-2"]


def test_killed_run_leaves_previous_dataset(phantom_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert main(_args(phantom_cohort, out, "--workers", "0")) == 0
    before = schema.read_manifest(out)
    # A second run with other parameters (so every subject is processed), killed as soon as it works.
    cmd = [sys.executable, "-m", "data_prep.prep", *_args(phantom_cohort, out, "--workers", "0", "--seed", "5")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cache = tmp_path / ".ds.prep-cache"
    deadline = time.time() + 60

    def state() -> dict[str, int]:
        # A subject is finished when its .json entry (written last, by rename) changes; temp files do not count.
        return {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}

    seen = state()
    while time.time() < deadline and proc.poll() is None:
        if state() != seen:  # the first subject of the new run has finished
            break
        time.sleep(0.01)
    assert proc.poll() is None, "prep finished before it could be killed; the test needs a slower run"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert schema.read_manifest(out) == before
    assert schema.open_dataset(out).count_rows() == sum(sum(v.values()) for v in before["counts"]["slices"].values())
    # The next run clears what the killed one left and reuses its finished subjects.
    assert main(_args(phantom_cohort, out, "--workers", "0", "--seed", "5")) == 0
    after = schema.read_manifest(out)
    assert after["params"]["seed"] == 5 and after["counts"]["from_cache"] >= 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.tmp-") or p.name.startswith(".ds.old-")]


def test_interrupted_swap_is_recovered(phantom_cohort: Path, tmp_path: Path) -> None:
    """Killed between the two renames of the swap: only .ds.old-<pid> is left; it is restored."""
    out = tmp_path / "ds"
    assert main(_args(phantom_cohort, out, "--workers", "0")) == 0
    before = schema.read_manifest(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.replace(out, tmp_path / f".ds.old-{dead.pid}")
    (tmp_path / f".ds.tmp-{dead.pid}").mkdir()  # a half-written dataset of the killed run
    from radiogen.publish import recover

    recover(out)
    assert schema.read_manifest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.prep-cache", "ds"]


def test_out_folder_with_other_files_is_not_overwritten(phantom_cohort: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(_args(phantom_cohort, out, "--workers", "0")) == 1
    assert "not a prepared dataset" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------
# The synthetic cohort (data_prep.cohort) in both formats


def _truth(cohort: Path) -> dict:
    return json.loads((cohort / "truth.json").read_text())["subjects"]


def _check_against_truth(out: Path, cohort: Path, size: int) -> None:
    truth = _truth(cohort)
    manifest = schema.read_manifest(out)
    table = schema.open_dataset(out).to_table()
    assert sorted(manifest["subjects"]) == sorted(truth)
    assert all(o["status"] == "ok" for o in manifest["subjects"].values()), manifest["subjects"]
    for sid, outcome in manifest["subjects"].items():
        true_centres = np.array([n["center_mm"] for n in truth[sid]["nodules"]])
        assert outcome["n_nodules"] == len(true_centres)
        for got in outcome["nodule_centres_mm"]:
            # Each VOI is centred on its true nodule (the truth is the same mask's centroid).
            assert np.min(np.linalg.norm(true_centres - np.asarray(got), axis=1)) < 0.5
        nod = rows_of(table, sid, "nodule")
        masks = schema.decode_masks(nod["mask"], size)
        assert masks.reshape(len(masks), -1).any(1).all()
        assert rows_of(table, sid, "background").num_rows > 0
    assert set(table["split"].to_pylist()) <= set(schema.SPLITS)
    # Genes: raw counts as in genes.tsv, genes with any NA dropped and named in the manifest.
    lines = [ln.split("\t") for ln in (cohort / "genes.tsv").read_text().splitlines()]
    header, rows = lines[0], {r[0]: r[1:] for r in lines[1:]}
    with_na = sorted(g for g, cells in rows.items() if "NA" in cells)
    assert with_na and sorted(manifest["genes"]["dropped"]["any NA"]) == with_na
    genes = schema.read_genes(out)
    assert sorted(genes.subject_ids) == sorted(truth)
    sid = genes.subject_ids[0]
    want = [float(rows[g][header.index(sid) - 1]) for g in genes.gene_names]
    assert np.array_equal(genes.values[0], np.array(want, np.float32))


def test_synthetic_cohort_nifti(synthetic_cohort: Path, tmp_path: Path, ray_cluster) -> None:
    out = tmp_path / "ds"
    code = main(["--cases", str(synthetic_cohort / "cases.csv"), "--genes", str(synthetic_cohort / "genes.tsv"),
                 "--out", str(out), *[f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]])
    assert code == 0
    _check_against_truth(out, synthetic_cohort, SIZE)
    manifest = schema.read_manifest(out)
    assert manifest["genes"]["na_policy"] == "drop" and manifest["gene_stats"]["method"] == "log_zscore"


@pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent:UserWarning")  # highdicom, on the writer
def test_synthetic_cohort_tcia(synthetic_cohort_tcia: Path, tmp_path: Path, ray_cluster) -> None:
    out = tmp_path / "ds"
    # --seed 1: 2 of the 3 subjects in train (seed 0 puts 1 there; log_zscore needs 2).
    code = main(["--tcia-root", str(synthetic_cohort_tcia / "tcia"), "--genes", str(synthetic_cohort_tcia / "genes.tsv"),
                 "--out", str(out), "--seed", "1", *[f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]])
    assert code == 0
    _check_against_truth(out, synthetic_cohort_tcia, SIZE)
    manifest = schema.read_manifest(out)
    for outcome in manifest["subjects"].values():  # every DICOM file (CT slices and the SEG) is fingerprinted
        assert len(outcome["inputs"]) > 2 and all(p.endswith(".dcm") for p in outcome["inputs"])


def test_run_prep_api_in_process(phantom_cohort: Path, tmp_path: Path) -> None:
    opts = PrepOptions(out=tmp_path / "ds", genes=phantom_cohort / "genes.tsv", cases=phantom_cohort / "cases.csv",
                       params=PrepParams(**FAST), workers=0)
    manifest = run_prep(opts)
    assert manifest["image"]["size"] == SIZE and manifest["image"]["pixel_spacing_mm"] == pytest.approx(60 / SIZE)
    assert set(manifest["inputs"]) >= {str(phantom_cohort / "genes.tsv")}
    assert all(len(h) == 64 for h in manifest["inputs"].values())


def test_radiogen_prep_command(phantom_cohort: Path, tmp_path: Path) -> None:
    from ray_jobs.cli import main as radiogen_main

    assert radiogen_main(["prep", *_args(phantom_cohort, tmp_path / "ds", "--workers", "0")]) == 0
    assert schema.read_manifest(tmp_path / "ds")["counts"]["subjects"]["ok"] == 4
    help_text = subprocess.run([sys.executable, "-m", "ray_jobs.cli", "prep", "--help"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout
    for flag in ("--tcia-root", "--cases", "--genes", "--out", "--image-size", "--voi-mm", "--bg-vois", "--bg-slices",
                 "--split", "--seed", "--na-policy", "--genes-orientation", "--workers", "--address"):
        assert flag in help_text
    # Registering the command must stay cheap: Ray is imported only when prep runs.
    code = "import sys, data_prep.prep; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Genes on the training split, splits of small cohorts, fingerprint, warnings


def _genes_rows(path: Path, subjects: list[str], rows: dict[str, list[float]]) -> Path:
    lines = ["gene_symbol\t" + "\t".join(subjects)]
    lines += [f"{g}\t" + "\t".join(f"{v:g}" for v in values) for g, values in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_constant_genes_dropped_and_clipping_said(phantom_cohort: Path, tmp_path: Path, capsys) -> None:
    subjects = [f"PH-{s}" for s in range(4)]
    splits = assign_splits(subjects, (0.7, 0.15, 0.15), 0)
    assert [splits[s] for s in subjects] == ["train", "train", "test", "train"]  # what the rows below rely on
    rows = {"ZERO": [0, 0, 0.39, 0], "FIVE": [5, 5, 80, 5], "NEAR": [10, 11, 1000, 10],
            **{f"G{g}": list(np.random.default_rng(g).poisson(50, 4).astype(float)) for g in range(5)}}
    genes = _genes_rows(tmp_path / "genes.tsv", subjects, rows)
    assert main(["--cases", str(phantom_cohort / "cases.csv"), "--genes", str(genes), "--out", str(tmp_path / "ds"),
                 "--workers", "0", "--image-size", str(SIZE), "--bg-vois", "1", "--bg-slices", "4"]) == 0
    printed = capsys.readouterr().out
    manifest = schema.read_manifest(tmp_path / "ds")
    from data_prep.gene_table import CONSTANT_REASON
    from radiogen.genes import Z_CLIP, apply_gene_stats

    assert manifest["genes"]["dropped"] == {CONSTANT_REASON: ["ZERO", "FIVE"]}
    assert manifest["gene_names"] == ["NEAR", *[f"G{g}" for g in range(5)]]
    assert "warning: 2 genes constant on the training split dropped (listed in manifest.json genes.dropped)" in printed
    assert "2 dropped (constant on the training split" in printed
    # NEAR varies a little on train and is 1000 in the test subject: clipped, counted and said.
    assert manifest["genes"]["clipped"] == {"values": 1, "subjects": ["PH-2"]}
    assert manifest["gene_stats"]["clip"] == manifest["genes"]["zscore_clip"] == Z_CLIP
    assert f"warning: 1 gene values of 1 subjects lie outside +-{Z_CLIP:g} after log_zscore" in printed
    z = apply_gene_stats(schema.gene_stats(manifest, "log_zscore"), schema.read_genes(tmp_path / "ds").values)
    assert np.abs(z).max() == Z_CLIP


def test_empty_training_split_is_refused_with_a_seed_that_works(phantom_cohort: Path, tmp_path: Path) -> None:
    rows = [r.split(",") for r in (phantom_cohort / "cases.csv").read_text().splitlines()[1:]]
    sid = next(r[0] for r in rows if assign_splits([r[0]], (0.7, 0.15, 0.15), 0)[r[0]] != "train")
    write_cases_csv(tmp_path / "cases.csv", [(sid, str(phantom_cohort / r[1]), str(phantom_cohort / r[2]))
                                             for r in rows if r[0] == sid])
    opts = dict(genes=phantom_cohort / "genes.tsv", cases=tmp_path / "cases.csv", workers=0)
    with pytest.raises(PrepError, match="no training subject") as err:
        run_prep(PrepOptions(out=tmp_path / "ds", params=PrepParams(**FAST), **opts))
    seed = seed_with_splits([sid], (0.7, 0.15, 0.15), 0)
    assert f"--seed {seed} gives 1 train / 0 val / 0 test" in str(err.value)
    manifest = run_prep(PrepOptions(out=tmp_path / "ds", params=PrepParams(**FAST, seed=seed), **opts))
    assert manifest["splits"]["train"] == [sid] and manifest["gene_stats"] is None
    assert "at least 2 training subjects" in manifest["genes"]["stats_note"]
    assert any(w.startswith("1 training subject") for w in manifest["warnings"])


def test_identical_inputs_give_identical_fingerprints(phantom_cohort: Path, tmp_path: Path, ray_cluster) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(_args(phantom_cohort, a)) == 0  # Ray tasks
    assert main(_args(phantom_cohort, b, "--workers", "0")) == 0  # in process, another cache
    assert main(_args(phantom_cohort, c, "--workers", "0", "--seed", "1")) == 0
    ma, mb = schema.read_manifest(a), schema.read_manifest(b)
    assert ma["outputs"] == mb["outputs"] and set(ma["outputs"]) == {*ma["files"]["slices"], schema.GENES_FILE}
    assert schema.dataset_fingerprint(a) == schema.dataset_fingerprint(b) != schema.dataset_fingerprint(c)
    schema.verify_dataset(a)
    assert main(_args(phantom_cohort, a)) == 0  # from the cache: the same dataset again
    assert schema.dataset_fingerprint(a) == schema.dataset_fingerprint(b)


def test_subject_warnings_are_printed_once_per_kind() -> None:
    from data_prep.prep import outcome_lines

    outcomes = {f"S{i}": {"status": "ok", "reason": "", "warnings": [f"CT ends within 30 mm of a nodule: nodule {i}"]}
                for i in range(7)}
    outcomes["S0"]["warnings"].append("mask speck ignored (< 10 mm3): a component of 2.0 mm3")
    assert outcome_lines(outcomes) == [
        "warning: 7 subjects: CT ends within 30 mm of a nodule (S0, S1, S2, S3, S4, ...; details in manifest.json "
        "subjects)",
        "warning: S0: mask speck ignored (< 10 mm3): a component of 2.0 mm3"]


def test_demo_cohort_prepares_without_warnings(tmp_path: Path, capsys) -> None:
    """The README demo's cohort and prep arguments (prep in process here)."""
    from data_prep.cohort import write_cohort

    # All 30 subjects: with fewer, the small training split can put a validation value past the +-10 clip.
    cohort = write_cohort(tmp_path / "cohort", subjects=30, seed=0, matrix=128)
    assert main(["--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"), "--out",
                 str(tmp_path / "data"), "--image-size", "32", "--bg-slices", "10", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "prep: 30 subjects ok" in printed and "warning" not in printed.lower(), printed
    manifest = schema.read_manifest(tmp_path / "data")
    assert all(o["n_background_slices"] == 20 for o in manifest["subjects"].values())
