"""Cross-dataset evaluation: train on one dataset, test on another (SMLF-Net: IMDB-WIKI -> MORPH II).

``CrossDatasetSource(train, test, test_splits=None)`` wraps two sources (anything with
``load() -> (images, records)``, usually two PreparedSources):

* from ``train`` it keeps the rows split "train" and "val" (its "test" rows, if its split made
  any, are left out and counted);
* from ``test`` it keeps the rows whose split is in ``test_splits`` (default: every row, the
  whole dataset is the test set) and marks them "test".

The two image arrays are joined without copying (``ConcatImages``): the test rows' index is shifted
by the length of the train images, so it stays the row of the joined array. Both caches must hold
crops of the same size (they do when both are cropped for the same model).

Both dataset folders are checked before either is cropped, so a wrong ``test_root`` stops at once
rather than after cropping the whole train dataset.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd

from agelab.data.readers.base import require_root
from agelab.data.prepare_cache import DROP_COLUMNS
from agelab.errors import ConfigError, DataError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class ConcatImages:
    """Two uint8 (N, H, W, 3) arrays (often memory maps) read as one, without copying them."""

    def __init__(self, first: np.ndarray, second: np.ndarray):
        if tuple(first.shape[1:]) != tuple(second.shape[1:]) or first.dtype != second.dtype:
            raise DataError(f"cross-dataset images differ: train {first.dtype}{tuple(first.shape[1:])}, "
                            f"test {second.dtype}{tuple(second.shape[1:])}; crop both for the same model")
        self.parts = (first, second)
        self.offset = len(first)
        self.shape = (len(first) + len(second), *first.shape[1:])
        self.dtype = first.dtype
        self.ndim = first.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows):
        if isinstance(rows, (int, np.integer)):
            row = int(rows) + len(self) if rows < 0 else int(rows)
            if not 0 <= row < len(self):
                raise IndexError(f"row {rows} out of range for {len(self)} images")
            return self.parts[0][row] if row < self.offset else self.parts[1][row - self.offset]
        if isinstance(rows, slice):
            rows = np.arange(len(self))[rows]
        rows = np.asarray(rows, dtype=np.int64)
        rows = np.where(rows < 0, rows + len(self), rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} images")
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        first = rows < self.offset
        if first.any():
            out[first] = self.parts[0][rows[first]]
        if (~first).any():
            out[~first] = self.parts[1][rows[~first] - self.offset]
        return out

    def __array__(self, dtype=None, copy=None):
        joined = np.concatenate([np.asarray(p) for p in self.parts])
        return joined if dtype is None else joined.astype(dtype)


class CrossDatasetSource:
    def __init__(self, train, test, test_splits=None, test_root: str | None = None, name: str = ""):
        for role, source in (("train", train), ("test", test)):
            if not callable(getattr(source, "load", None)):
                raise ConfigError(f"data.source.{role} must be a face source with load(), got {type(source).__name__}")
        test_splits = list(SPLITS) if test_splits is None else [test_splits] if isinstance(test_splits, str) \
            else list(test_splits)
        unknown = [s for s in test_splits if s not in SPLITS]
        if unknown or not test_splits:
            raise ConfigError(f"data.source.test_splits must be a list from {list(SPLITS)}, got {test_splits!r}")
        self.train, self.test, self.test_splits = train, test, test_splits
        self.test_root = test_root  # the test dataset's folder (the test reader interpolates it)
        self.name = name or "+".join(getattr(s, "name", "") or role for role, s in (("train", train), ("test", test)))
        self.left_out: dict[str, int] = {}
        self.drop_counts: dict[str, int] = {}
        self.drops = pd.DataFrame(columns=DROP_COLUMNS)  # path, <role>/<reason>
        self.kept = 0

    def check_roots(self) -> None:
        """DataError, before any cropping, when a source's dataset folder (its reader's root) is missing."""
        for key, source in (("data.root", self.train), ("data.source.test_root", self.test)):
            require_root(getattr(getattr(source, "reader", None), "keywords", {}).get("root"), None, key)

    def prepare(self) -> dict[str, int]:
        """Build both face caches (sources that have a cache); drop counts as ``<role>/<reason>``."""
        self.check_roots()
        for source in (self.train, self.test):
            if callable(getattr(source, "prepare", None)):
                source.prepare()
        self._collect_counts()
        return self.drop_counts

    def _collect_counts(self) -> None:
        counts: Counter = Counter()
        kept, named = 0, [pd.DataFrame(columns=DROP_COLUMNS)]
        for role, source in (("train", self.train), ("test", self.test)):
            drops = getattr(source, "drop_counts", None)
            if isinstance(drops, dict):
                counts.update({f"{role}/{reason}": int(n) for reason, n in drops.items()})
            kept += int(getattr(source, "kept", 0) or 0)
            items = getattr(source, "drops", None)
            if isinstance(items, pd.DataFrame):
                named.append(items[DROP_COLUMNS].assign(reason=role + "/" + items["reason"].astype(str)))
        self.drop_counts, self.kept = dict(counts), kept
        self.drops = pd.concat(named, ignore_index=True)

    def load(self) -> tuple[ConcatImages, pd.DataFrame]:
        self.check_roots()
        train_images, train_records = self.train.load()
        test_images, test_records = self.test.load()
        for role, records in (("train", train_records), ("test", test_records)):
            if "split" not in records:
                raise ConfigError(f"data.source.{role} returned records without a 'split' column")
        keep_train = train_records["split"].isin(["train", "val"])
        keep_test = test_records["split"].isin(self.test_splits)
        self.left_out = {"train_source_test_rows": int((~keep_train).sum()),
                         "test_source_other_rows": int((~keep_test).sum())}
        train_part = train_records[keep_train].copy()
        test_part = test_records[keep_test].copy()
        if len(test_part) == 0:
            raise DataError(f"{self.name}: the test dataset has no rows in splits {self.test_splits}")
        test_part["split"] = "test"
        test_part.index = test_part.index + len(train_images)
        train_part["dataset"], test_part["dataset"] = "train", "test"
        records = pd.concat([train_part, test_part])
        self._collect_counts()
        log.info("%s: train %d, val %d (from the train dataset), test %d (from the test dataset); left out %s",
                 self.name, int((records["split"] == "train").sum()), int((records["split"] == "val").sum()),
                 len(test_part), self.left_out)
        return ConcatImages(train_images, test_images), records
