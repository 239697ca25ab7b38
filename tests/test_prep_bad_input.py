"""Bad input gets a clear one-line reason in the manifest, and nothing valid is lost."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from data_prep import gene_table as gt
from data_prep.prep import main
from radiogen import schema
from tests.test_prep import phantom, write_case, write_cases_csv

SIZE = 32
FAST = ["--image-size", str(SIZE), "--bg-vois", "1", "--bg-slices", "3"]


def _genes_tsv(path: Path, columns: list[str], n_genes: int = 8, cells: dict[tuple[int, str], str] | None = None) -> Path:
    rng = np.random.default_rng(3)
    cells = cells or {}
    lines = ["gene_symbol\t" + "\t".join(columns)]
    for g in range(n_genes):
        lines.append(f"G{g}\t" + "\t".join(cells.get((g, c), str(int(rng.poisson(40)))) for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def bad_cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    img = root / "img"
    rows: list[tuple[str, str, str]] = []

    def add(sid: str, ct: sitk.Image, mask: sitk.Image | None, name: str | None = None) -> None:
        image, m = write_case(img, name or sid, ct, mask)
        rows.append((sid, f"img/{image}", f"img/{m}"))

    ct, mask, _ = phantom(seed=1)
    add("GOOD-1", ct, mask)
    add("GOOD-2", *phantom(nodule_offset_mm=(40.0, 10.0, 5.0), seed=2)[:2])
    add("EDGE", *phantom(nodule_offset_mm=(-74.0, 0.0, -48.0), seed=3)[:2])  # 22 mm from the side, 10 from the end

    (img / "UNREADABLE_ct.nii.gz").write_bytes(b"this is not an image" * 50)
    sitk.WriteImage(mask, str(img / "UNREADABLE_mask.nii.gz"))
    rows.append(("UNREADABLE", "img/UNREADABLE_ct.nii.gz", "img/UNREADABLE_mask.nii.gz"))

    add("TRUNCATED", ct, mask)
    data = (img / "TRUNCATED_ct.nii.gz").read_bytes()
    (img / "TRUNCATED_ct.nii.gz").write_bytes(data[: len(data) // 2])

    mr = sitk.Cast(sitk.RescaleIntensity(ct, 0, 1200), sitk.sitkInt16)  # MR-like: no air near -1000
    add("NOT-CT", mr, mask)

    arr = sitk.GetArrayFromImage(ct).astype(np.float32)
    arr[3, 4, 5] = np.nan
    arr[4, 4, 5] = np.inf
    nan_ct = sitk.GetImageFromArray(arr)
    nan_ct.CopyInformation(ct)
    add("NAN-VOXELS", nan_ct, mask)

    other = sitk.Resample(mask, [48, 40, 20], sitk.Transform(), sitk.sitkNearestNeighbor, (-97.3, -41.9, -310.4),
                          (4.0, 5.0, 6.0), mask.GetDirection())
    add("MASK-GEOMETRY", ct, other)
    add("EMPTY-MASK", ct, sitk.Cast(mask * 0, sitk.sitkUInt8))
    add("FULL-MASK", ct, sitk.Cast(mask * 0 + 1, sitk.sitkUInt8))
    add("IMAGE-ONLY", ct, mask)
    add("DUP-IMAGE", ct, mask)
    rows.append(rows[-1])                      # the same id twice in the cases file
    add("DUP-GENES", ct, mask)
    add("../evil", ct, mask, name="evil")
    add("with space", ct, mask, name="space")

    write_cases_csv(root / "cases.csv", rows)
    columns = [r[0] for r in rows if r[0] != "IMAGE-ONLY"] + ["DUP-GENES", "GENES-ONLY"]
    columns = list(dict.fromkeys(columns)) + ["DUP-GENES"]
    _genes_tsv(root / "genes.tsv", columns,
               cells={(3, "GOOD-1"): "high", (5, "GOOD-2"): "NA", (6, "EMPTY-MASK"): "NA"})
    return root


@pytest.fixture(scope="module")
def bad_run(bad_cohort: Path, tmp_path_factory, ray_cluster) -> tuple[int, dict, str, Path]:
    """One run over every bad case plus three good subjects, on the Ray cluster."""
    out = tmp_path_factory.mktemp("bad_out") / "ds"
    import contextlib
    import io

    err = io.StringIO()
    out_text = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out_text):
        code = main(["--cases", str(bad_cohort / "cases.csv"), "--genes", str(bad_cohort / "genes.tsv"),
                     "--out", str(out), "--workers", "2", *FAST])
    return code, schema.read_manifest(out), out_text.getvalue() + err.getvalue(), out


EXPECTED = {
    "UNREADABLE": ("failed", "cannot read image UNREADABLE_ct.nii.gz (unreadable or truncated)"),
    "TRUNCATED": ("failed", "TRUNCATED_ct.nii.gz is truncated or corrupt"),
    "NOT-CT": ("failed", "not a CT in Hounsfield units"),
    "NAN-VOXELS": ("failed", "has 2 NaN/Inf voxels"),
    "MASK-GEOMETRY": ("failed", "mask geometry does not match the image"),
    "EMPTY-MASK": ("failed", "is empty (no voxel > 0)"),
    "FULL-MASK": ("failed", "covers 100% of the volume"),
    "IMAGE-ONLY": ("excluded", "has an image but no column in the gene table"),
    "GENES-ONLY": ("excluded", "in the gene table but no image"),
    "DUP-IMAGE": ("excluded", "appears 2 times in the imaging inputs"),
    "DUP-GENES": ("excluded", "appears 2 times in the gene table"),
    "../evil": ("excluded", "unsafe as a file name"),
    "with space": ("excluded", "unsafe as a file name"),
}


@pytest.mark.parametrize("sid", sorted(EXPECTED))
def test_bad_subject_gets_a_reason(bad_run, sid: str) -> None:
    _, manifest, printed, _ = bad_run
    status, reason = EXPECTED[sid]
    outcome = manifest["subjects"][sid]
    assert outcome["status"] == status and reason in outcome["reason"], outcome
    assert "\n" not in outcome["reason"]
    assert sid in printed or "subjects (" in printed  # the summary names it (or groups it)


def test_valid_subjects_are_kept(bad_run) -> None:
    code, manifest, printed, out = bad_run
    assert code == 0
    ok = sorted(s for s, o in manifest["subjects"].items() if o["status"] == "ok")
    assert ok == ["EDGE", "GOOD-1", "GOOD-2"]
    assert "3 subjects ok" in printed and "7 failed" in printed and "6 excluded" in printed
    table = schema.open_dataset(out).to_table()
    assert set(table["subject_id"].to_pylist()) == set(ok)
    assert schema.read_genes(out).subject_ids == ok


def test_edge_nodule_is_padded_and_said(bad_run) -> None:
    _, manifest, printed, out = bad_run
    warnings = manifest["subjects"]["EDGE"]["warnings"]
    assert any("too close to the image edge" in w and "padded" in w for w in warnings)
    assert any(w.startswith("CT ends within 30 mm of a nodule") for w in warnings)
    assert "too close to the image edge" in printed
    table = schema.open_dataset(out).to_table()
    padded = [p for s, k, p in zip(table["subject_id"].to_pylist(), table["kind"].to_pylist(),
                                   table["padded"].to_pylist()) if s == "EDGE" and k == "nodule"]
    assert padded and all(padded)


def test_genes_dropped_are_reported_not_filled(bad_run) -> None:
    _, manifest, printed, _ = bad_run
    genes = manifest["genes"]
    assert genes["dropped"] == {"non-numeric cell": ["G3"], "any NA": ["G5"]}  # G6's NA is an excluded subject's
    assert manifest["gene_names"] == ["G0", "G1", "G2", "G4", "G6", "G7"]
    assert genes["imputed_cells"] == []
    assert any("'high'" in e for e in genes["non_numeric_examples"])
    assert "1 dropped (non-numeric cell)" in printed and "1 dropped (any NA)" in printed


# ---------------------------------------------------------------------------------------------
# Runs that cannot produce a dataset


def test_no_subject_made_it_exits_nonzero(bad_cohort: Path, tmp_path: Path, capsys) -> None:
    rows = [r for r in (bad_cohort / "cases.csv").read_text().splitlines()[1:] if r.startswith(("EMPTY", "NOT-CT"))]
    (tmp_path / "img").symlink_to(bad_cohort / "img")
    (tmp_path / "cases.csv").write_text("subject_id,image,mask\n" + "\n".join(rows) + "\n")
    code = main(["--cases", str(tmp_path / "cases.csv"), "--genes", str(bad_cohort / "genes.tsv"),
                 "--out", str(tmp_path / "ds"), "--workers", "0", *FAST])
    err = capsys.readouterr().err
    assert code != 0
    assert "no subject made it" in err and "EMPTY-MASK" in err and "NOT-CT" in err
    assert not (tmp_path / "ds").exists()


def test_every_gene_has_an_na(bad_cohort: Path, tmp_path: Path, capsys) -> None:
    # EDGE has every value: a gene imputed from one training value would be constant on the split.
    columns = ["GOOD-1", "GOOD-2", "EDGE"]
    _genes_tsv(tmp_path / "genes.tsv", columns, n_genes=3, cells={(0, "GOOD-1"): "NA", (1, "GOOD-2"): "",
                                                                  (2, "GOOD-1"): "NA"})
    args = ["--cases", str(bad_cohort / "cases.csv"), "--genes", str(tmp_path / "genes.tsv"), "--workers", "0", *FAST]
    assert main([*args, "--out", str(tmp_path / "ds")]) != 0
    err = capsys.readouterr().err
    assert "no gene survives the NA policy 'drop'" in err and "--na-policy max-fraction=F" in err
    # The documented alternative keeps them, imputing the train median, and lists every cell.
    assert main([*args, "--out", str(tmp_path / "ds2"), "--na-policy", "max-fraction=0.5"]) == 0
    manifest = schema.read_manifest(tmp_path / "ds2")
    assert manifest["gene_names"] == ["G0", "G1", "G2"]
    assert len(manifest["genes"]["imputed_cells"]) == 3
    assert "3 NA cells imputed with the train median" in capsys.readouterr().out


def test_wrong_orientation_gets_a_hint(bad_cohort: Path, tmp_path: Path, capsys) -> None:
    code = main(["--cases", str(bad_cohort / "cases.csv"), "--genes", str(bad_cohort / "genes.tsv"),
                 "--genes-orientation", "samples-x-genes", "--out", str(tmp_path / "ds"), "--workers", "0", *FAST])
    assert code != 0
    assert "--genes-orientation" in capsys.readouterr().err


def test_no_matching_id_names_some_ids_of_each_side(bad_cohort: Path, tmp_path: Path, capsys) -> None:
    genes = _genes_tsv(tmp_path / "other.tsv", ["PAT-0001", "PAT-0002"])
    assert main(["--cases", str(bad_cohort / "cases.csv"), "--genes", str(genes), "--out", str(tmp_path / "ds"),
                 "--workers", "0", *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # The ids as the user wrote them, not numpy's repr of them (np.str_('...')).
    assert "no subject has both an image and genes; no imaging subject id (e.g. ../evil, DUP-GENES, DUP-IMAGE)" in err
    assert "ids there look like PAT-0001, PAT-0002)" in err and "np.str_" not in err and "[" not in err


def test_bad_flags_are_refused(bad_cohort: Path, tmp_path: Path, capsys) -> None:
    base = ["--cases", str(bad_cohort / "cases.csv"), "--genes", str(bad_cohort / "genes.tsv"), "--out", str(tmp_path)]
    for flag, value, message in [("--split", "0.5,0.5,0.5", "summing to 1"), ("--na-policy", "fill", "max-fraction"),
                                 ("--genes-orientation", "sideways", "invalid choice")]:
        with pytest.raises(SystemExit):
            main([*base, flag, value])
        assert message in capsys.readouterr().err
    # Refused before any subject is read: a size no model can take, and a file where the dataset folder goes.
    for size in ("31", "4", "100"):
        assert main([*base, "--image-size", size]) == 1
        err = capsys.readouterr().err
        assert f"--image-size must be a multiple of 8" in err and f"got {size}" in err and "Traceback" not in err
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    assert main([*base[:-1], str(a_file)]) == 1
    err = capsys.readouterr().err
    assert f"--out {a_file} is a file" in err and "Traceback" not in err and a_file.read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# Gene tables: formats and bad cells


def test_gene_table_formats_agree(tmp_path: Path) -> None:
    subjects, genes = ["R01-001", "R01-002", "R01-003"], ["TP53", "EGFR", "KRAS", "ALK"]
    values = np.arange(12, dtype=float).reshape(3, 4) * 1.5
    cells = [[f"{v:g}" for v in row] for row in values]
    cells[1][2] = "NA"
    geo = ["gene_symbol\t" + "\t".join(subjects)] + [
        f"{g}\t" + "\t".join(cells[s][j] for s in range(3)) for j, g in enumerate(genes)]
    (tmp_path / "geo.txt").write_text("!Series_title\t\"x\"\n" + "\n".join(geo) + "\n")
    (tmp_path / "geo.txt.gz").write_bytes(gzip.compress((tmp_path / "geo.txt").read_bytes()))
    (tmp_path / "geo_no_suffix").write_bytes(gzip.compress((tmp_path / "geo.txt").read_bytes()))
    (tmp_path / "geo.csv").write_text("\n".join(line.replace("\t", ",") for line in geo) + "\n")
    samples = [",".join(["id", *genes])] + [",".join([s, *cells[i]]) for i, s in enumerate(subjects)]
    (tmp_path / "samples.csv.gz").write_bytes(gzip.compress(("\n".join(samples) + "\n").encode()))
    parsed = [gt.read_gene_table(tmp_path / f) for f in ("geo.txt", "geo.txt.gz", "geo_no_suffix", "geo.csv")]
    parsed.append(gt.read_gene_table(tmp_path / "samples.csv.gz", "samples-x-genes"))
    for t in parsed:
        assert t.subjects == subjects and t.genes == genes
        assert np.isnan(t.values[1, 2]) and not t.non_numeric.any()
        assert np.allclose(np.nan_to_num(t.values, nan=-1), np.where(np.isnan(parsed[0].values), -1, values))


def test_gene_table_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.tsv").write_text("gene_symbol\tA\n")
    with pytest.raises(gt.GeneTableError, match="no data rows"):
        gt.read_gene_table(tmp_path / "empty.tsv")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(b"gene_symbol\tA\nG1\t3\n" * 200)[:60])
    with pytest.raises(gt.GeneTableError, match="truncated or corrupt gzip"):
        gt.read_gene_table(tmp_path / "cut.gz")
    with pytest.raises(gt.GeneTableError, match="cannot read gene table"):
        gt.read_gene_table(tmp_path / "missing.tsv")
    t = gt.read_gene_table(_genes_tsv(tmp_path / "g.tsv", ["A", "B"], 2, cells={(0, "A"): "1e400", (1, "B"): "3,5"}))
    assert t.non_numeric.sum() == 2  # an overflowing number and a decimal comma are not silently read
    assert gt.parse_na_policy("max-fraction=0.2").max_fraction == 0.2
    with pytest.raises(gt.GeneTableError):
        gt.parse_na_policy("max-fraction=1.5")


def test_duplicate_gene_symbols_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.tsv"
    path.write_text("gene_symbol\tA\tB\nTP53\t1\t2\nEGFR\t3\t4\nTP53\t5\t6\nKRAS\t1\t1\nKRAS\t2\t2\nKRAS\t3\t3\n")
    with pytest.raises(gt.GeneTableError, match=r"2 gene symbol\(s\) occur more than once: 'KRAS' x3, 'TP53' x2; "
                                                 r"symbols must be unique"):
        gt.read_gene_table(path)


def test_empty_columns_and_all_zero_subjects_are_said(tmp_path: Path) -> None:
    # A trailing tab on every line (an empty last column) and a subject that is 0 everywhere.
    path = tmp_path / "g.tsv"
    path.write_text("gene_symbol\tA\tZ\tB\t\nG1\t1\t0\t2\t\nG2\t3\t0\tNA\t\n")
    t = gt.read_gene_table(path)
    assert t.subjects == ["A", "Z", "B"] and t.genes == ["G1", "G2"]
    assert any("1 empty column(s) without name or values ignored (column 5)" in w for w in t.warnings)
    assert any("1 subject(s) have 0 for every gene" in w and ": Z;" in w for w in t.warnings)
    samples = tmp_path / "s.csv"  # the same in the other orientation: an empty trailing column is no gene
    samples.write_text("id,G1,G2,\nA,1,3,\nB,2,4,\n")
    t = gt.read_gene_table(samples, "samples-x-genes")
    assert t.genes == ["G1", "G2"] and t.subjects == ["A", "B"] and len(t.warnings) == 1


def test_trailing_tab_in_gene_table_is_no_subject(bad_cohort: Path, tmp_path: Path, capsys) -> None:
    columns = ["GOOD-1", "GOOD-2", "EDGE"]
    text = _genes_tsv(tmp_path / "genes.tsv", columns).read_text()
    (tmp_path / "genes.tsv").write_text("".join(line + "\t\n" for line in text.splitlines()))
    rows = [r for r in (bad_cohort / "cases.csv").read_text().splitlines()[1:] if r.split(",")[0] in columns]
    (tmp_path / "img").symlink_to(bad_cohort / "img")
    (tmp_path / "cases.csv").write_text("\ufeffsubject_id,image,mask\n" + "\n".join(rows) + "\n")  # with a BOM
    assert main(["--cases", str(tmp_path / "cases.csv"), "--genes", str(tmp_path / "genes.tsv"),
                 "--out", str(tmp_path / "ds"), "--workers", "0", *FAST]) == 0
    manifest = schema.read_manifest(tmp_path / "ds")
    assert sorted(manifest["subjects"]) == sorted(columns)  # no subject '' excluded as unsafe
    assert "warning: gene table genes.tsv: 1 empty column(s) without name or values ignored" in capsys.readouterr().out


def test_cases_file_with_byte_order_mark(tmp_path: Path) -> None:
    from data_prep.readers import read_cases_file

    (tmp_path / "cases.csv").write_bytes("subject_id,image,mask\nS1,a.nii.gz,b.nii.gz\n".encode("utf-8-sig"))
    (case,) = read_cases_file(tmp_path / "cases.csv")
    assert case.subject_id == "S1" and case.image == str(tmp_path / "a.nii.gz")
    (tmp_path / "latin.csv").write_bytes("subject_id,image,mask\nS\xe9,a,b\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_cases_file(tmp_path / "latin.csv")


# ---------------------------------------------------------------------------------------------
# DICOM SEG that references another series (real TCIA CT files, SEG written with highdicom)


def _tcia_subject(real_data: Path, root: Path, *, other_series: bool) -> None:
    import highdicom as hd
    import pydicom

    series = next((real_data / "nsclc_radiogenomics" / "dicom" / "NSCLC Radiogenomics" / "R01-005").glob("*/*"))
    study_dir = root / "R01-005" / series.parent.name
    shutil.copytree(series, study_dir / series.name)
    sources = sorted((pydicom.dcmread(f) for f in (study_dir / series.name).glob("*.dcm")),
                     key=lambda d: float(d.ImagePositionPatient[2]))
    if other_series:
        uid = hd.UID()
        for d in sources:
            d.SeriesInstanceUID = uid  # in memory only: the SEG then references a series not on disk
    pixels = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), bool)
    yy, xx = np.mgrid[: sources[0].Rows, : sources[0].Columns]
    for k in (3, 4, 5, 6):
        pixels[k] = (yy - 300) ** 2 + (xx - 260) ** 2 <= 14**2
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="nodule",
        segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        segmented_property_type=hd.sr.CodedConcept("4147007", "SCT", "Mass"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=pixels, segmentation_type="BINARY",
                              segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=300,
                              sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test",
                              manufacturer_model_name="test", software_versions="1", device_serial_number="1")
    (study_dir / "300-SEG").mkdir()
    seg.save_as(study_dir / "300-SEG" / "1-1.dcm")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_seg_is_aligned_by_position_and_other_series_refused(real_data: Path, tmp_path: Path, capsys) -> None:
    _genes_tsv(tmp_path / "genes.tsv", ["R01-005"])
    good, bad = tmp_path / "good", tmp_path / "bad"
    _tcia_subject(real_data, good, other_series=False)
    _tcia_subject(real_data, bad, other_series=True)
    args = ["--genes", str(tmp_path / "genes.tsv"), "--workers", "0", "--split", "1,0,0", *FAST]

    assert main(["--tcia-root", str(good), "--out", str(tmp_path / "ds"), *args]) == 0
    manifest = schema.read_manifest(tmp_path / "ds")
    outcome = manifest["subjects"]["R01-005"]
    assert outcome["status"] == "ok" and outcome["n_nodule_slices"] == 4
    # The disc was drawn at row 300, column 260 of CT slices 3..6 (z = -4..-1 mm): its physical centre.
    ct = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(next(good.glob("R01-005/*/*-*")))))
    want = ct.TransformContinuousIndexToPhysicalPoint((260.0, 300.0, 4.5))
    assert np.allclose(outcome["nodule_centres_mm"][0], want, atol=0.05)
    assert any(w.startswith("CT ends within 30 mm of a nodule") for w in outcome["warnings"])  # a 10 mm slab

    capsys.readouterr()
    assert main(["--tcia-root", str(bad), "--out", str(tmp_path / "ds2"), *args]) != 0
    err = capsys.readouterr().err
    assert "FAILED   R01-005: SEG 1-1.dcm references series" in err and "belongs to another series" in err
    assert not (tmp_path / "ds2").exists()
