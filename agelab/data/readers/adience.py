"""Adience: five tab-separated fold files and aligned face crops.

Layout under ``root``: ``fold_{k}_data.txt`` (or ``fold_frontal_{k}_data.txt`` with
``frontal_only``), header ``user_id original_image face_id age gender x y dx dy tilt_ang
fiducial_yaw_angle fiducial_score``; images at
``aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>``, or else
``faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>``.

The ``age`` column is messy. Default rule for each kind of value (counted in ``mapped`` or
``dropped`` under the name in brackets):

- canonical tuples ``(0, 2) (4, 6) (8, 12) (8, 13) (15, 20) (25, 32) (38, 43) (48, 53) (60, 100)``
  -> their group; ``(8, 12)`` is the 8-13 group [mapped "canonical_tuple"].
- other tuples, e.g. ``(27, 32) (38, 42) (38, 48) (8, 23) (25, 23)``:
  ``odd_ages="nearest"`` (default) -> the group nearest the tuple's midpoint (age_to_group), so
  (27, 32) -> 25-32, (38, 42) -> 38-43, (38, 48) -> 38-43, (8, 23) -> 15-20, (25, 23) -> 25-32
  [mapped "odd_tuple"]; ``odd_ages="drop"`` -> dropped [dropped "odd_tuple"].
- bare integers, e.g. ``35``: ``bare_ints="group"`` (default) -> age_to_group(35), and the age column
  keeps 35 [mapped "bare_int"]; ``bare_ints="drop"`` -> dropped [dropped "bare_int"].
- ``None`` or an empty cell -> dropped [dropped "age_none"].
- anything else -> dropped [dropped "bad_age"].

Tuple labels give a group only, so their ``age`` is NaN. A line with fewer than the first five
fields is dropped as "bad_row"; an image found under neither layout as "missing_file".

Columns: path, age, group, subject (= user_id, the Flickr account the folds are split by, so a
split by subject never puts one account on two sides), gender ('f'/'m', NaN for 'u'),
fold (the file index), age_label (the raw text), face_id, and the file's x, y, dx, dy, tilt_ang,
fiducial_yaw_angle, fiducial_score. x, y, dx, dy locate the face in the original Flickr photo,
not in the aligned crop that ``path`` names, so they are not given as a face box.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd

from agelab.data.readers.base import ReadResult, finish, first_existing, records_of, require_dir, require_file
from agelab.errors import ConfigError
from agelab.groups import age_to_group

COLUMNS = ["user_id", "original_image", "face_id", "age", "gender", "x", "y", "dx", "dy", "tilt_ang",
           "fiducial_yaw_angle", "fiducial_score"]
NUMERIC = COLUMNS[5:]
CANONICAL = {(0, 2): 0, (4, 6): 1, (8, 12): 2, (8, 13): 2, (15, 20): 3, (25, 32): 4, (38, 43): 5, (48, 53): 6,
             (60, 100): 7}
_TUPLE = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_GENDERS = {"f": "f", "m": "m"}


def parse_age(text: str, odd_ages: str = "nearest", bare_ints: str = "group"):
    """(age, group, rule, kept) for one age cell; rule names the counter it goes to."""
    text = text.strip()
    if text in ("", "None", "none", "nan"):
        return np.nan, -1, "age_none", False
    match = _TUPLE.match(text)
    if match:
        pair = (int(match[1]), int(match[2]))
        if pair in CANONICAL:
            return np.nan, CANONICAL[pair], "canonical_tuple", True
        if odd_ages == "drop":
            return np.nan, -1, "odd_tuple", False
        return np.nan, age_to_group(sum(pair) / 2), "odd_tuple", True
    if text.isdigit():
        if bare_ints == "drop":
            return np.nan, -1, "bare_int", False
        return float(text), age_to_group(int(text)), "bare_int", True
    return np.nan, -1, "bad_age", False


def read_adience(root, frontal_only: bool = False, odd_ages: str = "nearest", bare_ints: str = "group",
                 folds=(0, 1, 2, 3, 4)) -> ReadResult:
    if odd_ages not in ("nearest", "drop"):
        raise ConfigError(f"adience odd_ages must be 'nearest' or 'drop', got {odd_ages!r}")
    if bare_ints not in ("group", "drop"):
        raise ConfigError(f"adience bare_ints must be 'group' or 'drop', got {bare_ints!r}")
    folds = [folds] if isinstance(folds, int) else list(folds)
    if not folds or any(not isinstance(k, int) or not 0 <= k <= 4 for k in folds):
        raise ConfigError(f"adience folds must be a list of fold numbers 0..4, got {folds!r}")
    root = require_dir(root, "adience")
    pattern = "fold_frontal_{}_data.txt" if frontal_only else "fold_{}_data.txt"
    files = {k: require_file(root / pattern.format(k), "adience") for k in folds}

    drops, mapped, rows = [], Counter(), []  # drops: (path or file:line, reason)
    for fold, path in files.items():
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for number, line in enumerate(lines[1:], start=2):  # the first line is the header
            if not line.strip():
                continue
            where = f"{path}:{number}"
            cells = [c.strip() for c in line.split("\t")]
            if len(cells) < 5 or not all(cells[:3]):
                drops.append((where, "bad_row"))
                continue
            cells += [""] * (len(COLUMNS) - len(cells))
            row = dict(zip(COLUMNS, cells))
            age, group, rule, kept = parse_age(row["age"], odd_ages, bare_ints)
            if not kept:
                drops.append((where, rule))
                continue
            user, face, image = row["user_id"], row["face_id"], row["original_image"]
            aligned = root / "aligned" / user / f"landmark_aligned_face.{face}.{image}"
            file = first_existing(aligned, root / "faces" / user / f"coarse_tilt_aligned_face.{face}.{image}")
            if file is None:
                drops.append((str(aligned), "missing_file"))
                continue
            mapped[rule] += 1
            rows.append({"path": file, "age": age, "group": group, "subject": user,
                         "gender": _GENDERS.get(row["gender"].lower(), np.nan), "fold": fold,
                         "age_label": row["age"], "face_id": face,
                         **{c: row[c] for c in NUMERIC}})
    records = records_of(rows, ["path", "age", "group", "subject", "gender", "fold", "age_label", "face_id", *NUMERIC])
    for column in NUMERIC:
        records[column] = pd.to_numeric(records[column], errors="coerce")
    records["fold"] = records["fold"].astype(np.int64)
    return finish(records, drops, "adience", root, mapped)
