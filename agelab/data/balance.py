"""Per-age re-balancing, as in SMLF-Net's training set (every age holds 10,000-12,000 faces).

Ages with more than ``high`` faces are sampled down to ``high`` (without replacement); ages with
fewer than ``low`` are topped up to ``low`` by drawing their own rows again (with replacement).
A duplicated row keeps its index, so it points at the same cached image; augmentation makes the
copies differ. Ages with no faces stay empty. Ages are binned to whole years (rounded), or another
numeric column can be used with ``key`` (e.g. "group"); ``high=None`` means no cap. Rows without a
key value, and rows outside ``split`` when one is given, pass through unchanged. The result keeps
the input's row order (copies next to their original); the report lists every age from the
youngest to the oldest present, with the empty ones as "empty".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from agelab.errors import ConfigError


def balance_per_age(records: pd.DataFrame, low: int, high: int | None, seed: int = 0, key: str = "age",
                    split: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(balanced records, report with one row per age: age, before, after, action)."""
    if isinstance(low, bool) or not isinstance(low, (int, np.integer)) or low < 0:
        raise ConfigError(f"balance low must be a non-negative integer, got {low!r}")
    if high is not None and (isinstance(high, bool) or not isinstance(high, (int, np.integer)) or high < max(low, 1)):
        raise ConfigError(f"balance high must be an integer >= low ({low}) and >= 1, got {high!r}")
    if key not in records:
        raise ConfigError(f"balance key {key!r} is not a records column (columns: {list(records.columns)})")
    if split is not None and "split" not in records:
        raise ConfigError(f"balance split={split!r} given but the records have no 'split' column")

    values = pd.to_numeric(records[key], errors="coerce").to_numpy(np.float64)
    if records[key].notna().any() and not np.isfinite(values).any():
        raise ConfigError(f"balance key {key!r} must be a numeric column (an age or a group)")
    if key == "age":
        values = np.round(values)
    if key == "group":
        values = np.where(values < 0, np.nan, values)  # -1 means unknown
    selected = np.isfinite(values)
    if split is not None:
        selected &= (records["split"] == split).to_numpy()

    rng = np.random.default_rng(seed)
    positions, rows = [np.flatnonzero(~selected)], []
    for value in np.unique(values[selected]):
        members = np.flatnonzero(selected & (values == value))
        before = len(members)
        if high is not None and before > high:
            members, action = np.sort(rng.choice(members, size=high, replace=False)), "capped"
        elif before < low:
            extra = rng.choice(members, size=low - before, replace=True)
            members, action = np.sort(np.concatenate([members, extra])), "resampled"
        else:
            action = "kept"
        positions.append(members)
        rows.append({key: value, "before": before, "after": len(members), "action": action})

    report = pd.DataFrame(rows, columns=[key, "before", "after", "action"])
    if key == "age" and len(report):
        # Show the gaps too: ages with no faces are listed with zero before and after.
        ages = np.arange(report["age"].min(), report["age"].max() + 1)
        report = (report.set_index("age").reindex(ages).fillna({"before": 0, "after": 0, "action": "empty"})
                  .rename_axis("age").reset_index())
    if len(report):
        report[key] = report[key].astype(np.int64)
        report[["before", "after"]] = report[["before", "after"]].astype(np.int64)
    order = np.sort(np.concatenate(positions), kind="stable")
    return records.iloc[order], report
