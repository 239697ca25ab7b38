"""Train / val / test by subject: a seeded hash of each id, so adding a subject never moves another."""

from __future__ import annotations

import hashlib

from radiogen.schema import SPLITS


def _split_position(subject_id: str, seed: int) -> float:
    """The subject's place in [0, 1): a seeded hash of its id alone."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{subject_id}".encode()).digest()[:8], "big") / 2.0**64


def assign_splits(subjects: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Subject-level split by a seeded hash of each id: train if its position in [0, 1) is below
    the train fraction, val if below train + val, else test.

    A subject's split depends on its id, the seed and the fractions only, so adding or removing
    subjects never moves another one (no test subject of one run is a training subject of the
    next). The price: realised fractions are binomial around the requested ones, so a small cohort
    may get an empty split. No rule can fill an empty split without moving a subject when another
    is added, so none is applied; prep refuses an empty training split and names a seed that fills
    it (`seed_with_splits`)."""
    train, val, test = fractions
    out = {}
    for s in subjects:
        u = _split_position(s, seed)
        out[s] = "train" if u < train else "val" if u < train + val or test == 0 else "test"
    return out


def split_counts(splits: dict[str, str], subjects: list[str]) -> str:
    """"3 train / 1 val / 0 test"."""
    return " / ".join(f"{sum(splits[s] == name for s in subjects)} {name}" for name in SPLITS)


def seed_with_splits(subjects: list[str], fractions: tuple[float, float, float], seed: int,
                     tries: int = 1000) -> int | None:
    """The first seed after `seed` that gives these subjects 2 training subjects (1 if there is one
    subject) and, when there are enough subjects for that too, every split with a nonzero fraction."""
    others = [name for name, f in zip(SPLITS[1:], fractions[1:]) if f > 0]
    want_train = min(2, len(subjects))
    if len(subjects) < want_train + len(others):
        others = []
    for s in range(seed + 1, seed + 1 + tries):
        got = list(assign_splits(subjects, fractions, s).values())
        if got.count("train") >= want_train and all(name in got for name in others):
            return s
    return None


def check_splits(ok: list[str], splits: dict[str, str], fractions: tuple[float, float, float], seed: int,
                 failed: bool) -> tuple[list[str], str | None]:
    """(warnings, error) about the splits of the subjects that made it: no training subject is an
    error; an empty val or test split, or one training subject, a warning. Both name a seed that
    fills the splits."""
    train = [s for s in ok if splits[s] == "train"]
    empty = [name for name, f in zip(SPLITS[1:], fractions[1:]) if f > 0 and name not in
             {splits[s] for s in ok}]
    hint = ""
    if len(train) < 2 or empty:
        better = seed_with_splits(ok, fractions, seed)
        hint = (f"--seed {better} gives {split_counts(assign_splits(ok, fractions, better), ok)}"
                if better is not None else "change --split")
    if not train:
        return [], (f"no training subject: the {len(ok)} subjects that made it are split "
                    f"{split_counts(splits, ok)} by --seed {seed} (each subject's split is a "
                    f"seeded hash of its id, so a small cohort can miss a split); {hint}"
                    + ("; or fix the failed subjects" if failed else ""))
    warnings = []
    if empty:
        warnings.append(f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty: "
                        f"{len(ok)} subjects split {split_counts(splits, ok)} by --seed {seed}; {hint}")
    if len(train) < 2:
        warnings.append(f"1 training subject: genes constant on the training split cannot be found and there are "
                        f"no log_zscore statistics; {hint}")
    return warnings, None
