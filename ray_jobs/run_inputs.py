"""What a training run reads and records before its first step: the experiment config checked against the
dataset, the gene table, validation slices and mismatch pool, and the run's MLflow params and tags.

`radiogen train` builds these once per run; a sweep's driver builds them once for all its trials (and, for
direct trials, also reads the training split once, which Ray's object store then hands to every trial).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from radiogen import schema
from radiogen.config import ExperimentConfig, to_dict
from radiogen.data import check_compatible, pool_records, read_records
from radiogen.evaluation.objective import MIN_SUBJECTS

from .loop import Records, RunSettings
from .map_reference import frechet_floor, map_reference
from .tracking import code_version, flatten


class TooFewSubjects(ValueError):
    """The training split cannot form mismatched tuples."""


def resolve_config(cfg: ExperimentConfig, manifest: dict) -> ExperimentConfig:
    """`cfg` checked against the dataset, with data.n_genes = null filled in from it."""
    check_compatible(manifest, cfg.data)
    if cfg.data.n_genes is None:  # the config asks to follow the dataset
        cfg = replace(cfg, data=replace(cfg.data, n_genes=len(manifest["gene_names"])))
    return cfg


@dataclass
class TrainingInputs:
    """What a run reads from the prepared dataset before training: one per run, one per sweep (all trials)."""

    data: Path
    manifest: dict
    matrix: schema.GeneMatrix
    validation: dict
    """{"nodules", "backgrounds", "map"} of the validation split, or {} (see RunSettings.validation)."""
    pool: Records
    files: list[str]
    train_split: dict[str, Records] = field(default_factory=dict)
    """{"nodule", "background"} records of the training split read once with pyarrow (direct sweep trials decode
    them in memory); {} when the run reads its split itself."""


@dataclass(frozen=True)
class TruthFiles:
    """The cohort's known gene -> program links, when given (--truth, --truth-programs, --truth-partial): the
    validation map objective is then the AUPRC of the generator's intervention map against them."""

    truth: str | None = None
    programs: str | None = None
    partial: bool = False


def read_inputs(data: Path, manifest: dict, image_size: int, val_size: int, train_split: bool = False,
                truth: TruthFiles = TruthFiles()) -> TrainingInputs:
    """The gene table, the validation slices and their map reference, and the mismatch pool (and with
    `train_split` the training records); raise TooFewSubjects or TruthError, print what is off."""
    if val_size < 0:
        raise TooFewSubjects(f"--val-size must be >= 0, got {val_size}")
    matrix = schema.read_genes(data)
    train_subjects = {s for s, split in zip(matrix.subject_ids, matrix.splits) if split == "train"}
    if len(train_subjects) < 2:
        raise TooFewSubjects(f"the training split of {data} has {len(train_subjects)} subject(s); mismatched tuples "
                             f"need at least 2 - prepare more subjects or change the split")
    nodules_val = read_records(data, "val", "nodule", val_size)
    backgrounds_val = read_records(data, "val", "background", len(nodules_val["subject_id"]))
    n_val = min(len(nodules_val["subject_id"]), len(backgrounds_val["subject_id"]))
    validation = {"nodules": {k: v[:n_val] for k, v in nodules_val.items()},
                  "backgrounds": {k: v[:n_val] for k, v in backgrounds_val.items()}} if n_val >= 2 else {}
    split = {kind: read_records(data, "train", kind) for kind in schema.KINDS} if train_split else {}
    if not validation:
        print("warning: the validation split has fewer than 2 paired slices; validation metrics and figures are off")
    else:
        validation["map"] = map_reference(data, image_size, truth.truth, truth.programs, truth.partial)
        # A sweep's driver has the training split in hand already (direct trials): no second read of it.
        validation["frechet_floor"] = frechet_floor(data, validation["nodules"], image_size, split.get("nodule"))
        if not validation["map"]:
            print(f"warning: the validation split has fewer than {MIN_SUBJECTS} subjects with nodules; "
                  f"val/map_objective is off")
    return TrainingInputs(data, manifest, matrix, validation, pool_records(data), schema.slice_files(data, manifest),
                          split)


@dataclass(frozen=True)
class RunIdentity:
    """What ties a run to its code and data, computed once per command: a sweep's trials share the driver's."""

    data: Path
    fingerprint: str
    code_version: str

    @classmethod
    def of(cls, data: Path) -> "RunIdentity":
        return cls(data, schema.dataset_fingerprint(data), code_version())

    def params(self, cfg: ExperimentConfig, mode: str, num_workers: int, gpu: bool, data_mode: str,
               cpus: float | None = None, threads: int | None = None) -> dict[str, Any]:
        """The MLflow params of a training run: the whole config, flattened, and how it ran. `mode`: local, ray
        (a Ray Train run) or direct (a sweep trial training in its own process)."""
        params = flatten("", to_dict(cfg)) | {"run.mode": mode, "run.num_workers": num_workers,
                                              "run.data": str(self.data), "run.gpu": gpu, "run.data_mode": data_mode}
        if cpus is not None:
            params["run.cpus_per_worker"] = cpus
        if threads is not None:
            params["run.torch_threads"] = threads
        return params

    def tags(self, cfg: ExperimentConfig, mode: str) -> dict[str, str]:
        return {"radiogen.ablation": cfg.name, "radiogen.dataset_fingerprint": self.fingerprint,
                "radiogen.code_version": self.code_version, "radiogen.mode": mode}


def progress_interval(max_steps: int, log_every: int, lines: int = 10) -> int:
    """Steps between progress lines: about `lines` per run, on the metric records (multiples of log_every)."""
    return max(1, round(max_steps / lines / log_every)) * log_every


def make_settings(cfg: ExperimentConfig, inputs: TrainingInputs, uri: str, run_id: str | None, *,
                  progress: bool = True, **run: Any) -> RunSettings:
    """Everything a worker needs for one training run of `cfg` into the MLflow run `run_id`; `run` sets the other
    RunSettings fields (log_every, val_every, checkpoint_every, data_mode, threads, ...)."""
    stats = schema.gene_stats(inputs.manifest, cfg.data.gene_norm)
    every = progress_interval(cfg.train.max_steps, run.get("log_every", 10)) if progress else 0
    return RunSettings(
        config=cfg, tracking_uri=uri, run_id=run_id,
        genes={"subject_ids": inputs.matrix.subject_ids, "values": inputs.matrix.values, "stats": stats.to_dict(),
               "names": list(inputs.manifest["gene_names"])},
        pool=inputs.pool, validation=inputs.validation, progress_every=every, **run)
