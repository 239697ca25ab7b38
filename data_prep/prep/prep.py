"""`radiogen prep`, the orchestration: check the run, match subjects, compute or reuse each subject,
split, fit the genes, write the dataset beside --out and publish it. Each step is a module of this
package; the overview is in its __init__."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from data_prep import gene_table as gt
from data_prep import readers
from data_prep.constants import USE_RAY
from radiogen import schema
from radiogen.publish import building

from .cache import SubjectCache, fingerprint_all
from .case import PrepParams
from .executor import Executor, run_subjects
from .gene_stats import dataset_genes
from .manifest import build_manifest
from .options import PrepError, PrepOptions
from .report import outcome_lines, summary
from .splits import assign_splits, check_splits
from .subjects import match_subjects, no_match_hint

if TYPE_CHECKING:
    import pyarrow as pa

IMAGE_MULTIPLE = 8
"""Slice sides prep accepts: multiples of 2**3, the shallowest encoder of a shipped config (radiogen.config checks
the size against a config's own depth when a run starts)."""


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PrepError(f"--out {out} is a file, not a folder; give a new or empty folder for the dataset")
    # Replacing a folder is allowed only when it is an earlier dataset: never a user's other files.
    if out.exists() and not (out / schema.MANIFEST_NAME).is_file() and any(out.iterdir()):
        raise PrepError(f"--out {out} exists and is not a prepared dataset (no {schema.MANIFEST_NAME}); "
                        f"choose a new or empty folder so nothing of yours is overwritten")


def run_prep(opts: PrepOptions) -> dict:
    """Run prep end to end; returns the manifest. Raises PrepError when no dataset can be made."""
    import pyarrow as pa

    start = time.perf_counter()
    # Everything that can be refused is refused here, before any subject is read.
    if opts.use_ray not in USE_RAY:
        raise PrepError(f"use_ray must be one of {', '.join(USE_RAY)}, got {opts.use_ray!r}")
    out = opts.out.resolve()
    _check_out(out)  # `building` below first restores a dataset a killed earlier run left moved aside

    try:
        table = gt.read_gene_table(opts.genes, opts.genes_orientation)
        cases = (readers.discover_tcia(opts.tcia_root) if opts.tcia_root is not None
                 else readers.read_cases_file(opts.cases))
    except (gt.GeneTableError, ValueError) as err:
        raise PrepError(str(err)) from None
    genes_sha = schema.sha256_file(opts.genes)  # what was read, even if the file changes during the run

    # Everything unusable gets its outcome now; the rest is computed or read back from the cache.
    runnable, outcomes = match_subjects(cases, table, opts.genes.name)
    if not runnable:
        raise PrepError(f"no subject has both an image and genes{no_match_hint(cases, table)}", outcomes)
    # Splits are drawn for every subject that could make it, so a subject's split never depends on whether
    # another one failed this time.
    splits = assign_splits([c.subject_id for c in runnable], opts.split, opts.params.seed)

    cache = SubjectCache(opts.cache or out.parent / f".{out.name}.prep-cache")
    cached_keys = {c.subject_id: k for c in runnable if (k := cache.key(c.subject_id)) is not None}
    # Slices of a subject stay in memory only when they could not be cached; the others are read
    # back from the cache one subject at a time while the dataset is written.
    in_memory: dict[str, "pa.Table"] = {}
    processed = from_cache = 0
    unchanged, todo = fingerprint_all(runnable, opts.params, cached_keys)
    executor = Executor()
    computed = run_subjects(todo, opts.params, opts.workers, opts.address, opts.use_ray, executor)
    for result in itertools.chain(unchanged, computed):
        sid = result.subject_id
        if result.cached:
            outcome = {**cache.outcome(sid), "from_cache": True}
            from_cache += 1
        else:
            processed += 1
            outcome = {"status": result.status, "reason": result.reason, **result.info,
                       "inputs": result.inputs, "key": result.key,
                       "seconds": {k: round(v, 3) for k, v in result.timings.items()}}
            if result.deterministic and result.key is not None:  # bad input fails the same way next time
                cache.store(result, outcome)
            elif result.table is not None:
                in_memory[sid] = result.table
            outcome = {**outcome, "from_cache": False}
            if result.traceback:
                print(f"prep: {sid}: {result.traceback}", file=sys.stderr)
        outcome["split"] = splits[sid] if outcome["status"] == "ok" else None
        outcomes[sid] = outcome

    ok = sorted(s for s, o in outcomes.items() if o["status"] == "ok")
    if not ok:
        raise PrepError("no subject made it through prep (nothing was written; any previous dataset at --out "
                        "is unchanged)", outcomes)
    # Who made it decides the splits' sizes and the genes: both are settled only now.
    failed = any(o["status"] == "failed" for o in outcomes.values())
    split_warnings, error = check_splits(ok, splits, opts.split, opts.params.seed, failed)
    if error:
        raise PrepError(error, outcomes)
    train = [s for s in ok if splits[s] == "train"]
    try:
        genes = dataset_genes(table, ok, train, opts.na_policy)
    except gt.GeneTableError as err:
        raise PrepError(str(err), outcomes) from None
    warnings = [*table.warnings, *split_warnings, *genes.warnings]

    def with_split() -> Iterator["pa.Table"]:
        # One subject's slices in memory at a time, whatever the cohort's size.
        for sid in ok:
            t = in_memory[sid] if sid in in_memory else cache.table(sid)
            yield t.add_column(2, "split", pa.array([splits[sid]] * t.num_rows, pa.string()))

    with building(out) as tmp:  # a killed run leaves the previous dataset (or none), never a partial one
        files = schema.write_slice_files(with_split(), tmp, image_size=opts.params.image_size)
        genes_file = schema.write_gene_file(ok, [splits[s] for s in ok], genes.selection.values, tmp)
        manifest = build_manifest(opts, tmp, table=table, genes_sha=genes_sha, genes=genes, outcomes=outcomes,
                                  ok=ok, splits=splits, processed=processed, from_cache=from_cache, files=files,
                                  genes_file=genes_file, warnings=warnings, executor=executor)
        schema.write_manifest(manifest, tmp)
    cache.prune({c.subject_id for c in runnable})  # only after the publish: a failed run keeps its cache
    manifest["seconds"] = round(time.perf_counter() - start, 2)
    return manifest


# ---------------------------------------------------------------------------------------------
# Command line


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    from data_prep.cli import add_prep_parser  # the flags live there, light enough for `radiogen --help`

    add_prep_parser(subparsers).set_defaults(func=run_command)


def options_from_args(args: argparse.Namespace) -> PrepOptions:
    # Ranges argparse cannot express; checked before the run starts.
    if args.image_size < IMAGE_MULTIPLE or args.image_size % IMAGE_MULTIPLE:
        raise PrepError(f"--image-size must be a multiple of {IMAGE_MULTIPLE} (the encoders halve a slice 3 times in "
                        f"the tiny config, 4 in the paper's: 16), e.g. 32 (tiny), 64 or 128 (the paper's); "
                        f"got {args.image_size}")
    if args.voi_mm <= 0 or args.bg_vois < 0 or args.bg_slices < 1 or args.workers < 0:
        raise PrepError("--voi-mm must be > 0, --bg-vois >= 0, --bg-slices >= 1 and --workers >= 0")
    params = PrepParams(image_size=args.image_size, voi_mm=args.voi_mm, bg_vois=args.bg_vois,
                        bg_slices=args.bg_slices, seed=args.seed)
    return PrepOptions(out=args.out, genes=args.genes, cases=args.cases, tcia_root=args.tcia_root, params=params,
                       split=args.split, na_policy=args.na_policy, genes_orientation=args.genes_orientation,
                       workers=args.workers, address=args.address, cache=args.cache, use_ray=args.use_ray)


def run_command(args: argparse.Namespace) -> int:
    """`radiogen prep`: the summary on stdout; a failure's subject lines and reason on stderr."""
    try:
        manifest = run_prep(options_from_args(args))
    except PrepError as err:
        for line in outcome_lines(err.outcomes):
            print(line, file=sys.stderr)
        print(f"prep failed: {err}", file=sys.stderr)
        return 1
    print(summary(manifest, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="radiogen")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["prep", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
