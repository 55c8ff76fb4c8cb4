"""MORPH II (academic release): one CSV of labels plus the image albums.

CSV columns: ``id_num, picture_num, dob, doa, race, gender, facial_hair, age, age_diff, glasses,
photo``, where ``photo`` is the image path relative to the dataset folder (e.g.
``Album2/070081_2F36.JPG``). With ``csv_name=None`` the first ``*.csv`` in ``root`` (then in its
sub-folders) that has these columns is used.

An image is looked for at ``<root>/<photo>``, then ``<csv folder>/<photo>``, then by its bare file
name directly under either folder. Drops: ``bad_row`` (no id_num or photo, or more fields than the
header), ``bad_age`` (age not a number in 0..120), ``missing_file``.

Columns: path, age, group, subject (= id_num), gender ('m'/'f' from M/F), race (as in the file:
B, W, A, H, O), and the file's picture_num, dob, doa, facial_hair, age_diff, glasses, photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from agelab.data.readers.base import (
    ReadResult, dropped_at, dropped_lines, finish, first_existing, groups_of, path_column, read_csv_text,
    require_dir, require_file,
)
from agelab.errors import DataError

REQUIRED = {"id_num", "age", "photo"}  # the other columns (see above) are kept when present


def _header(path: Path) -> set[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return {c.strip() for c in f.readline().split(",")}
    except OSError:
        return set()


def find_csv(root: Path) -> Path:
    candidates = sorted(root.glob("*.csv")) + sorted(p for p in root.rglob("*.csv") if p.parent != root)
    for path in candidates:
        if REQUIRED <= _header(path):
            return path
    if not candidates:
        raise DataError(f"morph2: expected a label CSV with columns {sorted(REQUIRED)} in {root} (no .csv file found)")
    # Name each CSV and what it lacks: the user sees which file was meant and what to fix.
    lacks = "; ".join(f"{path} lacks columns {sorted(REQUIRED - _header(path))}" for path in candidates)
    raise DataError(f"morph2: no label CSV in {root} has the columns {sorted(REQUIRED)}: {lacks}")


def read_morph2(root, csv_name: str | None = None) -> ReadResult:
    root = require_dir(root, "morph2")
    csv_path = find_csv(root) if csv_name is None else require_file(root / csv_name, "morph2")
    table, drops = read_csv_text(csv_path, "morph2")
    missing = REQUIRED - set(table.columns)
    if missing:
        raise DataError(f"morph2: {csv_path} lacks columns {sorted(missing)}")

    bad_row = (table["id_num"] == "") | (table["photo"] == "")
    ages = pd.to_numeric(table["age"], errors="coerce")
    bad_age = ~bad_row & ~ages.between(0, 120)
    drops += dropped_lines("bad_row", bad_row, csv_path) + dropped_lines("bad_age", bad_age, csv_path)
    keep = ~bad_row & ~bad_age

    def locate(photo: str):
        name = Path(photo).name
        return first_existing(root / photo, csv_path.parent / photo, root / name, csv_path.parent / name)

    paths = path_column((locate(p) if p else None for p in table["photo"].where(keep, "")), table.index)
    missing_file = keep & paths.isna()
    drops += dropped_at("missing_file", missing_file, table["photo"], lambda p: str(root / p))
    keep &= ~missing_file

    records = table[keep].copy()
    records["path"] = paths[keep]
    records["age"] = ages[keep]
    records["group"] = groups_of(records["age"])
    records["subject"] = records["id_num"]
    if "gender" in records:
        records["gender"] = records["gender"].str.lower().where(records["gender"].str.lower().isin(["m", "f"]), np.nan)
    records = records.drop(columns=["id_num"])
    return finish(records, drops, "morph2", csv_path)
