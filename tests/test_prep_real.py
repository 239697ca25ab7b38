"""prep on real third-party files (../shared/data/real): lung1, LIDC-IDRI-0001, TCIA R01-005, GSE103584 genes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from data_prep.prep import main
from radiogen import schema
from tests.test_prep import rows_of

SIZE = 128  # the paper's size: the real nodules are small (lung1 ~14 mm)
# Imaging and genes of these files come from different people; the pairing is artificial (README).
PAIRS = {"R01-023": ("pyradiomics_lung/lung1_image.nrrd", "pyradiomics_lung/lung1_label.nrrd"),
         "R01-024": ("lidc_idri/LIDC-IDRI-0001_ct.nrrd", "lidc_idri/LIDC-IDRI-0001_nodules_consensus.nrrd")}
GENES = "nsclc_radiogenomics/expression/split_dev_df_zscore_100patients.csv"


def physical_centroid(mask_path: Path) -> np.ndarray:
    """Centroid of the mask's voxels in physical mm, computed with numpy (independently of prep)."""
    mask = sitk.ReadImage(str(mask_path))
    ijk = np.argwhere(sitk.GetArrayFromImage(mask) > 0)[:, ::-1].mean(0)
    direction = np.array(mask.GetDirection()).reshape(3, 3)
    return np.array(mask.GetOrigin()) + direction @ (ijk * np.array(mask.GetSpacing()))


@pytest.fixture(scope="module")
def real_run(real_data: Path, tmp_path_factory, ray_cluster) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("real")
    with open(root / "cases.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "image", "mask"])
        w.writerows([sid, str(real_data / img), str(real_data / m)] for sid, (img, m) in PAIRS.items())
    out = root / "ds"
    code = main(["--cases", str(root / "cases.csv"), "--genes", str(real_data / GENES), "--out", str(out),
                 "--image-size", str(SIZE), "--bg-vois", "2", "--bg-slices", "10", "--workers", "2",
                 "--seed", "1"])  # seed 1 puts one of the two subjects in the training split
    assert code == 0
    return out, schema.read_manifest(out)


@pytest.mark.parametrize("sid", sorted(PAIRS))
def test_nodule_centred_on_the_masks_physical_centroid(real_run, real_data: Path, sid: str) -> None:
    out, manifest = real_run
    table = schema.open_dataset(out).to_table()
    nod = rows_of(table, sid, "nodule")
    want = physical_centroid(real_data / PAIRS[sid][1])
    got = np.array([nod[f"voi_center_{a}_mm"][0].as_py() for a in "xyz"])
    assert np.allclose(got, want, atol=0.01)
    masks = schema.decode_masks(nod["mask"], SIZE).astype(float)
    rr, cc = np.mgrid[0:SIZE, 0:SIZE]
    assert abs((masks * rr).sum() / masks.sum() - (SIZE - 1) / 2) < 1.0
    assert abs((masks * cc).sum() / masks.sum() - (SIZE - 1) / 2) < 1.0
    area = masks.sum((1, 2))
    dz = sitk.ReadImage(str(real_data / PAIRS[sid][1])).GetSpacing()[2]
    assert abs((area * nod["slice_offset_mm"].to_numpy()).sum() / area.sum()) < dz / 2
    assert nod["pixel_spacing_mm"][0].as_py() == pytest.approx(60 / SIZE)
    assert not any(nod["padded"].to_pylist())


def test_every_slice_with_nodule_is_taken(real_run, real_data: Path) -> None:
    out, manifest = real_run
    # lung1: a nodule on 3 slices of 5 mm; LIDC-0001: consensus nodule on slab slices 26..33.
    assert manifest["subjects"]["R01-023"]["n_nodule_slices"] == 3
    assert manifest["subjects"]["R01-024"]["n_nodule_slices"] == 8
    lidc = json.loads((real_data / "lidc_idri" / "LIDC-IDRI-0001_nodules.json").read_text())
    assert len(lidc["nodules"]) == manifest["subjects"]["R01-024"]["n_nodules"] == 1


def test_background_slices_are_lung_without_nodule(real_run) -> None:
    out, manifest = real_run
    table = schema.open_dataset(out).to_table()
    for sid in PAIRS:
        bg = rows_of(table, sid, "background")
        assert bg.num_rows == manifest["subjects"][sid]["n_background_slices"] >= 10
        images = schema.decode_images(bg["image"], SIZE)
        assert schema.decode_masks(bg["mask"], SIZE).max() == 0
        assert (images < -0.6).mean() > 0.3  # mostly lung parenchyma (< -625 HU)
        centre = images[:, SIZE // 2 - 2:SIZE // 2 + 2, SIZE // 2 - 2:SIZE // 2 + 2].mean((1, 2))
        assert np.median(centre) < -0.3  # the VOI centre lies inside the lung


def test_real_gene_table(real_run, real_data: Path) -> None:
    out, manifest = real_run
    with open(real_data / GENES) as f:
        rows = list(csv.reader(f))
    header = rows[0]
    cols = [header.index(s) for s in PAIRS]
    with_na = sorted(r[0] for r in rows[1:] if any(r[c].strip() == "" for c in cols))
    assert manifest["genes"]["n_in_table"] == len(rows) - 1 == 1000
    assert sorted(manifest["genes"]["dropped"]["any NA"]) == with_na
    assert len(manifest["gene_names"]) == 1000 - len(with_na)
    genes = schema.read_genes(out)
    g = rows[1:][[r[0] for r in rows[1:]].index(manifest["gene_names"][0])]
    assert genes.values[genes.subject_ids.index("R01-023"), 0] == pytest.approx(float(g[cols[0]]), rel=1e-6)
    # Already z-scored (negative values): no log_zscore statistics, and the manifest says why.
    assert manifest["gene_stats"] is None and "negative values" in manifest["genes"]["stats_note"]
    with pytest.raises(schema.SchemaError, match="gene_norm=raw"):
        schema.gene_stats(manifest, "log_zscore")
    assert schema.gene_stats(manifest, "raw").method == "raw"
    assert manifest["subjects"]["R01-005"]["status"] == "excluded"  # genes but no image here


def test_tcia_folder_is_read_and_ids_matched(real_data: Path, tmp_path: Path, capsys) -> None:
    root = real_data / "nsclc_radiogenomics" / "dicom" / "NSCLC Radiogenomics"
    code = main(["--tcia-root", str(root), "--genes", str(real_data / GENES), "--out", str(tmp_path / "ds"),
                 "--workers", "0", "--image-size", "32"])
    err = capsys.readouterr().err
    assert code != 0 and "no subject made it" in err
    # R01-005 matched its gene column, its 10-slice CT series was read, and it has no SEG (no tumour).
    assert "FAILED   R01-005: CT read (512x512x10 voxels) but no nodule mask / SEG series" in err
    assert "EXCLUDED 99 subjects" in err and "in the gene table but no image" in err
    assert not (tmp_path / "ds").exists()
