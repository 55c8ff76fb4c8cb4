"""Per-age re-balancing: caps, top-ups, empty ages, the report, the index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agelab.data.balance import balance_per_age
from agelab.errors import ConfigError


def make_records():
    # age 20: 50 faces, 21: 12, 22: 3, 23: none, 24: 1, 25.4 (binned to 25): 8
    ages = [20.0] * 50 + [21.0] * 12 + [22.0] * 3 + [24.0] + [25.4] * 8
    return pd.DataFrame({"age": ages, "path": [f"/img/{i}.jpg" for i in range(len(ages))]},
                        index=np.arange(len(ages)) + 1000)


def test_counts_end_within_bounds_and_report_matches():
    records = make_records()
    balanced, report = balance_per_age(records, low=5, high=10, seed=0)
    after = balanced["age"].round().value_counts().sort_index()
    assert after.to_dict() == {20: 10, 21: 10, 22: 5, 24: 5, 25: 8}
    assert report["age"].tolist() == [20, 21, 22, 23, 24, 25]
    assert report["before"].tolist() == [50, 12, 3, 0, 1, 8]
    assert report["after"].tolist() == [10, 10, 5, 0, 5, 8]
    assert report["action"].tolist() == ["capped", "capped", "resampled", "empty", "resampled", "kept"]
    # Duplicates keep their index, so they point at the same cached image.
    assert set(balanced.index) <= set(records.index)
    assert (balanced.loc[balanced["age"] == 24.0].index == 1065).all()
    assert balanced.index.is_monotonic_increasing
    assert (balanced["path"] == records.loc[balanced.index, "path"].to_numpy()).all()


def test_deterministic_per_seed():
    records = make_records()
    a, _ = balance_per_age(records, 5, 10, seed=1)
    b, _ = balance_per_age(records, 5, 10, seed=1)
    c, _ = balance_per_age(records, 5, 10, seed=2)
    assert a.index.equals(b.index) and not a.index.equals(c.index)


def test_only_one_split_and_unknown_ages_pass_through():
    records = make_records()
    records["split"] = "train"
    records.loc[records.index[:10], "split"] = "test"   # ten of the age-20 faces
    records.loc[records.index[-1], "age"] = np.nan
    balanced, report = balance_per_age(records, 2, 20, split="train")
    assert (balanced["split"] == "test").sum() == 10
    assert balanced["age"].isna().sum() == 1
    assert report.loc[report["age"] == 20, ["before", "after"]].values.tolist() == [[40, 20]]
    assert report.loc[report["age"] == 25, "before"].item() == 7


def test_group_key_and_no_cap():
    records = pd.DataFrame({"group": [0, 0, 0, 7, -1]})
    balanced, report = balance_per_age(records, low=2, high=None, key="group")
    assert balanced["group"].tolist() == [0, 0, 0, 7, 7, -1]
    assert report.to_dict("list") == {"group": [0, 7], "before": [3, 1], "after": [3, 2],
                                      "action": ["kept", "resampled"]}


@pytest.mark.parametrize("low, high", [(-1, 5), (6, 5), (1.5, 5), (0, 0)])
def test_bad_bounds(low, high):
    with pytest.raises(ConfigError):
        balance_per_age(make_records(), low, high)
