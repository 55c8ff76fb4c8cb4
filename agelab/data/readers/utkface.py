"""UTKFace: labels live in the file names, ``[age]_[gender]_[race]_[date&time].jpg`` (or ``.jpg.chip.jpg``).

Every image file anywhere under ``root`` is considered. gender 0 = male, 1 = female; race 0..4 =
White, Black, Asian, Indian, Others. A name with a missing field (a few released files lack the
race), a non-numeric field, a gender outside 0/1, a race outside 0..4 or an age above 120 is dropped
as ``bad_filename``.

The download holds the aligned & cropped faces twice (``UTKFace/`` and its subset ``crop_part1/``,
both ``*.jpg.chip.jpg``), often beside the uncropped in-the-wild photos (``part1/``..``part3/``,
``*.jpg``) of the same names. So that no photo lands on both sides of a split, and no uncropped photo
is taken for a face: where any chip is present, the other images are dropped as ``not_a_chip``; then
one file is kept per image name (the ``UTKFace/`` copy first) and the others are dropped as
``duplicate``. A folder of in-the-wild photos alone is read as it is (its faces are found and framed
like any photo's).

``extra_dirs``: more labelled faces to train on (e.g. an Asian set), each a CSV file or a folder
holding ``labels.csv`` (agelab.data.readers.table); they join the training split only.

UTKFace has no identities; ``subject`` is the image name (the file name up to its first dot).
Columns: path, age, group, subject, gender, race (the name: White, ...), race_id (0..4).
"""

from __future__ import annotations

import re

import pandas as pd

from agelab.data.readers.base import ReadResult, finish, groups_of, is_image, records_of, require_dir
from agelab.data.readers.table import read_extra_sets
from agelab.errors import DataError

RACES = ("White", "Black", "Asian", "Indian", "Others")
_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)$")
CHIP = ".chip.jpg"


def read_utkface(root, extra_dirs=()) -> ReadResult:
    root = require_dir(root, "utkface")
    drops, rows, seen = [], [], set()
    paths = [p for p in root.rglob("*") if p.is_file() and is_image(p)]
    chips = any(p.name.endswith(CHIP) for p in paths)
    # Chips first, the UTKFace/ copy before crop_part1/'s, so the first file of a name is the one kept.
    for path in sorted(paths, key=lambda p: (not p.name.endswith(CHIP), p.parent.name != "UTKFace", p)):
        stem = path.name.split(".")[0]
        match = _NAME.match(stem)
        if not match or int(match[1]) > 120:
            drops.append((str(path), "bad_filename"))
            continue
        if chips and not path.name.endswith(CHIP):
            drops.append((str(path), "not_a_chip"))
            continue
        if stem in seen:
            drops.append((str(path), "duplicate"))
            continue
        seen.add(stem)
        age, gender, race = int(match[1]), int(match[2]), int(match[3])
        rows.append({"path": str(path), "age": float(age), "subject": stem, "gender": "mf"[gender],
                     "race": RACES[race], "race_id": race})
    if not rows and not drops:
        raise DataError(f"utkface: expected images named age_gender_race_datetime.jpg under {root} (none found)")
    records = records_of(rows, ["path", "age", "subject", "gender", "race", "race_id"])
    records.insert(2, "group", groups_of(records["age"]))
    extra = read_extra_sets(extra_dirs, "utkface")
    if len(extra.records):
        records = pd.concat([records, extra.records], ignore_index=True)
    return finish(records, [*drops, *extra.drops.itertuples(index=False, name=None)], "utkface", root)
