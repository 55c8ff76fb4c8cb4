"""K folds over any face source, for datasets that ship none (the built-in synthetic faces, UTKFace...).

``KFoldSource(source, folds=5, fold=0, val_fraction=0.1, seed=0)`` pools every row of ``source``
(whatever split it gave them), deals whole subjects into ``folds`` folds at random (seeded, so the
folds are the same in every run and every fold's run), then applies agelab.data.splits.fold_split:
fold ``fold`` is test, validation subjects are drawn from the others. Across ``fold = 0..folds-1``
each face is tested exactly once, as in Adience's five-fold protocol.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agelab.data.splits import _subjects, fold_split
from agelab.errors import ConfigError


def assign_folds(records: pd.DataFrame, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number per row: subjects shuffled (seeded) and dealt round-robin, so fold sizes differ by
    at most one subject; the result does not depend on the row order."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ConfigError(f"data.source.folds must be an integer >= 2, got {folds!r}")
    subjects = _subjects(records) if "subject" in records else records.index.astype(str).to_numpy()
    names, inverse = np.unique(subjects, return_inverse=True)
    if len(names) < folds:
        raise ConfigError(f"{folds} folds need at least {folds} subjects, the data has {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of_name = np.empty(len(names), dtype=np.int64)
    fold_of_name[order] = np.arange(len(names)) % folds
    return fold_of_name[inverse]


class KFoldSource:
    def __init__(self, source, folds: int = 5, fold: int = 0, val_fraction: float = 0.1, seed: int = 0):
        if not callable(getattr(source, "load", None)):
            raise ConfigError(f"data.source.source must be a face source with load(), got {type(source).__name__}")
        if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < folds:
            raise ConfigError(f"data.fold must be an integer in 0..{folds - 1}, got {fold!r}")
        self.source, self.folds, self.fold = source, folds, int(fold)
        self.val_fraction, self.seed = val_fraction, seed

    def __getattr__(self, name):  # name, prepare, drop_counts, kept... of the wrapped source
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    def load(self) -> tuple[np.ndarray, pd.DataFrame]:
        images, records = self.source.load()
        records = records.drop(columns=["split"], errors="ignore")
        records["fold"] = assign_folds(records, self.folds, self.seed)
        return images, fold_split(records, self.fold, self.val_fraction, self.seed)
