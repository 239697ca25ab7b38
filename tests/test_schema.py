"""The prepared-dataset contract: encoding, validation on write and on read, version refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from radiogen import schema
from radiogen.genes import apply_gene_stats, fit_gene_stats

SIZE = 16


def _slice_table(n: int, rng: np.random.Generator, *, subject: str = "S1", split: str = "train") -> pa.Table:
    images = rng.uniform(-1, 1, (n, SIZE, SIZE)).astype(np.float32)
    masks = (rng.uniform(size=(n, SIZE, SIZE)) > 0.7).astype(np.uint8)
    return pa.table({
        "subject_id": [subject] * n, "kind": ["nodule", "background"] * (n // 2) + ["nodule"] * (n % 2),
        "split": [split] * n, "voi_id": pa.array(range(n), pa.int32()), "slice_index": pa.array(range(n), pa.int32()),
        "slice_offset_mm": pa.array(np.linspace(-5, 5, n), pa.float32()),
        "image": [schema.encode_image(a) for a in images], "mask": [schema.encode_mask(m) for m in masks],
        "pixel_spacing_mm": pa.array([60 / SIZE] * n, pa.float32()),
        "voi_center_x_mm": [1.0] * n, "voi_center_y_mm": [2.0] * n, "voi_center_z_mm": [3.0] * n,
        "padded": [False] * n,
    }, schema=schema.SLICE_SCHEMA)


def _manifest(files: list[str], gene_names: list[str], stats: dict | None, outputs: dict | None = None) -> dict:
    return {
        "schema_version": schema.SCHEMA_VERSION, "created_utc": "2024-01-01T00:00:00+00:00", "radiogen_version": "0",
        "image": {"size": SIZE, "pixel_spacing_mm": 60 / SIZE, "voi_mm": 60.0, "hu_window": [-1000, 500]},
        "params": {}, "gene_names": gene_names, "genes": {}, "gene_stats": stats,
        "splits": {"train": ["S1"], "val": [], "test": []}, "counts": {}, "inputs": {},
        "subjects": {"S1": {"status": "ok", "reason": ""}}, "files": {"slices": files, "genes": schema.GENES_FILE},
        "outputs": outputs or {},
    }


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, pa.Table, np.ndarray]:
    rng = np.random.default_rng(0)
    table = _slice_table(300, rng)
    files = schema.write_slice_files([table.slice(0, 100), table.slice(100)], tmp_path, image_size=SIZE)
    genes = rng.gamma(2.0, 50.0, (1, 7)).astype(np.float32)  # stats are fitted on the stored float32 values
    schema.write_gene_file(["S1"], ["train"], genes, tmp_path)
    stats = fit_gene_stats(genes, "log_zscore").to_dict()
    outputs = schema.output_hashes(tmp_path, [*files, schema.GENES_FILE])
    schema.write_manifest(_manifest(files, [f"G{i}" for i in range(7)], stats, outputs), tmp_path)
    return tmp_path, table, genes


def test_roundtrip_pyarrow(dataset) -> None:
    root, table, genes = dataset
    read = schema.open_dataset(root).to_table()
    assert read.num_rows == 300
    assert np.array_equal(schema.decode_images(read["image"], SIZE), schema.decode_images(table["image"], SIZE))
    assert np.array_equal(schema.decode_masks(read["mask"], SIZE), schema.decode_masks(table["mask"], SIZE))
    one = schema.decode_image(read["image"][5].as_py(), SIZE)
    assert one.shape == (SIZE, SIZE) and one.dtype == np.float32
    g = schema.read_genes(root)
    assert g.subject_ids == ["S1"] and g.values.shape == (1, 7)
    assert np.allclose(g.values, genes.astype(np.float32))
    stats = schema.gene_stats(schema.read_manifest(root), "log_zscore")
    assert np.allclose(apply_gene_stats(stats, g.values), 0.0, atol=1e-3)  # one subject: z-score 0


def test_row_groups_and_files(dataset) -> None:
    root, _, _ = dataset
    manifest = schema.read_manifest(root)
    for rel in manifest["files"]["slices"]:
        meta = pq.ParquetFile(root / rel).metadata
        assert all(meta.row_group(i).num_rows <= schema.ROW_GROUP_ROWS for i in range(meta.num_row_groups))
        assert meta.num_rows <= schema.ROWS_PER_FILE


def test_ray_data_reads_the_same(dataset, ray_cluster) -> None:
    root, table, _ = dataset
    import ray

    ds = ray.data.read_parquet(schema.slice_files(root))
    batches = list(ds.iter_batches(batch_size=64, batch_format="numpy"))
    images = np.concatenate([schema.decode_images(b["image"], SIZE) for b in batches])
    masks = np.concatenate([schema.decode_masks(b["mask"], SIZE) for b in batches])
    assert images.shape == (300, SIZE, SIZE)
    # Ray Data may reorder blocks; compare as multisets of rows via a per-row checksum.
    want = schema.decode_images(table["image"], SIZE)
    assert sorted(images.sum((1, 2)).round(3)) == sorted(want.sum((1, 2)).round(3))
    assert masks.sum() == schema.decode_masks(table["mask"], SIZE).sum()


def test_other_schema_version_refused(dataset) -> None:
    root, _, _ = dataset
    path = root / schema.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = schema.SCHEMA_VERSION + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(schema.SchemaError) as err:
        schema.open_dataset(root)
    msg = str(err.value)
    assert f"schema version {schema.SCHEMA_VERSION + 1}" in msg and f"schema version {schema.SCHEMA_VERSION}" in msg
    assert "radiogen prep" in msg


def test_parquet_file_of_other_version_refused(dataset) -> None:
    root, table, _ = dataset
    rel = schema.read_manifest(root)["files"]["slices"][0]
    old = table.replace_schema_metadata({b"radiogen.schema_version": b"0"})
    pq.write_table(old, root / rel)
    with pytest.raises(schema.SchemaError, match="schema version '0'|schema version 0"):
        schema.open_dataset(root)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "is missing"),
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "is truncated"),
    (_flip_byte, "has changed since it was written"),
])
def test_verify_dataset_names_a_damaged_file(dataset, damage, message) -> None:
    root, _, _ = dataset
    schema.verify_dataset(root)
    rel = schema.read_manifest(root)["files"]["slices"][0]
    damage(root / rel)
    with pytest.raises(schema.SchemaError, match=message) as err:
        schema.verify_dataset(root)
    assert rel in str(err.value) and "re-run `radiogen prep`" in str(err.value)


def test_fingerprint_follows_content_not_time(dataset) -> None:
    root, _, _ = dataset
    path = root / schema.MANIFEST_NAME
    first = schema.dataset_fingerprint(root)
    assert len(first) == 16 and int(first, 16) >= 0
    manifest = json.loads(path.read_text())
    manifest["created_utc"] = "2031-05-05T05:05:05+00:00"
    manifest["params"]["source"] = "/elsewhere/cases.csv"  # the same inputs, copied elsewhere
    path.write_text(json.dumps(manifest))
    assert schema.dataset_fingerprint(root) == first
    manifest["outputs"][schema.GENES_FILE]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    assert schema.dataset_fingerprint(root) != first


def test_dataset_without_manifest_is_not_a_dataset(tmp_path: Path) -> None:
    schema.write_slice_files([_slice_table(4, np.random.default_rng(1))], tmp_path, image_size=SIZE)
    with pytest.raises(schema.SchemaError, match="not a prepared dataset"):
        schema.open_dataset(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop_columns(["padded"]), "missing \\['padded'\\]"),
    (lambda t: t.set_column(0, "subject_id", pa.array(range(t.num_rows))), "wrong types"),
    (lambda t: t.set_column(1, "kind", pa.array(["tumour"] * t.num_rows)), "kind"),
    (lambda t: t.set_column(2, "split", pa.array(["dev"] * t.num_rows)), "split"),
    (lambda t: t.set_column(6, "image", pa.array([b"\0" * 12] * t.num_rows)), "image column"),
    (lambda t: t.set_column(6, "image", pa.array([schema.encode_image(np.full((SIZE, SIZE), 2.0))] * t.num_rows)),
     "inside \\[-1, 1\\]"),
    (lambda t: t.set_column(7, "mask", pa.array([schema.encode_mask(np.full((SIZE, SIZE), 3))] * t.num_rows)),
     "0 or 1"),
    (lambda t: t.set_column(3, "voi_id", pa.array([None] * t.num_rows, pa.int32())), "null"),
])
def test_validate_table_rejects(change, message) -> None:
    table = _slice_table(6, np.random.default_rng(2))
    schema.validate_table(table, image_size=SIZE)
    with pytest.raises(schema.SchemaError, match=message):
        schema.validate_table(change(table), image_size=SIZE)


def test_validate_manifest_and_gene_table() -> None:
    with pytest.raises(schema.SchemaError, match="lacks key 'gene_names'"):
        bad = _manifest([], [], None)
        del bad["gene_names"]
        schema.validate_manifest(bad)
    bad = _manifest([], ["A", "B"], None)
    bad["subjects"]["S1"]["status"] = "fine"
    with pytest.raises(schema.SchemaError, match="status"):
        schema.validate_manifest(bad)
    with pytest.raises(schema.SchemaError, match="no log_zscore gene statistics"):
        schema.gene_stats(_manifest([], ["A"], None) | {"genes": {"stats_note": "negative values"}}, "log_zscore")
    table = pa.table({"subject_id": ["a", "a"], "split": ["train", "val"],
                      "genes": [schema.encode_genes(np.ones(3))] * 2}, schema=schema.GENE_SCHEMA)
    with pytest.raises(schema.SchemaError, match="duplicate"):
        schema.validate_gene_table(table, n_genes=3)
    table = pa.table({"subject_id": ["a"], "split": ["train"], "genes": [schema.encode_genes(np.array([1, np.nan, 2]))]},
                     schema=schema.GENE_SCHEMA)
    with pytest.raises(schema.SchemaError, match="finite"):
        schema.validate_gene_table(table, n_genes=3)


def test_schema_module_imports_neither_ray_nor_mlflow() -> None:
    import subprocess
    import sys

    code = "import sys, radiogen.schema; print(any(m in sys.modules for m in ('ray', 'mlflow', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
