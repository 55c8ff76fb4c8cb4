"""Gender and race of each face as integer codes, the form batches and metrics use (-1 = unknown).

Readers keep the dataset's own spelling in the records (gender "f"/"m"; race as a UTKFace name with
its ``race_id``, or a MORPH II letter); one code table serves every dataset, so a race means the same
bar in every run's ``mae_by_race`` figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GENDER_CODES = {"f": 0, "m": 1}
RACE_NAMES = ("white", "black", "asian", "indian", "other", "hispanic")
# Names (UTKFace, CSV files) and MORPH II's one-letter codes.
_RACE_CODES = {**{name: code for code, name in enumerate(RACE_NAMES)}, "others": 4,
               "w": 0, "b": 1, "a": 2, "i": 3, "o": 4, "h": 5}


def _lookup(column: pd.Series, table: dict[str, int]) -> np.ndarray:
    keys = column.astype("string").str.strip().str.lower()
    return keys.map(table).fillna(-1).to_numpy(np.int64)


def gender_codes(records: pd.DataFrame) -> np.ndarray:
    """0 female, 1 male, -1 unknown, one per record."""
    if "gender" not in records:
        return np.full(len(records), -1, np.int64)
    return _lookup(records["gender"], GENDER_CODES)


def race_codes(records: pd.DataFrame) -> np.ndarray:
    """Index into RACE_NAMES, -1 unknown, one per record (from ``race_id`` where a reader gives it,
    which for UTKFace is already this order, else from the ``race`` name or letter)."""
    if "race_id" in records:
        ids = pd.to_numeric(records["race_id"], errors="coerce")
        return ids.where(ids.between(0, len(RACE_NAMES) - 1), -1).fillna(-1).to_numpy(np.int64)
    if "race" not in records:
        return np.full(len(records), -1, np.int64)
    return _lookup(records["race"], _RACE_CODES)
