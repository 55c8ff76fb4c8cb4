"""FG-NET: labels in the file names, ``078A11.JPG`` = subject 078 at age 11.

Images lie in ``root/images`` when that folder exists, else directly in ``root``. A letter after the
age (``001A02a.JPG``) marks another photo at the same age. Image files whose name does not follow
the pattern are dropped as ``bad_filename``; other files (e.g. ``.pts`` landmarks) are ignored.
Columns: path, age, group, subject (the 3-digit id as text).
"""

from __future__ import annotations

import re

from agelab.data.readers.base import ReadResult, finish, groups_of, is_image, records_of, require_dir
from agelab.errors import DataError

_NAME = re.compile(r"^(\d{3})[aA](\d{2})[a-zA-Z]?$")


def read_fgnet(root) -> ReadResult:
    root = require_dir(root, "fgnet")
    folder = root / "images" if (root / "images").is_dir() else root
    drops, rows = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and is_image(p)):
        match = _NAME.match(path.stem)
        if not match:
            drops.append((str(path), "bad_filename"))
            continue
        rows.append({"path": str(path), "age": float(match[2]), "subject": match[1]})
    if not rows and not drops:
        raise DataError(f"fgnet: expected images named like 078A11.JPG in {folder} (none found)")
    records = records_of(rows, ["path", "age", "subject"])
    records.insert(2, "group", groups_of(records["age"]))
    return finish(records, drops, "fgnet", folder)
