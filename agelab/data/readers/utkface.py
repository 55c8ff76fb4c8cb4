"""UTKFace: labels live in the file names, ``[age]_[gender]_[race]_[date&time].jpg`` (or ``.jpg.chip.jpg``).

Every image file anywhere under ``root`` is considered. gender 0 = male, 1 = female; race 0..4 =
White, Black, Asian, Indian, Others. A name with a missing field (a few released files lack the
race), a non-numeric field, a gender outside 0/1, a race outside 0..4 or an age above 120 is dropped
as ``bad_filename``.

UTKFace has no identities; ``subject`` is the name up to its first dot, so the aligned and the
in-the-wild copy of one photo (same name, different folders) share a subject.
Columns: path, age, group, subject, gender, race (the name: White, ...), race_id (0..4).
"""

from __future__ import annotations

import re

import pandas as pd

from agelab.data.readers.base import ReadResult, finish, groups_of, is_image, require_dir
from agelab.errors import DataError

RACES = ("White", "Black", "Asian", "Indian", "Others")
_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)$")


def read_utkface(root) -> ReadResult:
    root = require_dir(root, "utkface")
    drops, rows = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and is_image(p)):
        stem = path.name.split(".")[0]
        match = _NAME.match(stem)
        if not match or int(match[1]) > 120:
            drops.append((str(path), "bad_filename"))
            continue
        age, gender, race = int(match[1]), int(match[2]), int(match[3])
        rows.append({"path": str(path), "age": float(age), "subject": stem, "gender": "mf"[gender],
                     "race": RACES[race], "race_id": race})
    if not rows and not drops:
        raise DataError(f"utkface: expected images named age_gender_race_datetime.jpg under {root} (none found)")
    records = pd.DataFrame(rows, columns=["path", "age", "subject", "gender", "race", "race_id"])
    records.insert(2, "group", groups_of(records["age"]))
    return finish(records, drops, "utkface", root)
