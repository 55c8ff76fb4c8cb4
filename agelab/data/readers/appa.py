"""APPA-REAL: ``gt_avg_{train,valid,test}.csv`` with real and apparent (crowd-voted) ages.

CSV columns: ``file_name, [num_ratings,] apparent_age_avg, apparent_age_std, real_age``; the image is
``<root>/<split>/<file_name>``. The release also ships an aligned crop ``<file_name>_face.jpg``
beside each image: with ``face_crops=True`` that crop is used, otherwise the full image, falling
back to the crop when the full image is absent.

``target`` picks the training age: "real" (real_age) or "apparent" (apparent_age_avg); both are
kept as columns. ``split`` is train / val / test (from train / valid / test); use
agelab.data.splits.predefined_split to keep it. Drops: ``bad_row`` (empty file_name, none of the three
age columns filled, or more fields than the header), ``bad_age`` (chosen age not a number in 0..120),
``missing_file``.
APPA-REAL has no identities: ``subject`` is the file name (unique over the three files).
"""

from __future__ import annotations

import pandas as pd

from agelab.data.readers.base import (
    ReadResult, dropped_at, dropped_lines, finish, first_existing, groups_of, path_column, read_csv_text, require_dir,
    require_file,
)
from agelab.errors import ConfigError, DataError

SPLITS = {"train": "train", "valid": "val", "test": "test"}
AGE_COLUMNS = ["apparent_age_avg", "apparent_age_std", "real_age"]
REQUIRED = {"file_name", *AGE_COLUMNS}


def read_appa(root, target: str = "real", splits=("train", "valid", "test"), face_crops: bool = False) -> ReadResult:
    if target not in ("real", "apparent"):
        raise ConfigError(f"appa target must be 'real' or 'apparent', got {target!r}")
    splits = [splits] if isinstance(splits, str) else list(splits)
    if not splits or any(s not in SPLITS for s in splits):
        raise ConfigError(f"appa splits must be a list from {list(SPLITS)}, got {splits!r}")
    root = require_dir(root, "appa")
    drops, parts = [], []
    for split in splits:
        csv_path = require_file(root / f"gt_avg_{split}.csv", "appa")
        table, bad_rows = read_csv_text(csv_path, "appa")
        missing = REQUIRED - set(table.columns)
        if missing:
            raise DataError(f"appa: {csv_path} lacks columns {sorted(missing)}")
        names = table["file_name"].str.strip()
        real = pd.to_numeric(table["real_age"], errors="coerce")
        apparent = pd.to_numeric(table["apparent_age_avg"], errors="coerce")
        age = real if target == "real" else apparent
        # A row cut short before its age columns is a broken row, not a bad age.
        bad_row = (names == "") | (table[AGE_COLUMNS] == "").all(axis=1)
        bad_age = ~bad_row & ~age.between(0, 120)
        drops += bad_rows + dropped_lines("bad_row", bad_row, csv_path) + dropped_lines("bad_age", bad_age, csv_path)
        keep = ~bad_row & ~bad_age
        folder = root / split
        choices = ((lambda n: (folder / f"{n}_face.jpg",)) if face_crops
                   else (lambda n: (folder / n, folder / f"{n}_face.jpg")))
        paths = path_column((first_existing(*choices(n)) if n else None for n in names.where(keep, "")), names.index)
        missing_file = keep & paths.isna()
        drops += dropped_at("missing_file", missing_file, names, lambda n: str(choices(n)[0]))
        keep &= ~missing_file
        part = pd.DataFrame({
            "path": paths, "age": age, "subject": names, "split": SPLITS[split], "file_name": names,
            "apparent_age": apparent, "apparent_std": pd.to_numeric(table["apparent_age_std"], errors="coerce"),
            "real_age": real,
        })
        if "num_ratings" in table:
            part["num_ratings"] = pd.to_numeric(table["num_ratings"], errors="coerce")
        parts.append(part[keep])
    records = pd.concat(parts, ignore_index=True)
    records.insert(2, "group", groups_of(records["age"]))
    return finish(records, drops, "appa", root)
