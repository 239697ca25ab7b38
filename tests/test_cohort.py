"""`radiogen cohort`: layout, CT, nodule truth, GEO genes, gene->phenotype links, DICOM SEG, determinism, CLI."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.stats import spearmanr

from data_prep import cohort, gene_model, phantom
from data_prep.cohort import write_cohort
from data_prep.gene_model import PROGRAMS, simulate_expression
from data_prep.phantom import Grid, synthesize_subject

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _truth(out: Path) -> dict:
    return json.loads((out / "truth.json").read_text())


def _lungs(hu: np.ndarray) -> np.ndarray:
    """Threshold at -320 HU, drop the air around the body, keep the two largest components, fill per slice."""
    air = hu < -320
    labels, n = ndimage.label(air)
    border = np.unique(np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    sizes = ndimage.sum_labels(air, labels, range(1, n + 1))
    sizes[border[border > 0] - 1] = 0
    two = 1 + np.argsort(sizes)[::-1][:2]
    assert sizes[two[1] - 1] > 0.3 * sizes[two[0] - 1], "the two largest air components in the body are not lungs"
    lungs = np.isin(labels, two)
    return np.stack([ndimage.binary_fill_holes(s) for s in lungs])


def _nodule_voxels(mask: np.ndarray, origin, spacing, centres: np.ndarray) -> list[np.ndarray]:
    """Physical (x, y, z) of mask voxels, split by the nearest true centre."""
    zi, yi, xi = np.nonzero(mask)
    pts = np.asarray(origin) + np.stack([xi, yi, zi], 1) * np.asarray(spacing)
    nearest = np.argmin(np.linalg.norm(pts[:, None] - centres[None], axis=2), axis=1)
    return [pts[nearest == k] for k in range(len(centres))]


# ---------------------------------------------------------------------------------------------
# NIfTI cohort


def test_nifti_layout_geometry_and_hu(synthetic_cohort: Path) -> None:
    truth = _truth(synthetic_cohort)
    assert truth["format"] == "nifti" and truth["programs"] == list(PROGRAMS)
    cases = pd.read_csv(synthetic_cohort / "cases.csv", dtype=str)
    assert list(cases.columns) == ["subject_id", "image", "mask"]
    assert list(cases.subject_id) == list(truth["subjects"]) and len(cases) == 6
    grid = Grid.for_matrix(128)
    assert grid.slices == 42 and grid.spacing == pytest.approx((2.8, 2.8, 5.0))
    for row in cases.itertuples():
        assert SAFE_ID.match(row.subject_id)
        assert row.image == f"images/{row.subject_id}_ct.nii.gz" and row.mask == f"masks/{row.subject_id}_mask.nii.gz"
        ct = sitk.ReadImage(str(synthetic_cohort / row.image))
        mask = sitk.ReadImage(str(synthetic_cohort / row.mask))
        assert ct.GetPixelID() == sitk.sitkInt16 and mask.GetPixelID() == sitk.sitkUInt8
        assert ct.GetSize() == (128, 128, 42) and ct.GetSpacing() == pytest.approx(grid.spacing)
        assert truth["spacing_mm"] == pytest.approx(list(grid.spacing))
        for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(mask, get)() == pytest.approx(getattr(ct, get)())
        hu = sitk.GetArrayFromImage(ct)
        m = sitk.GetArrayFromImage(mask)
        assert set(np.unique(m)) == {0, 1}
        assert abs(hu[:, :6, :6].mean() + 1000) < 10                  # air in the corners
        lungs = _lungs(hu)
        parenchyma = hu[lungs & (hu < -320)]
        assert -900 < parenchyma.mean() < -800 and 10 < parenchyma.std() < 80
        assert 0.05 < lungs.mean() < 0.4
        # The lungs end inside the slab (35 mm from its ends): a 60 mm background VOI keeps all its planes.
        assert not lungs[:7].any() and not lungs[-7:].any() and lungs[8:-8].any(axis=(1, 2)).all()
        assert hu.max() > 400                                          # bone
        body = hu[(hu > -320) & ~lungs]
        assert -150 < np.median(body) < 80                             # fat, muscle, blood
        # Nodules lie inside the lungs: the voxels just around them are lung (vessels may touch them).
        nodules = m.astype(bool)
        shell = ndimage.binary_dilation(nodules, iterations=2) & ~nodules
        assert (lungs[shell] | (hu[shell] < -320)).mean() > 0.85, "a nodule is not surrounded by lung"


def test_nodule_centroids_and_placement_match_truth(synthetic_cohort: Path) -> None:
    truth = _truth(synthetic_cohort)
    for sid, subj in truth["subjects"].items():
        mask = sitk.ReadImage(str(synthetic_cohort / "masks" / f"{sid}_mask.nii.gz"))
        spacing, origin, size = np.array(mask.GetSpacing()), np.array(mask.GetOrigin()), np.array(mask.GetSize())
        centres = np.array([n["center_mm"] for n in subj["nodules"]])
        assert 1 <= len(centres) <= 2
        parts = _nodule_voxels(sitk.GetArrayFromImage(mask), origin, spacing, centres)
        for nod, pts, centre in zip(subj["nodules"], parts, centres):
            assert len(pts) == nod["voxels"] > 0
            # Physical centroid of the written mask = truth centre, within a voxel.
            assert np.all(np.abs(pts.mean(0) - centre) < spacing)
            assert nod["volume_mm3"] == pytest.approx(len(pts) * spacing.prod(), rel=1e-3)
            assert 5.0 <= nod["diameter_mm"] <= 30.0
            # A 60 mm VOI around the centre stays inside the volume (in plane and along z).
            far = origin + (size - 1) * spacing
            assert np.all(centre - origin >= 30.0) and np.all(far - centre >= 30.0)
            # Same centre when SimpleITK maps the centroid index to a physical point.
            idx = np.mean([mask.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in pts], axis=0)
            assert np.allclose(mask.TransformContinuousIndexToPhysicalPoint(tuple(idx)), centre, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# Genes


def test_genes_tsv_is_geo_layout_with_na(synthetic_cohort: Path) -> None:
    truth = _truth(synthetic_cohort)
    text = (synthetic_cohort / "genes.tsv").read_text()
    assert text.splitlines()[0] == "\t".join(["gene_symbol", *truth["subjects"]])
    table = pd.read_csv(synthetic_cohort / "genes.tsv", sep="\t", index_col="gene_symbol", na_values=["NA"],
                        keep_default_na=False)
    assert table.shape == (gene_model.DEFAULT_GENES, 6) and table.index.is_unique
    assert list(table.index) == list(truth["gene_programs"])
    values = table.to_numpy(dtype=float)
    na = np.isnan(values)
    assert na.any() and "\tNA" in text
    assert np.all(values[~na] >= 0) and np.all(values[~na] == np.round(values[~na]))
    # Dropping genes with any NA (the paper's rule) keeps most genes and most of every module.
    kept = ~na.any(axis=1)
    assert 0.85 < kept.mean() < 1.0
    programs = pd.Series(truth["gene_programs"])
    for name in PROGRAMS:
        module = (programs == name).to_numpy()
        assert module.sum() == 25 and kept[module].sum() >= 20
    assert programs.isna().sum() == gene_model.DEFAULT_GENES - 4 * 25
    # The written table is the gene model's table for this seed (the shared test cohort is of the aligned design).
    assert truth["design"] == "aligned" and set(truth["program_kinds"].values()) == {"aligned"}
    assert text == gene_model.genes_tsv(simulate_expression(6, 0, design="aligned"))


def _module_scores(expr: gene_model.Expression) -> np.ndarray:
    """(subjects, programs): mean z-scored log2(count + 1) over each program's module genes."""
    logx = np.log2(expr.counts + 1.0)
    z = (logx - np.nanmean(logx, axis=1, keepdims=True)) / np.nanstd(logx, axis=1, keepdims=True)
    member = np.array(expr.gene_program, dtype=object)
    return np.stack([np.nanmean(z[member == name], axis=0) for name in PROGRAMS], axis=1)


def test_programs_recoverable_from_gene_modules() -> None:
    expr = simulate_expression(30, seed=3, design="aligned")
    scores = _module_scores(expr)
    rho = np.array([[spearmanr(expr.programs[:, p], scores[:, q])[0] for q in range(4)] for p in range(4)])
    assert np.all(np.diag(rho) > 0.7), rho
    # Each program is read from its own module, not from the others.
    off = rho[~np.eye(4, dtype=bool)]
    assert np.all(np.diag(rho) > np.abs(rho).max(axis=1, where=~np.eye(4, dtype=bool), initial=0) + 0.2), rho
    assert np.abs(off).mean() < 0.3
    # Nuisance genes do not carry the programs: random nuisance sets score far lower.
    nuisance = np.flatnonzero(np.array([p is None for p in expr.gene_program]))
    rng = np.random.default_rng(0)
    logx = np.log2(expr.counts + 1.0)
    z = (logx - np.nanmean(logx, 1, keepdims=True)) / np.nanstd(logx, 1, keepdims=True)
    for p in range(4):
        pick = rng.choice(nuisance, 25, replace=False)
        assert abs(spearmanr(expr.programs[:, p], np.nanmean(z[pick], 0))[0]) < 0.6
    # Programs are the subjects' own (subject k is the same whatever the cohort size).
    assert np.array_equal(expr.programs[:6], simulate_expression(6, seed=3, design="aligned").programs)


# ---------------------------------------------------------------------------------------------
# Phenotype follows the programs


def test_truth_phenotype_follows_programs(tmp_path: Path) -> None:
    out = write_cohort(tmp_path / "c", subjects=16, seed=11, genes=60, matrix=96, design="aligned")
    truth = _truth(out)["subjects"]
    z = np.array([[s["programs"][p] for p in PROGRAMS] for s in truth.values()])
    first = [s["nodules"][0] for s in truth.values()]
    assert spearmanr(z[:, 0], [n["diameter_mm"] for n in first])[0] > 0.9
    assert spearmanr(z[:, 0], [n["volume_mm3"] for n in first])[0] > 0.8
    assert spearmanr(z[:, 1], [n["density"] for n in first])[0] > 0.9
    assert spearmanr(z[:, 2], [n["irregularity"] for n in first])[0] > 0.9
    assert spearmanr(z[:, 3], [n["texture_sd_hu"] for n in first])[0] > 0.9
    # Mean HU inside the written mask rises from ground glass to solid with the density program.
    mean_hu = []
    for sid in truth:
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "images" / f"{sid}_ct.nii.gz")))
        m = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "masks" / f"{sid}_mask.nii.gz")))
        mean_hu.append(hu[m == 1].mean())
    assert spearmanr(z[:, 1], mean_hu)[0] > 0.7


def _what_if(program: str, low: float, high: float, matrix: int = 256,
             **others: float) -> tuple[phantom.Subject, phantom.Subject]:
    """The same subject (anatomy, draws) with one program set low and then high (the others 0 or as given)."""
    base = np.array([others.get(p, 0.0) for p in PROGRAMS])
    z_lo, z_hi = base.copy(), base.copy()
    k = PROGRAMS.index(program)
    z_lo[k], z_hi[k] = low, high
    grid = Grid.for_matrix(matrix)
    return synthesize_subject(4, 0, grid, z_lo), synthesize_subject(4, 0, grid, z_hi)


def _first_nodule(s: phantom.Subject) -> np.ndarray:
    labels, _ = ndimage.label(s.mask, np.ones((3, 3, 3)))
    spacing = np.array(Grid.for_matrix(s.mask.shape[1]).spacing)
    idx = np.round((np.array(s.nodules[0]["center_mm"]) - s.origin) / spacing).astype(int)[::-1]
    near = labels[tuple(slice(i - 2, i + 3) for i in idx)]
    return labels == np.bincount(near[near > 0]).argmax()


def test_each_program_moves_its_phenotype_in_the_image() -> None:
    small, big = _what_if("size", -1.5, 1.5)
    assert _first_nodule(big).sum() > 4 * _first_nodule(small).sum()

    ggo, solid = _what_if("density", -2.0, 2.0)
    m = _first_nodule(ggo)
    assert np.array_equal(m, _first_nodule(solid))         # only the attenuation changes
    assert -700 < ggo.hu[m].mean() < -350 and solid.hu[m].mean() > -150

    smooth, rough = _what_if("irregularity", -2.0, 2.0)

    def compactness(mask: np.ndarray) -> float:  # surface voxels per volume^(2/3): 4.8 for a ball
        return (mask & ~ndimage.binary_erosion(mask)).sum() / mask.sum() ** (2 / 3)

    assert compactness(_first_nodule(rough)) > 1.15 * compactness(_first_nodule(smooth))

    flat, textured = _what_if("texture", -2.0, 2.0, density=2.0)  # a solid nodule: no ground glass in the core
    m = _first_nodule(flat)
    assert np.array_equal(m, _first_nodule(textured))
    core = ndimage.binary_erosion(m, iterations=2)
    assert core.sum() > 20
    assert textured.hu[core].std() > 1.5 * flat.hu[core].std()


# ---------------------------------------------------------------------------------------------
# TCIA cohort: CT DICOM series + DICOM SEG


def test_tcia_series_and_seg(synthetic_cohort_tcia: Path) -> None:
    import highdicom as hd
    import pydicom

    out = synthetic_cohort_tcia
    truth = _truth(out)
    assert truth["format"] == "tcia" and not (out / "cases.csv").exists() and (out / "genes.tsv").is_file()
    grid = Grid.for_matrix(128)
    assert sorted(p.name for p in (out / "tcia").iterdir()) == list(truth["subjects"])
    for j, sid in enumerate(truth["subjects"]):
        (study_dir,) = (out / "tcia" / sid).iterdir()
        assert re.fullmatch(r"\d\d-\d\d-\d{4}-NA-[A-Za-z0-9 .-]+-\d{5}", study_dir.name)
        series = {p.name.split(".")[0]: p for p in study_dir.iterdir()}
        assert set(series) == {"2", "1000"}
        ct_dir, seg_dir = series["2"], series["1000"]
        assert re.fullmatch(r"2\.000000-[A-Za-z0-9 .-]+-\d{5}", ct_dir.name)
        assert sorted(p.name for p in seg_dir.iterdir()) == ["1-1.dcm"]
        assert sorted(p.name for p in ct_dir.iterdir()) == [f"1-{i:03d}.dcm" for i in range(1, grid.slices + 1)]

        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(ct_dir))
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(names)
        ct = reader.Execute()
        assert ct.GetSize() == (128, 128, grid.slices) and ct.GetSpacing() == pytest.approx(grid.spacing, abs=1e-6)
        assert ct.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
        ct_headers = [pydicom.dcmread(n, stop_before_pixels=True) for n in names]
        assert {h.Modality for h in ct_headers} == {"CT"} and len({h.SeriesInstanceUID for h in ct_headers}) == 1
        z_of = {h.SOPInstanceUID: float(h.ImagePositionPatient[2]) for h in ct_headers}
        slice_z = np.array([ct.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(grid.slices)])

        # The same subject as the NIfTI writer makes it: voxels and mask equal.
        ref = synthesize_subject(truth["seed"], j, grid)
        assert np.array_equal(sitk.GetArrayFromImage(ct), ref.hu)
        assert ct.GetOrigin() == pytest.approx(ref.origin, abs=1e-5)

        seg = hd.seg.segread(str(seg_dir / "1-1.dcm"))
        assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
        assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Nodule"]
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_headers[0].SeriesInstanceUID
        assert seg.FrameOfReferenceUID == ct_headers[0].FrameOfReferenceUID
        assert seg.PatientID == sid and seg.StudyInstanceUID == ct_headers[0].StudyInstanceUID
        # One frame per slice with nodule, each at the position of the CT slice it was derived from.
        frames = seg.pixel_array.reshape(-1, 128, 128)
        with_nodule = np.flatnonzero(ref.mask.any(axis=(1, 2)))
        assert len(frames) == len(with_nodule) == int(seg.NumberOfFrames)
        decoded = np.zeros_like(ref.mask)
        for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
            ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
            assert ipp[:2] == pytest.approx(ct.GetOrigin()[:2], abs=1e-4)
            (k,) = np.flatnonzero(np.abs(slice_z - ipp[2]) < 1e-3)
            source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            assert z_of[source] == pytest.approx(ipp[2], abs=1e-4)
            decoded[k] = frames[f]
        assert np.array_equal(decoded, ref.mask)
        # And the truth centres are the centroids of the SEG's nodules.
        centres = np.array([n["center_mm"] for n in truth["subjects"][sid]["nodules"]])
        for pts, centre in zip(_nodule_voxels(decoded, ct.GetOrigin(), ct.GetSpacing(), centres), centres):
            assert np.all(np.abs(pts.mean(0) - centre) < np.array(grid.spacing))


# ---------------------------------------------------------------------------------------------
# Determinism, refusal, command line


def _arrays(out: Path) -> list[np.ndarray]:
    return [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted((out / "images").glob("*"))
            + sorted((out / "masks").glob("*"))]


def test_same_seed_same_files_other_seed_differs(tmp_path: Path) -> None:
    a = write_cohort(tmp_path / "a", subjects=2, seed=5, genes=80, matrix=64, design="aligned")
    b = write_cohort(tmp_path / "b", subjects=2, seed=5, genes=80, matrix=64, design="aligned")
    c = write_cohort(tmp_path / "c", subjects=2, seed=6, genes=80, matrix=64, design="aligned")
    assert (a / "genes.tsv").read_bytes() == (b / "genes.tsv").read_bytes()
    assert (a / "truth.json").read_bytes() == (b / "truth.json").read_bytes()
    assert (a / "cases.csv").read_bytes() == (b / "cases.csv").read_bytes()
    assert all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b)))
    assert (a / "genes.tsv").read_bytes() != (c / "genes.tsv").read_bytes()
    assert not np.array_equal(_arrays(a)[0], _arrays(c)[0])
    # DICOM too: same seed, same bytes (UIDs derive from the seed).
    d = write_cohort(tmp_path / "d", subjects=1, seed=5, genes=80, matrix=64, fmt="tcia", design="aligned")
    e = write_cohort(tmp_path / "e", subjects=1, seed=5, genes=80, matrix=64, fmt="tcia", design="aligned")
    files_d = sorted(p.relative_to(d) for p in d.rglob("*.dcm"))
    assert files_d == sorted(p.relative_to(e) for p in e.rglob("*.dcm"))
    assert all((d / f).read_bytes() == (e / f).read_bytes() for f in files_d)


def test_refuses_non_empty_output_and_bad_arguments(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_cohort(out, subjects=1, seed=0, matrix=64)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_cohort(empty, subjects=1, seed=0, genes=50, matrix=64, design="aligned") == empty
    assert (empty / "cases.csv").is_file()
    for bad, match in [(dict(matrix=32), "--matrix"), (dict(genes=10), "--genes"),
                       (dict(genes=60, design="drivers"), "--genes must be at least 100 for design drivers"),
                       (dict(design="causal"), "--design must be one of"),
                       (dict(na_fraction=0.7), "--na-fraction"), (dict(subjects=0), "--subjects"),
                       (dict(fmt="dicom"), "--format")]:
        with pytest.raises(ValueError, match=match):
            write_cohort(tmp_path / "x", **{"subjects": 1, "seed": 0, **bad})
    assert not (tmp_path / "x").exists()


def test_cli_writes_and_reports(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="radiogen")
    cohort.register_cli(parser.add_subparsers(dest="command", required=True))
    argv = ["cohort", "--out", str(tmp_path / "c"), "--subjects", "2", "--seed", "1", "--genes", "60",
            "--matrix", "64", "--na-fraction", "0.1", "--format", "nifti", "--design", "aligned"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "2 synthetic subjects" in lines[0] and str(tmp_path / "c") in lines[0]
    assert "design aligned" in lines[0]
    truth = _truth(tmp_path / "c")
    assert truth["genes"] == 60 and truth["na_fraction"] == 0.1 and len(truth["subjects"]) == 2
    args = parser.parse_args(argv)
    assert args.func(args) == 1
    assert "not an empty folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["cohort", "--out", str(tmp_path / "d"), "--subjects", "1", "--seed", "0", "--format", "png"])
