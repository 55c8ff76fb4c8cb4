"""Split protocols: shares, subject exclusivity, folds, leave-one-person-out, reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agelab.data.splits import (fold_split, lopo_folds, lopo_split, predefined_split, random_split,
                                subject_split)
from agelab.errors import ConfigError


def make_records(n_subjects=40, seed=0):
    """Subjects with 1..9 images each, five folds by subject, and a non-trivial index (cache rows)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 10, n_subjects)
    subject = np.repeat([f"s{i:03d}" for i in range(n_subjects)], sizes)
    fold = np.repeat(np.arange(n_subjects) % 5, sizes)
    n = len(subject)
    return pd.DataFrame({"path": [f"/img/{i}.jpg" for i in range(n)], "age": rng.integers(0, 80, n).astype(float),
                         "subject": subject, "fold": fold}, index=np.arange(n) * 3 + 7)


def sides(split: pd.DataFrame) -> pd.Series:
    return split.groupby("subject")["split"].nunique()


def test_random_split_shares_and_seed():
    records = make_records()
    n = len(records)
    split = random_split(records, test_fraction=0.2, val_fraction=0.1, seed=3)
    counts = split["split"].value_counts()
    n_test = round(0.2 * n)
    assert counts["test"] == n_test and counts["val"] == round(0.1 * (n - n_test))
    assert counts["train"] == n - counts["test"] - counts["val"]
    assert split.index.equals(records.index) and "split" not in records  # a copy, index kept
    assert split["split"].equals(random_split(records, seed=3)["split"])
    assert not split["split"].equals(random_split(records, seed=4)["split"])
    # The same rows in another order get the same sides.
    shuffled = records.sample(frac=1, random_state=1)
    assert random_split(shuffled, seed=3)["split"].sort_index().equals(split["split"])


def test_subject_split_keeps_each_subject_on_one_side():
    records = make_records(n_subjects=60)
    split = subject_split(records, test_fraction=0.2, val_fraction=0.1, seed=0)
    assert (sides(split) == 1).all()
    share = split["split"].value_counts(normalize=True)
    assert 0.2 <= share["test"] < 0.2 + 9 / len(records)  # whole subjects: at most one subject over
    assert share["val"] > 0 and share["train"] > 0.6
    assert split["split"].equals(subject_split(records, seed=0)["split"])
    assert not split["split"].equals(subject_split(records, seed=1)["split"])
    assert split.index.equals(records.index)


def test_fold_split_uses_the_fold_column():
    records = make_records()
    for fold in range(5):
        split = fold_split(records, fold, val_fraction=0.1, seed=0)
        assert ((split["split"] == "test") == (records["fold"] == fold)).all()
        assert (split.loc[split["split"] == "val", "fold"] != fold).all()
        assert (sides(split) == 1).all()
        assert (split["split"] == "val").any()
    with pytest.raises(ConfigError, match=r"folds \[0, 1, 2, 3, 4\], got 5"):
        fold_split(records, 5)
    with pytest.raises(ConfigError, match="'fold' column"):
        fold_split(records.drop(columns="fold"), 0)


def test_lopo_covers_every_subject_once():
    records = make_records(n_subjects=12)
    n = lopo_folds(records)
    assert n == 12
    tested = []
    for fold in range(n):
        split = lopo_split(records, fold, seed=0)
        test_subjects = split.loc[split["split"] == "test", "subject"].unique()
        assert len(test_subjects) == 1
        tested.append(test_subjects[0])
        assert (sides(split) == 1).all()
    assert tested == sorted(records["subject"].unique())
    no_val = lopo_split(records, 0, val_fraction=0.0)
    assert set(no_val["split"]) == {"train", "test"}
    with pytest.raises(ConfigError, match=r"0\.\.11"):
        lopo_split(records, 12)


def test_predefined_split_and_bad_arguments():
    records = make_records(n_subjects=3)
    records["split"] = (["train", "valid", "test"] * len(records))[:len(records)]
    split = predefined_split(records)
    assert split["split"].tolist() == (["train", "val", "test"] * len(records))[:len(records)]
    records.loc[records.index[0], "split"] = "holdout"
    with pytest.raises(ConfigError, match="holdout"):
        predefined_split(records)
    with pytest.raises(ConfigError, match="'split' column"):
        predefined_split(records.drop(columns="split"))
    with pytest.raises(ConfigError, match="test_fraction"):
        random_split(records, test_fraction=1.5)
    with pytest.raises(ConfigError, match="subject"):
        subject_split(records.drop(columns="subject"))
