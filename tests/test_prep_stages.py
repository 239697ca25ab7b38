"""prep split into stages: the same inputs give the same dataset as the single-module prep did.

tests/data/prep_fingerprints.json holds the fingerprints of datasets that the single-file prep
(commit 136eec9) wrote from the inputs below. The test prepares the same inputs now and compares
section by section: every manifest section and the decoded content of every data file. Left out,
because they are not a function of the inputs: the creation time, the package version, timings, and
the byte hashes of inputs and outputs (they change with the NIfTI and parquet writers' versions);
those hashes are checked against the files instead.

A deliberate change of prep's output (PREP_VERSION bump) regenerates the fingerprints with
    python -m tests.test_prep_stages --regenerate
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "data" / "prep_fingerprints.json"
# Imaging and genes of the real files come from different people; the pairing is artificial.
REAL_PAIRS = {"R01-023": ("pyradiomics_lung/lung1_image.nrrd", "pyradiomics_lung/lung1_label.nrrd"),
              "R01-024": ("lidc_idri/LIDC-IDRI-0001_ct.nrrd", "lidc_idri/LIDC-IDRI-0001_nodules_consensus.nrrd")}
REAL_GENES = "nsclc_radiogenomics/expression/split_dev_df_zscore_100patients.csv"
PREP_FLAGS = ["--image-size", "32", "--bg-vois", "2", "--bg-slices", "6", "--workers", "0"]


def _real_inputs(real_data: Path, root: Path) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "cases.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "image", "mask"])
        w.writerows([sid, str(real_data / img), str(real_data / m)] for sid, (img, m) in REAL_PAIRS.items())
    return ["--cases", str(root / "cases.csv"), "--genes", str(real_data / REAL_GENES), "--seed", "1"]


def _synthetic_inputs(root: Path, fmt: str) -> list[str]:
    from data_prep.cohort import write_cohort

    cohort = root / f"cohort_{fmt}"
    write_cohort(cohort, subjects=5 if fmt == "nifti" else 3, seed=7, fmt=fmt, matrix=128, design="mixed")
    source = ["--cases", str(cohort / "cases.csv")] if fmt == "nifti" else ["--tcia-root", str(cohort / "tcia")]
    return [*source, "--genes", str(cohort / "genes.tsv"), "--seed", "1"]


def _content_hash(path: Path) -> str:
    """Hash of a parquet file's decoded rows, column by column (independent of the writer's version)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    h = hashlib.sha256(repr(table.schema.names).encode())
    for name in table.column_names:
        for value in table[name].to_pylist():
            h.update(repr(value).encode())
    return h.hexdigest()


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def dataset_fingerprint(out: Path, roots: list[Path]) -> dict[str, str]:
    """{section: hash} of a prepared dataset; paths under `roots` are written relative to them."""
    from radiogen.schema import sha256_file, verify_dataset

    verify_dataset(out)  # the manifest's output hashes match the files
    text = (out / "manifest.json").read_text()
    for k, root in enumerate(roots):
        text = text.replace(str(root), f"<root{k}>")
    manifest = json.loads(text)
    for path, sha in json.loads((out / "manifest.json").read_text())["inputs"].items():
        assert sha256_file(path) == sha, path
    for key in ("created_utc", "radiogen_version", "outputs", "inputs"):
        manifest.pop(key)
    for outcome in manifest["subjects"].values():
        for key in ("seconds", "key"):
            outcome.pop(key, None)
        outcome["inputs"] = sorted(outcome.get("inputs", {}))
    manifest["executor"]["reason"] = re.sub(r"[0-9.]+ s\b", "<s>", manifest["executor"]["reason"])
    prints = {f"manifest.{key}": _sha(value) for key, value in manifest.items()}
    for rel in [*manifest["files"]["slices"], manifest["files"]["genes"]]:
        prints[f"file {rel}"] = _content_hash(out / rel)
    return prints


def prepare_all(tmp: Path, real_data: Path) -> dict[str, dict[str, str]]:
    from data_prep.prep import main

    cases = {"synthetic-nifti": (_synthetic_inputs(tmp, "nifti"), [tmp]),
             "synthetic-tcia": (_synthetic_inputs(tmp, "tcia"), [tmp]),
             "real": (_real_inputs(real_data, tmp / "real"), [tmp, real_data])}
    prints = {}
    for name, (args, roots) in cases.items():
        out = tmp / f"ds-{name}"
        assert main([*args, "--out", str(out), "--cache", str(tmp / f"cache-{name}"), *PREP_FLAGS]) == 0
        prints[name] = dataset_fingerprint(out, roots)
    return prints


def test_prep_writes_what_the_single_module_prep_wrote(tmp_path: Path, real_data: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    got = prepare_all(tmp_path, real_data)
    for name, want in golden.items():
        differ = sorted(k for k in set(want) | set(got[name]) if want.get(k) != got[name].get(k))
        assert not differ, f"{name}: prep's output changed in {differ} (regenerate only for a deliberate change)"


if __name__ == "__main__" and "--regenerate" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(prepare_all(Path(d), REPO.parent / "shared" / "data" / "real"),
                                     indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
