"""The prepared-dataset contract (docs/design.md §4): parquet columns, manifest, and their validation.

This is the one module that defines what `radiogen prep` writes and what training reads. It is
checked on write (`validate_table`, `validate_gene_table`, `validate_manifest`) and on read
(`read_manifest`, `open_dataset`, `read_genes`); a dataset written under another
`SCHEMA_VERSION` is refused with a message that says to re-run `radiogen prep`.
`verify_dataset` checks the data files against the hashes the manifest recorded when they were
written, and `dataset_fingerprint` names a dataset by its content (not by when it was made).

On-disk layout of a prepared dataset ROOT (written atomically: the directory appears complete
or not at all; `manifest.json` is its last file, so a folder without one is never read)::

    ROOT/manifest.json          JSON, see `validate_manifest` for the keys
    ROOT/slices/part-NNNNN.parquet
                                one row per 2D slice, `SLICE_SCHEMA`; files of at most
                                ROWS_PER_FILE rows in row groups of ROW_GROUP_ROWS rows,
                                rows grouped by subject (shuffle at training time)
    ROOT/genes.parquet          one row per subject that has slices, `GENE_SCHEMA`; gene
                                values raw (after NA filtering), in manifest `gene_names` order

Image encoding. `image` and `mask` are `binary` cells holding the raw little-endian bytes of a
C-ordered (H, W) = (image_size, image_size) array: float32 in [-1, 1] (HU clipped to
`hu_window` and scaled linearly) and uint8 in {0, 1}. Row r runs along the slice's second
in-plane axis (the CT's y / index j direction), column c along the first (x / index i), so
`array[r, c]` is voxel (i=c, j=r) of the VOI grid. Plain bytes are read cheaply by both Ray Data
(numpy batches give an object array of `bytes`) and pyarrow (contiguous value buffer); decode
either with `decode_images` / `decode_masks`. A fixed-size-list column would come back from
Ray Data as an object array of arrays, and Ray's tensor extension type is unreadable by plain
pyarrow, hence bytes. Genes use the same encoding (float32, length `len(gene_names)`).

Geometry. Every VOI is a cube of side `voi_mm` centred on a physical point (`voi_center_*_mm`,
the patient/LPS coordinates SimpleITK uses), sampled in plane at `pixel_spacing_mm` =
voi_mm / image_size along the CT's own direction cosines; its slices are the CT's own axial
planes, `slice_offset_mm` being each plane's signed distance from the centre along the CT's
third axis. `padded` is true when part of the slice lay outside the CT and was filled with the
window minimum (air).

This module imports only numpy, pyarrow and radiogen: no Ray, no MLflow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from radiogen.genes import GeneNorm, GeneStats

SCHEMA_VERSION = 2
"""Bump whenever a column, an encoding or a manifest key changes meaning.
2: manifest `outputs` (hash of every data file), constant genes dropped, z-scores clipped."""

MANIFEST_NAME = "manifest.json"
SLICES_DIR = "slices"
GENES_FILE = "genes.parquet"
ROW_GROUP_ROWS = 128
"""Rows per parquet row group: ~10 MB at 128x128, big enough for fast scans, small enough that
Ray Data can split a file across workers."""
ROWS_PER_FILE = 2048

KINDS = ("nodule", "background")
SPLITS = ("train", "val", "test")
SUBJECT_STATUSES = ("ok", "failed", "excluded")
HU_WINDOW = (-1000.0, 500.0)
"""CT window of every image: HU clipped to it and scaled to [-1, 1] (prep; evaluation inverts it)."""
IMAGE_DTYPE = np.dtype("<f4")
MASK_DTYPE = np.dtype("u1")
GENE_DTYPE = np.dtype("<f4")

_VERSION_KEY = b"radiogen.schema_version"
_META = {_VERSION_KEY: str(SCHEMA_VERSION).encode()}

SLICE_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),            # "nodule" | "background"
        pa.field("split", pa.string(), nullable=False),           # "train" | "val" | "test"
        pa.field("voi_id", pa.int32(), nullable=False),           # per subject: nodules first, then background VOIs
        pa.field("slice_index", pa.int32(), nullable=False),      # plane index inside the VOI
        pa.field("slice_offset_mm", pa.float32(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),           # float32 (H, W) bytes
        pa.field("mask", pa.binary(), nullable=False),            # uint8 (H, W) bytes; all 0 for background
        pa.field("pixel_spacing_mm", pa.float32(), nullable=False),
        pa.field("voi_center_x_mm", pa.float64(), nullable=False),
        pa.field("voi_center_y_mm", pa.float64(), nullable=False),
        pa.field("voi_center_z_mm", pa.float64(), nullable=False),
        pa.field("padded", pa.bool_(), nullable=False),
    ],
    metadata=_META,
)

GENE_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("genes", pa.binary(), nullable=False),           # float32 (n_genes,) bytes, raw values
    ],
    metadata=_META,
)


_MANIFEST_KEYS = {
    "schema_version": int,
    "created_utc": str,
    "radiogen_version": str,
    "image": dict,          # size, pixel_spacing_mm, voi_mm, hu_window, dtype, mask_dtype, byte_order
    "params": dict,         # every prep parameter that shaped the data
    "gene_names": list,
    "genes": dict,          # source, orientation, na_policy, dropped genes and why, imputed cells
    "gene_stats": (dict, type(None)),   # radiogen.genes.GeneStats.to_dict() for log_zscore, or null
    "splits": dict,         # {"train": [ids], "val": [...], "test": [...]}
    "counts": dict,         # slices per kind and split, subjects per status
    "inputs": dict,         # {path: sha256} of every input file
    "subjects": dict,       # {subject_id: {status, reason, split, warnings, n_*_slices, inputs, ...}}
    "files": dict,          # {"slices": [relative paths], "genes": "genes.parquet"}
    "outputs": dict,        # {relative path: {"sha256", "bytes"}} of every data file, see `verify_dataset`
}


class SchemaError(ValueError):
    """A prepared dataset (or a table about to be written) does not match this schema."""


# ---------------------------------------------------------------------------------------------
# Image / mask / gene encoding


def encode_image(image: np.ndarray) -> bytes:
    """(H, W) float array in [-1, 1] -> the bytes stored in the `image` column."""
    return np.ascontiguousarray(image, dtype=IMAGE_DTYPE).tobytes()


def encode_mask(mask: np.ndarray) -> bytes:
    """(H, W) {0, 1} array -> the bytes stored in the `mask` column."""
    return np.ascontiguousarray(mask, dtype=MASK_DTYPE).tobytes()


def encode_genes(genes: np.ndarray) -> bytes:
    return np.ascontiguousarray(genes, dtype=GENE_DTYPE).tobytes()


def _concat_bytes(values: Any) -> bytes | memoryview:
    """The concatenated cell bytes of a binary column from pyarrow or Ray Data, without per-cell
    copies where the layout allows it."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array):
        if values.null_count:
            raise SchemaError("binary column has null cells; the dataset is corrupt - re-run `radiogen prep`")
        if pa.types.is_binary(values.type):
            offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset:values.offset + len(values) + 1]
            data = values.buffers()[2]
            return memoryview(data)[int(offsets[0]):int(offsets[-1])] if data is not None else b""
        values = values.to_pylist()
    if isinstance(values, (bytes, bytearray, memoryview)):
        return values
    return b"".join(values)


def _decode(values: Any, count_shape: tuple[int, ...], dtype: np.dtype, what: str) -> np.ndarray:
    data = _concat_bytes(values)
    per_row = int(np.prod(count_shape)) * dtype.itemsize
    if len(data) % per_row:
        raise SchemaError(f"{what} column holds {len(data)} bytes, not a whole number of {count_shape} "
                          f"{dtype} arrays ({per_row} bytes each); check image_size against the manifest")
    return np.frombuffer(data, dtype=dtype).reshape((-1, *count_shape))


def decode_images(values: Any, image_size: int) -> np.ndarray:
    """`image` cells -> float32 array (N, H, W). `values`: a pyarrow (Chunked)Array, a Ray Data
    numpy batch column (object array of bytes), a list of bytes, or one bytes object."""
    return _decode(values, (image_size, image_size), IMAGE_DTYPE, "image")


def decode_masks(values: Any, image_size: int) -> np.ndarray:
    """`mask` cells -> uint8 array (N, H, W) of {0, 1}; same inputs as `decode_images`."""
    return _decode(values, (image_size, image_size), MASK_DTYPE, "mask")


def decode_image(cell: bytes, image_size: int) -> np.ndarray:
    """One `image` cell -> float32 (H, W)."""
    return decode_images(cell, image_size)[0]


def decode_genes(values: Any, n_genes: int) -> np.ndarray:
    """`genes` cells -> float32 (N, n_genes)."""
    return _decode(values, (n_genes,), GENE_DTYPE, "genes")


# ---------------------------------------------------------------------------------------------
# Validation on write


def _check_schema(table_schema: pa.Schema, expected: pa.Schema, what: str) -> None:
    """Same column names, order and types (nullability is checked on the data, see `_check_nulls`)."""
    got = [(f.name, f.type) for f in table_schema]
    want = [(f.name, f.type) for f in expected]
    if got != want:
        names = [n for n, _ in got]
        missing = [n for n, _ in want if n not in names]
        extra = [n for n in names if n not in expected.names]
        wrong = [f"{n}: {table_schema.field(n).type} (expected {t})" for n, t in want
                 if n in names and table_schema.field(n).type != t]
        detail = "; ".join(p for p in (f"missing {missing}" if missing else "",
                                       f"unexpected {extra}" if extra else "",
                                       f"wrong types {wrong}" if wrong else "",
                                       "" if missing or extra or wrong else "columns in another order")
                           if p)
        raise SchemaError(f"{what} does not match schema version {SCHEMA_VERSION}: {detail}")


def _check_nulls(table: pa.Table, what: str) -> None:
    nulls = [name for name, col in zip(table.column_names, table.columns) if col.null_count]
    if nulls:
        raise SchemaError(f"{what} has null cells in {nulls}; every column is required")


def _check_labels(table: pa.Table, column: str, allowed: Sequence[str]) -> None:
    bad = sorted(set(table.column(column).to_pylist()) - set(allowed))
    if bad:
        raise SchemaError(f"column {column!r} has values {bad}; allowed: {list(allowed)}")


def validate_table(table: pa.Table, *, image_size: int) -> None:
    """Check a slice table before it is written: columns and types, labels, and that every image
    is (image_size, image_size) float32 in [-1, 1] and every mask uint8 in {0, 1}."""
    _check_schema(table.schema, SLICE_SCHEMA, "slice table")
    _check_nulls(table, "slice table")
    _check_labels(table, "kind", KINDS)
    _check_labels(table, "split", SPLITS)
    if table.num_rows == 0:
        return
    images = decode_images(table.column("image"), image_size)
    masks = decode_masks(table.column("mask"), image_size)
    if len(images) != table.num_rows or len(masks) != table.num_rows:
        raise SchemaError(f"every image/mask cell must hold one {image_size}x{image_size} array; got "
                          f"{len(images)} images and {len(masks)} masks for {table.num_rows} rows")
    if not np.isfinite(images).all() or images.min() < -1.0 or images.max() > 1.0:
        raise SchemaError("image values must be finite and inside [-1, 1] (HU window scaled)")
    if masks.max() > 1:
        raise SchemaError("mask values must be 0 or 1")
    spacing = table.column("pixel_spacing_mm").to_numpy()
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise SchemaError("pixel_spacing_mm must be finite and > 0")


def validate_gene_table(table: pa.Table, *, n_genes: int) -> None:
    """Check the per-subject gene table: schema, unique subjects, finite float32 vectors of length n_genes."""
    _check_schema(table.schema, GENE_SCHEMA, "gene table")
    _check_nulls(table, "gene table")
    _check_labels(table, "split", SPLITS)
    ids = table.column("subject_id").to_pylist()
    if len(set(ids)) != len(ids):
        raise SchemaError("gene table has duplicate subject ids")
    if table.num_rows:
        genes = decode_genes(table.column("genes"), n_genes)
        if len(genes) != table.num_rows:
            raise SchemaError(f"every genes cell must hold {n_genes} float32 values")
        if not np.isfinite(genes).all():
            raise SchemaError("gene values must be finite (NA genes are dropped or imputed by prep's NA policy)")


def validate_manifest(manifest: dict) -> None:
    """Check the manifest's keys and their types, and that it is of this schema version."""
    if not isinstance(manifest, dict):
        raise SchemaError(f"manifest must be a JSON object, got {type(manifest).__name__}")
    _check_version(manifest.get("schema_version"), "manifest")
    for key, kind in _MANIFEST_KEYS.items():
        if key not in manifest:
            raise SchemaError(f"manifest lacks key {key!r}; re-run `radiogen prep`")
        if not isinstance(manifest[key], kind):
            raise SchemaError(f"manifest key {key!r} has type {type(manifest[key]).__name__}")
    image = manifest["image"]
    for key in ("size", "pixel_spacing_mm", "voi_mm", "hu_window"):
        if key not in image:
            raise SchemaError(f"manifest 'image' lacks {key!r}")
    if set(manifest["splits"]) != set(SPLITS):
        raise SchemaError(f"manifest 'splits' must have exactly the keys {list(SPLITS)}")
    for sid, outcome in manifest["subjects"].items():
        if outcome.get("status") not in SUBJECT_STATUSES or not isinstance(outcome.get("reason", ""), str):
            raise SchemaError(f"manifest subject {sid!r} needs a status in {SUBJECT_STATUSES} and a reason")
    for rel, h in manifest["outputs"].items():
        if not (isinstance(h, dict) and isinstance(h.get("sha256"), str) and isinstance(h.get("bytes"), int)):
            raise SchemaError(f"manifest 'outputs' entry {rel!r} needs 'sha256' and 'bytes'")
    stats = manifest["gene_stats"]
    if stats is not None and len(stats.get("mean", [])) != len(manifest["gene_names"]):
        raise SchemaError("manifest gene_stats and gene_names differ in length")


def _check_version(found: Any, where: str) -> None:
    if found != SCHEMA_VERSION:
        raise SchemaError(f"{where} has schema version {found!r} but this radiogen reads schema version "
                          f"{SCHEMA_VERSION}; re-run `radiogen prep` to rebuild the dataset")


# ---------------------------------------------------------------------------------------------
# Reading


def read_manifest(root: str | Path) -> dict:
    """Read and validate ROOT/manifest.json; refuses a missing, partial or other-version dataset."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise SchemaError(f"{root} is not a prepared dataset (no {MANIFEST_NAME}); run `radiogen prep --out {root}`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SchemaError(f"{path} is not valid JSON ({err}); re-run `radiogen prep`") from None
    validate_manifest(manifest)
    return manifest


def slice_files(root: str | Path, manifest: dict | None = None) -> list[str]:
    """Absolute paths of the slice parquet files listed in the manifest (for ray.data.read_parquet)."""
    manifest = manifest if manifest is not None else read_manifest(root)
    files = [str(Path(root) / rel) for rel in manifest["files"]["slices"]]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise SchemaError(f"dataset {root} lists slice files that do not exist: {missing[:3]}; re-run `radiogen prep`")
    return files


def _check_file(path: str, expected: pa.Schema) -> None:
    schema = pq.read_schema(path)
    version = (schema.metadata or {}).get(_VERSION_KEY)
    _check_version(int(version) if version is not None and version.isdigit() else version, path)
    _check_schema(schema, expected, path)


def open_dataset(root: str | Path) -> pads.Dataset:
    """The slice table as a pyarrow dataset, after checking the manifest and every file's schema.
    Decode `image`/`mask` of a scanned batch with `decode_images` / `decode_masks`."""
    manifest = read_manifest(root)
    files = slice_files(root, manifest)
    for f in files:
        _check_file(f, SLICE_SCHEMA)
    return pads.dataset(files, schema=SLICE_SCHEMA, format="parquet")


@dataclass(frozen=True)
class GeneMatrix:
    """Per-subject raw gene vectors in manifest gene order."""

    subject_ids: list[str]
    splits: list[str]
    values: np.ndarray          # (subjects, genes) float32
    gene_names: list[str]

    def by_subject(self) -> dict[str, np.ndarray]:
        return dict(zip(self.subject_ids, self.values))


def read_genes(root: str | Path) -> GeneMatrix:
    """Read and validate ROOT/genes.parquet (raw values; normalise with `gene_stats` + apply_gene_stats)."""
    manifest = read_manifest(root)
    path = str(Path(root) / manifest["files"]["genes"])
    _check_file(path, GENE_SCHEMA)
    table = pq.read_table(path)
    names = list(manifest["gene_names"])
    validate_gene_table(table, n_genes=len(names))
    values = (decode_genes(table.column("genes"), len(names)) if table.num_rows
              else np.zeros((0, len(names)), GENE_DTYPE))
    return GeneMatrix(table.column("subject_id").to_pylist(), table.column("split").to_pylist(),
                      np.array(values), names)


def verify_dataset(root: str | Path) -> None:
    """Re-hash every data file of the dataset against the manifest's `outputs`; raise SchemaError
    naming the first file that is missing, truncated or changed (a partial copy, a disk error)."""
    manifest = read_manifest(root)
    outputs = manifest["outputs"]
    listed = [*manifest["files"]["slices"], manifest["files"]["genes"]]
    unrecorded = [rel for rel in listed if rel not in outputs]
    if unrecorded:
        raise SchemaError(f"dataset {root}: the manifest lists {unrecorded[:3]} without a recorded hash; "
                          f"the manifest was edited - re-run `radiogen prep`")
    for rel, want in outputs.items():
        path = Path(root) / rel
        if not path.is_file():
            raise SchemaError(f"dataset {root}: {rel} is missing; the dataset is incomplete - re-run `radiogen prep`")
        size = path.stat().st_size
        if size != want["bytes"]:
            how = "truncated" if size < want["bytes"] else "changed"
            raise SchemaError(f"dataset {root}: {rel} is {how} ({size} bytes, {want['bytes']} when written); "
                              f"re-run `radiogen prep`")
        if sha256_file(path) != want["sha256"]:
            raise SchemaError(f"dataset {root}: {rel} has changed since it was written (SHA-256 differs); "
                              f"re-run `radiogen prep`")


def dataset_fingerprint(root: str | Path) -> str:
    """16 hex digits naming the dataset by content: input file hashes, prep parameters (without
    input paths), gene names and the recorded hashes of the data files. Two preps of identical
    inputs give the same fingerprint wherever they ran; timestamps and timings do not enter.
    The data files are trusted to match the manifest: call `verify_dataset` to check that."""
    manifest = read_manifest(root)
    params = {k: v for k, v in manifest["params"].items() if k != "source"}
    content = {"schema_version": manifest["schema_version"], "inputs": sorted(set(manifest["inputs"].values())),
               "params": params, "gene_names": manifest["gene_names"],
               "outputs": {rel: h["sha256"] for rel, h in sorted(manifest["outputs"].items())}}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def gene_stats(manifest: dict, method: GeneNorm) -> GeneStats:
    """The normalisation statistics (fitted on the train split by prep) for `method`."""
    n = len(manifest["gene_names"])
    if method == "raw":
        return GeneStats("raw", [0.0] * n, [1.0] * n)
    stats = manifest["gene_stats"]
    if stats is None or stats.get("method") != method:
        note = manifest["genes"].get("stats_note", "")
        raise SchemaError(f"the dataset has no {method} gene statistics{': ' + note if note else ''}; "
                          f"use data.gene_norm=raw or re-run `radiogen prep` on raw expression values")
    return GeneStats.from_dict(stats)


# ---------------------------------------------------------------------------------------------
# Writing (used by `radiogen prep`; every table is validated before it touches the disk)


def write_slice_files(tables: Iterable[pa.Table], root: str | Path, *, image_size: int) -> list[str]:
    """Validate and write slice tables as ROOT/slices/part-NNNNN.parquet, ROWS_PER_FILE rows per
    file in ROW_GROUP_ROWS-row groups. Returns the files' paths relative to ROOT."""
    folder = Path(root) / SLICES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    writer: pq.ParquetWriter | None = None
    rows_in_file = 0
    try:
        for table in tables:
            validate_table(table, image_size=image_size)
            table = table.cast(SLICE_SCHEMA)
            while table.num_rows:
                if writer is None or rows_in_file >= ROWS_PER_FILE:
                    if writer is not None:
                        writer.close()
                    rel = f"{SLICES_DIR}/part-{len(written):05d}.parquet"
                    writer = pq.ParquetWriter(str(Path(root) / rel), SLICE_SCHEMA, compression="zstd")
                    written.append(rel)
                    rows_in_file = 0
                take = min(ROWS_PER_FILE - rows_in_file, table.num_rows)
                writer.write_table(table.slice(0, take), row_group_size=ROW_GROUP_ROWS)
                rows_in_file += take
                table = table.slice(take)
    finally:
        if writer is not None:
            writer.close()
    return written


def write_gene_file(subject_ids: Sequence[str], splits: Sequence[str], genes: np.ndarray, root: str | Path) -> str:
    """Validate and write ROOT/genes.parquet from a (subjects, genes) matrix of raw values."""
    values = np.asarray(genes, dtype=GENE_DTYPE)
    table = pa.table({"subject_id": pa.array(list(subject_ids), pa.string()),
                      "split": pa.array(list(splits), pa.string()),
                      "genes": pa.array([encode_genes(v) for v in values], pa.binary())}).cast(GENE_SCHEMA)
    validate_gene_table(table, n_genes=values.shape[1])
    pq.write_table(table, str(Path(root) / GENES_FILE), compression="zstd")
    return GENES_FILE


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (hashlib.file_digest needs Python 3.11; we support 3.10)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def output_hashes(root: str | Path, files: Iterable[str]) -> dict[str, dict]:
    """{relative path: {"sha256", "bytes"}} of data files just written (the manifest's `outputs`)."""
    return {rel: {"sha256": sha256_file(Path(root) / rel), "bytes": (Path(root) / rel).stat().st_size} for rel in files}


def write_manifest(manifest: dict, root: str | Path) -> None:
    """Validate and write ROOT/manifest.json (the last file of a dataset: it marks it complete)."""
    validate_manifest(manifest)
    path = Path(root) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False))
    tmp.replace(path)
