"""Split protocols: each takes a records table and returns a copy with a ``split`` column.

``split`` is "train", "val" or "test". The index is kept as it is (it is the image row in the
cache), and every protocol is deterministic for a given seed, whatever the input row order.

- random_split: rows at random; the same person can land on two sides (the common MORPH II
  80/20 protocol, optimistic for that reason).
- subject_split: whole subjects at random; no subject on two sides.
- fold_split: a dataset's own folds (Adience's five); one fold is test.
- lopo_split: leave one person out (FG-NET); one subject is test.
- predefined_split: the dataset's own split column (APPA-REAL).
- all_test: every row is test (a dataset used whole to test a model trained elsewhere).

Fractions: ``test_fraction`` is a share of all rows; ``val_fraction`` is a share of the rows
left after the test part is taken (validation is carved out of training). Subject-wise splits
take whole subjects until the share is reached, so their shares are approximate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agelab.errors import ConfigError

SPLITS = ("train", "val", "test")
_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
            "dev": "val", "test": "test", "testing": "test"}


def _check_fraction(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"split {name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _subjects(records: pd.DataFrame) -> np.ndarray:
    """Subject of each row as str; rows without one count as their own subject."""
    if "subject" not in records:
        raise ConfigError("a subject-wise split needs a 'subject' column in the records")
    subject = records["subject"]
    own = pd.Series([f"row:{i}" for i in range(len(records))], index=records.index)
    return subject.astype(str).where(subject.notna(), own).to_numpy()


def _take_subjects(subjects: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Mask of rows whose subjects, drawn at random, first reach ``fraction`` of the rows."""
    if fraction <= 0 or len(subjects) == 0:
        return np.zeros(len(subjects), dtype=bool)
    names, counts = np.unique(subjects, return_counts=True)  # sorted, so the input order does not matter
    order = rng.permutation(len(names))
    before = np.cumsum(counts[order]) - counts[order]  # rows already taken when each subject comes up
    chosen = names[order][before < fraction * len(subjects)]
    return np.isin(subjects, chosen)


def _with_split(records: pd.DataFrame, test: np.ndarray, val: np.ndarray) -> pd.DataFrame:
    out = records.copy()
    out["split"] = np.where(test, "test", np.where(val, "val", "train"))
    return out


def _carve_val(records: pd.DataFrame, test: np.ndarray, val_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Validation rows taken subject-wise from the rows that are not test."""
    val = np.zeros(len(records), dtype=bool)
    rest = np.flatnonzero(~test)
    val[rest] = _take_subjects(_subjects(records)[rest], val_fraction, rng)
    return val


def random_split(records: pd.DataFrame, test_fraction: float = 0.2, val_fraction: float = 0.1,
                 seed: int = 0) -> pd.DataFrame:
    test_fraction = _check_fraction("test_fraction", test_fraction)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    n = len(records)
    # Order rows by index before shuffling so the result does not depend on the input order.
    order = np.argsort(records.index.to_numpy(), kind="stable")
    shuffled = order[np.random.default_rng(seed).permutation(n)]
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * (n - n_test)))
    test, val = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    test[shuffled[:n_test]] = True
    val[shuffled[n_test:n_test + n_val]] = True
    return _with_split(records, test, val)


def subject_split(records: pd.DataFrame, test_fraction: float = 0.2, val_fraction: float = 0.1,
                  seed: int = 0) -> pd.DataFrame:
    test_fraction = _check_fraction("test_fraction", test_fraction)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    rng = np.random.default_rng(seed)
    test = _take_subjects(_subjects(records), test_fraction, rng)
    return _with_split(records, test, _carve_val(records, test, val_fraction, rng))


def fold_split(records: pd.DataFrame, fold: int, val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Rows with ``fold == fold`` are test; validation subjects are drawn from the other folds."""
    if "fold" not in records:
        raise ConfigError("fold_split needs a 'fold' column in the records (this dataset has no folds)")
    val_fraction = _check_fraction("val_fraction", val_fraction)
    folds = sorted(int(f) for f in pd.unique(records["fold"].dropna()))
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or fold not in folds:
        raise ConfigError(f"fold must be one of the dataset's folds {folds}, got {fold!r}")
    test = (records["fold"] == fold).to_numpy()
    rng = np.random.default_rng(seed)
    return _with_split(records, test, _carve_val(records, test, val_fraction, rng))


def lopo_folds(records: pd.DataFrame) -> int:
    """Number of leave-one-person-out folds: one per subject."""
    return len(np.unique(_subjects(records)))


def lopo_split(records: pd.DataFrame, fold: int, seed: int = 0, val_fraction: float = 0.1) -> pd.DataFrame:
    """The fold-th subject (in sorted order) is test; validation subjects are drawn from the others."""
    names = np.unique(_subjects(records))
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < len(names):
        raise ConfigError(f"lopo fold must be an integer in 0..{len(names) - 1} (one per subject), got {fold!r}")
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test = _subjects(records) == names[fold]
    rng = np.random.default_rng(seed)
    return _with_split(records, test, _carve_val(records, test, val_fraction, rng))


def all_test(records: pd.DataFrame) -> pd.DataFrame:
    """Every row in test: a dataset used whole as a cross-dataset test (``agelab.eval split=all``)."""
    return records.assign(split="test")


def predefined_split(records: pd.DataFrame) -> pd.DataFrame:
    """Keep the dataset's own split column (train/val/test; 'valid', 'validation' read as val)."""
    if "split" not in records:
        raise ConfigError("predefined_split needs a 'split' column in the records (this dataset has none)")
    names = records["split"].astype(str).str.strip().str.lower().map(_ALIASES)
    if names.isna().any():
        bad = sorted(records["split"][names.isna()].astype(str).unique())[:5]
        raise ConfigError(f"split column holds values other than train/val/test: {bad}")
    out = records.copy()
    out["split"] = names.to_numpy()
    return out


SPLITTERS = {"random": random_split, "subject": subject_split, "fold": fold_split, "lopo": lopo_split,
             "predefined": predefined_split}
