"""Any labelled image list as a CSV: the door for private data.

Columns: ``path`` (relative to the CSV's folder, or absolute) and ``age`` and/or ``group``;
optional ``subject`` and ``gender``; any other column is kept as it is. A header naming a column
twice is refused.

Rules, in the order they are applied (each dropped row counted once, under its first reason):
- ``bad_row``: the row fills more fields than the header has (empty ones past it, a trailing comma, are fine).
- ``bad_age``: the age is not a number, negative or above 120 (NaN ages are allowed only where a
  valid group is given; without an ``age`` column every row needs a group).
- ``bad_group``: a group that is not an integer 0..7 (an empty group is fine where the age is valid).
- ``duplicate``: the same image path again (the first row is kept).
- ``missing_file``: the image does not exist.

``group`` is taken from the file where given, else from the age (agelab.groups.age_to_group).
``subject`` defaults to the image path (each image its own subject). ``gender`` accepts
m/f/male/female (any case); anything else becomes NaN.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from agelab.data.names import printable
from agelab.data.readers.base import (
    BASE_COLUMNS, ReadResult, dropped_at, dropped_lines, finish, groups_of, path_column, read_csv_text, require_dir,
    require_file,
)
from agelab.errors import DataError
from agelab.groups import NUM_GROUPS

MAX_AGE = 120
_GENDERS = {"m": "m", "male": "m", "man": "m", "f": "f", "female": "f", "woman": "f"}


def image_path(base: str, written: str) -> str:
    """The image a label row names ("" for none): relative to the label file's folder; a path written
    with Windows separators (``faces\\a.jpg``) is read with ``/`` when only that names a file."""
    if not written:
        return ""
    path = os.path.normpath(os.path.join(base, written))
    if "\\" in written and not os.path.isfile(path):
        posix = os.path.normpath(os.path.join(base, written.replace("\\", "/")))
        return posix if os.path.isfile(posix) else path
    return path


def repeated_column(csv_path: Path) -> str | None:
    """The first column name the CSV's header gives twice (None when each is once; unnamed ones are
    not counted): the table itself already has the second one renamed (``age.1``)."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        names = [n.strip() for n in next(csv.reader(f, skipinitialspace=True), [])]
    return next((n for i, n in enumerate(names) if n and n in names[:i]), None)


def read_table(root, file: str = "labels.csv", name: str = "table") -> ReadResult:
    folder = require_dir(root, name)
    csv_path = require_file(folder / file, name)
    table, bad_rows = read_csv_text(csv_path, name)
    twice = repeated_column(csv_path)
    if twice:
        raise DataError(f"{name}: {csv_path} has the column {twice!r} twice in its header")
    if "path" not in table or not ({"age", "group"} & set(table.columns)):
        raise DataError(f"{name}: {csv_path} needs a 'path' column and an 'age' or 'group' column, "
                        f"found {list(table.columns)}")
    return parse_table(table, csv_path.parent, name=name, root=csv_path, drops=bad_rows)


def parse_table(table: pd.DataFrame, base: Path, name: str, root, drops=()) -> ReadResult:
    """Apply the rules above to a table of str cells whose relative paths start at ``base``
    (``root``: the CSV file, named with the line of each dropped label; ``drops``: rows already dropped)."""
    n = len(table)
    age_text = table["age"].str.strip() if "age" in table else pd.Series([""] * n, index=table.index)
    # An empty or NaN-like age cell means "no age" (allowed where a group is given).
    age_text = age_text.where(~age_text.str.lower().isin(["nan", "none", "na", "n/a"]), "")
    ages = pd.to_numeric(age_text, errors="coerce")
    group_text = table["group"].str.strip() if "group" in table else pd.Series([""] * n, index=table.index)
    group_num = pd.to_numeric(group_text, errors="coerce")

    has_group = group_text != ""
    valid_group = has_group & group_num.isin(range(NUM_GROUPS))
    valid_age = ages.between(0, MAX_AGE)
    # An age cell that says something unusable is bad even when a group is given.
    bad_age = (age_text != "") & ~valid_age
    bad_age |= (age_text == "") & ~has_group
    bad_group = ~bad_age & has_group & ~valid_group
    drops = [*drops, *dropped_lines("bad_age", bad_age, root), *dropped_lines("bad_group", bad_group, root)]
    keep = ~bad_age & ~bad_group

    paths = path_column((image_path(base, p) for p in table["path"].str.strip()), index=table.index)
    # A later good row must not be counted as a duplicate of an earlier dropped one.
    duplicate = keep & paths.where(keep).duplicated(keep="first") & paths.ne("")
    drops += dropped_lines("duplicate", duplicate, root)
    keep &= ~duplicate
    exists = paths.map(lambda p: bool(p) and os.path.isfile(p))
    drops += dropped_at("missing_file", keep & ~exists & (paths != ""), paths)
    drops += dropped_lines("missing_file", keep & (paths == ""), root)  # no path given: name the line
    keep &= exists

    records = table[keep].copy()
    records["path"] = paths[keep]
    records["age"] = ages[keep].where(valid_age[keep], np.nan)
    from_age = groups_of(records["age"])
    records["group"] = np.where(valid_group[keep], group_num[keep].fillna(-1), from_age).astype(np.int64)
    shown = records["path"].map(printable)  # the subject of a row without one: its image
    if "subject" in records:
        subject = records["subject"].str.strip()
        records["subject"] = subject.where(subject != "", shown)
    else:
        records["subject"] = shown
    if "gender" in records:
        records["gender"] = records["gender"].str.strip().str.lower().map(_GENDERS)
    return finish(records, drops, name, root)


EXTRA_SET = "extra_set"  # the column naming the extra set a row came from (empty for the dataset's own rows)


def read_extra_sets(entries, name: str) -> ReadResult:
    """More labelled faces to train on (``extra_dirs``, e.g. an Asian set beside IMDB-WIKI or UTKFace):
    each entry a CSV file or a folder holding labels.csv, in this module's format. Their rows carry
    ``extra_set`` (the folder or file name): they join the training split only (agelab.data.prepared),
    so the dataset's own validation and test faces stay the same."""
    parts, drops = [], []
    for entry in [entries] if isinstance(entries, str) else list(entries or ()):
        entry = Path(entry).expanduser()
        if entry.is_dir():
            result, label = read_table(entry, "labels.csv", name=f"{name} extra"), entry.name
        elif entry.suffix.lower() == ".csv":
            result, label = read_table(entry.parent, entry.name, name=f"{name} extra"), entry.stem
        else:
            raise DataError(f"{name}: extra set {entry} is neither a folder with labels.csv nor a .csv file")
        parts.append(result.records.assign(**{EXTRA_SET: label}))
        drops += list(result.drops.itertuples(index=False, name=None))
    records = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*BASE_COLUMNS, EXTRA_SET])
    return finish(records, drops, f"{name} extra", entries)
