"""A datamodule source for real datasets: read records, crop faces into a cache, split, balance.

``PreparedSource(reader, cropper, cache_dir, split, balance=None, name="")``:

* ``reader()`` -> ReadResult (records + reader drops); configs pass a ``read_<name>`` function
  with ``_partial_: true`` and its options;
* ``cropper``: the agelab.data.faces.FaceCropper that makes the crops (conf/faces/);
* ``split(records)`` -> records with a ``split`` column (agelab.data.splits, ``_partial_: true``);
* ``balance(train_records)`` -> (records, report), applied to the training part only.

The cache lives in ``<cache_dir>/<name>-<key>``, ``key`` hashing the image paths, boxes and
cropper settings, so every dataset and crop setting has its own cache and switching back is free.
Its ``dropped.csv`` names every dropped image or label line and why (the reader's drops, then the
face pipeline's), rewritten on each prepare so it follows the current label files.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from agelab.data.faces import FaceCropper
from agelab.data.readers.table import EXTRA_SET
from agelab.data.prepare_cache import (
    DROP_COLUMNS, PrepareResult, cache_key, drop_summary, prepare_cache, write_drops,
)
from agelab.errors import ConfigError, DataError

log = logging.getLogger(__name__)
DROPS_CSV = "dropped.csv"  # beside the cache's dropped.json: every drop by path (or label line) and reason


def format_counts(title: str, kept: int, dropped: dict[str, int]) -> str:
    """A few aligned lines: kept, then each drop reason (largest first)."""
    total = kept + sum(dropped.values())
    lines = [f"{title}: kept {kept} of {total}"]
    lines += [f"  dropped {reason:<16} {count}" for reason, count in sorted(dropped.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


class PreparedSource:
    def __init__(self, reader: Callable, cropper: FaceCropper, cache_dir: str | Path, split: Callable,
                 balance: Callable | None = None, name: str = "", workers: int | None = None,
                 shard_size: int = 512, progress: bool = True):
        if not callable(reader):
            raise ConfigError(f"data.source.reader must be a callable returning ReadResult (use _partial_: true), got {reader!r}")
        if not callable(split):
            raise ConfigError(f"data.source.split must be a callable (use _partial_: true), got {split!r}")
        if balance is not None and not callable(balance):
            raise ConfigError(f"data.source.balance must be a callable or null, got {balance!r}")
        if not isinstance(cropper, FaceCropper):
            raise ConfigError(f"data.source.cropper must be an agelab.data.faces.FaceCropper, got {type(cropper).__name__}")
        self.reader, self.cropper, self.split, self.balance = reader, cropper, split, balance
        self.cache_dir, self.name = Path(cache_dir), name or "faces"
        self.workers, self.shard_size, self.progress = workers, shard_size, progress
        self.drop_counts: dict[str, int] = {}  # reason -> count, reader drops and face drops together
        self.reader_drops: dict[str, int] = {}
        self.face_drops: dict[str, int] = {}
        self.drops = pd.DataFrame(columns=DROP_COLUMNS)  # path (or label file:line), reason; one row per drop
        self.kept = 0
        self.folder: Path | None = None
        self.balance_report: pd.DataFrame | None = None
        self._prepared: PrepareResult | None = None

    def prepare(self) -> dict[str, int]:
        """Build (or reuse) the face cache; returns the drop counts by reason."""
        result = self.reader()
        records, reader_drops = getattr(result, "records", None), getattr(result, "dropped", None)
        if not isinstance(records, pd.DataFrame):
            raise ConfigError(f"data.source.reader returned {type(result).__name__}, expected a ReadResult "
                              "(records DataFrame + dropped Counter)")
        if len(records) == 0:
            root = getattr(self.reader, "keywords", {}).get("root")
            drops = drop_summary(reader_drops or {}) or "no files found"
            raise DataError(f"{self.name}: no faces to prepare from {root or 'the reader'} ({drops}); "
                            "check data.root and that its files follow this dataset's layout")
        self.folder = self.cache_dir / f"{self.name}-{cache_key(records, self.cropper)[:12]}"
        prepared = prepare_cache(records, self.folder, self.cropper, workers=self.workers,
                                 shard_size=self.shard_size, progress=self.progress)
        self.reader_drops = {k: int(v) for k, v in Counter(reader_drops or {}).items()}
        self.face_drops = {k: int(v) for k, v in prepared.dropped.items()}
        self.drop_counts = dict(Counter(self.reader_drops) + Counter(self.face_drops))
        named = getattr(result, "drops", None)  # a reader from outside agelab may give counts only
        parts = [named[DROP_COLUMNS]] if isinstance(named, pd.DataFrame) else []
        self.drops = pd.concat([*parts, prepared.drops], ignore_index=True)
        write_drops(self.folder / DROPS_CSV, self.drops)
        self.kept = prepared.kept
        self._prepared = prepared
        log.debug("%s", format_counts(f"{self.name} ({self.folder})", self.kept, self.drop_counts))
        return self.drop_counts

    @property
    def records(self) -> pd.DataFrame:
        """The records of the cropped faces, before any split or balancing (prepared on first use)."""
        if self._prepared is None:
            self.prepare()
        return self._prepared.records

    def load(self) -> tuple[np.ndarray, pd.DataFrame]:
        """(cached images, records with a ``split`` column); the train part balanced when asked."""
        if self._prepared is None:
            self.prepare()
        images, records = self._prepared.images, self._prepared.records
        extra = records[EXTRA_SET].notna() if EXTRA_SET in records else pd.Series(False, index=records.index)
        split = self.split(records[~extra])  # faces of extra sets train only: val and test stay the dataset's
        if not isinstance(split, pd.DataFrame) or "split" not in split:
            raise ConfigError("data.source.split must return the records with a 'split' column")
        if len(split) and (split.index.min() < 0 or split.index.max() >= len(images)):
            raise ConfigError("data.source.split changed the records index (it must stay the cache's image row)")
        split = pd.concat([split, records[extra].assign(split="train")])
        if self.balance is not None:
            train = split[split["split"] == "train"]
            if len(train) == 0:
                raise DataError(f"{self.name}: the train split is empty, nothing to balance")
            balanced, self.balance_report = self.balance(train)
            split = pd.concat([balanced, split[split["split"] != "train"]])
            log.info("%s: train split balanced from %d to %d faces", self.name, len(train), len(balanced))
        counts = split["split"].value_counts()
        log.debug("%s splits: %s", self.name, ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "val", "test")))
        return images, split
