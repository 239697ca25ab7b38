"""docs/config.md is `radiogen config --reference`: regenerated here, so the reference cannot drift from the code."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from radiogen.config import ExperimentConfig
from radiogen.config_reference import reference_markdown

from .helpers import REPO


def test_docs_config_md_is_the_generated_reference():
    res = subprocess.run([sys.executable, "-m", "ray_jobs.cli", "config", "--reference"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert res.stdout == (REPO / "docs" / "config.md").read_text(), \
        "docs/config.md is stale: regenerate it with `.venv/bin/radiogen config --reference > docs/config.md`"


def test_every_field_is_documented_with_its_default():
    text = reference_markdown()
    for part in dataclasses.fields(ExperimentConfig):
        cls = part.type if isinstance(part.type, type) else type(getattr(ExperimentConfig(), part.name))
        if not dataclasses.is_dataclass(cls):
            continue
        for f in dataclasses.fields(cls):
            row = next((line for line in text.splitlines() if line.startswith(f"| `{part.name}.{f.name}` |")), None)
            assert row is not None, f"{part.name}.{f.name} missing from the reference"
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            cells = row.split(" | ")
            assert cells[2] == f"`{default!r}`" and cells[3].strip(" |"), f"{part.name}.{f.name}: {row}"
