"""What every dataset reader returns, and the small checks they share.

A reader turns a dataset's raw on-disk labels into a records table, one row per face image:

- ``path``: absolute path of the image (as a str); readers only check that the file exists. The
  column has dtype object (``path_column``): a name that is not UTF-8 stays as the surrogate-escaped
  str Python opens it by, which no pandas text column holds.
- ``age``: float years, NaN where the dataset gives only a group.
- ``group``: int 0..7 (agelab.groups), -1 when unknown.
- ``subject``: str identity; rows of one person share it. Where a dataset has no identities,
  each image is its own subject.
- extras where the format has them: ``gender`` ('m'/'f'/NaN), ``race``, ``fold``, ``split``,
  ``apparent_age``, ``apparent_std``, ``real_age``, ``face_score``, ``box_x1..box_y2``, ``source``.

Rows a reader cannot use are dropped and counted by reason in ``ReadResult.dropped``, never
skipped silently; ``ReadResult.drops`` says where each one is, so a few bad rows can be found among
many (``path``: the image for a file problem or where the image carries the label, else
``<label file>:<line>``; as text, agelab.data.names.printable). A missing dataset folder or label
file raises DataError.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from agelab.data.names import printable
from agelab.errors import DataError
from agelab.groups import GROUP_NAMES, NUM_GROUPS, age_to_group


def require_root(root, layout: str | None, key: str = "data.root") -> None:
    """DataError naming ``key`` and what it should hold (``data.layout``) unless ``root`` is a folder."""
    if root is not None and not Path(str(root)).expanduser().is_dir():
        expected = f" (it should hold {layout})" if layout else ""
        raise DataError(f"{key} {root} is not a folder{expected}")


BASE_COLUMNS = ["path", "age", "group", "subject"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DROP_COLUMNS = ["path", "reason"]


@dataclass
class ReadResult:
    """Records read from one dataset, plus what was dropped (reason -> count) and how labels were mapped."""

    records: pd.DataFrame
    dropped: Counter = field(default_factory=Counter)
    mapped: Counter = field(default_factory=Counter)
    name: str = ""
    root: str = ""
    drops: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DROP_COLUMNS))  # path, reason

    def counts(self) -> dict:
        """Flat counts, ready to log: kept, dropped, dropped/<reason>, mapped/<rule>."""
        out = {"kept": len(self.records), "dropped": int(sum(self.dropped.values()))}
        out.update({f"dropped/{reason}": int(n) for reason, n in sorted(self.dropped.items())})
        out.update({f"mapped/{rule}": int(n) for rule, n in sorted(self.mapped.items())})
        return out

    def report(self) -> str:
        """A few readable lines: kept, dropped by reason, mapping rules used, faces per group."""
        kept, lost = len(self.records), sum(self.dropped.values())
        lines = [f"{self.name or 'dataset'}: kept {kept} of {kept + lost} rows from {self.root}"]
        if lost:
            lines.append(f"  dropped {lost}:")
            lines += [f"    {reason:<20} {n}" for reason, n in self.dropped.most_common()]
        if self.mapped:
            lines.append("  label mapping:")
            lines += [f"    {rule:<20} {n}" for rule, n in self.mapped.most_common()]
        if kept:
            ages = self.records["age"].dropna()
            if len(ages):
                lines.append(f"  ages {ages.min():g}-{ages.max():g}, mean {ages.mean():.1f} ({len(ages)} with an age)")
            groups = self.records["group"].value_counts()
            per_group = ", ".join(f"{GROUP_NAMES[g]}: {groups.get(g, 0)}" for g in range(NUM_GROUPS))
            lines.append(f"  per group: {per_group}" + (f", unknown: {groups[-1]}" if -1 in groups else ""))
            lines.append(f"  subjects: {self.records['subject'].nunique()}")
        return "\n".join(lines)


def require_dir(root, name: str) -> Path:
    """The dataset folder as an absolute Path, or DataError naming it."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"{name}: dataset folder {path} does not exist")
    return path


def require_file(path: Path, name: str) -> Path:
    if not path.is_file():
        raise DataError(f"{name}: expected label file {path.name} in {path.parent} (not found)")
    return path


def read_csv_text(path: Path, name: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """A CSV as a table of stripped str cells (empty cells are ''), and its ``bad_row`` drops; DataError
    naming the file when it cannot be parsed at all.

    Blank lines are left out but counted: a row's index is the file line it starts on - 2 (header =
    line 1; a quoted cell may span lines). Empty fields past the header's width (a trailing comma) are
    ignored; a row that fills more fields than the header has (e.g. an unquoted comma) is dropped as
    ``bad_row``, named ``<csv>:<line>``.
    """
    try:
        # A csv pre-pass finds the long rows: pandas' python engine (on_bad_lines=callable) is slower
        # and silently cuts a long row short when the first row ends in a comma.
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.reader(f, skipinitialspace=True)
            width = len(next(rows, []))
            index, too_long, line = [], [], rows.line_num  # (line: the last line read so far)
            for row in rows:
                index.append(line + 1 - 2)
                if any(cell.strip() for cell in row[width:]):
                    too_long.append(index[-1])
                line = rows.line_num
        # usecols: pandas keeps the first `width` fields of a longer row instead of stopping at it;
        # index_col=False: a trailing comma on every row must not make the first column the index.
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, skip_blank_lines=False,
                            index_col=False, usecols=range(width) if width else None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot parse {path}: {str(exc).splitlines()[0]}") from None
    table.columns = [str(c).strip() for c in table.columns]
    if len(index) == len(table):  # (always, unless the two parsers disagree: then rows are counted)
        table.index = index
    table = table.drop(index=too_long, errors="ignore")
    drops = [(f"{path}:{i + 2}", "bad_row") for i in too_long]
    if not len(table.columns):
        return table, drops
    table = table.apply(lambda column: column.str.strip())
    return table[(table != "").any(axis=1)], drops


def path_column(paths, index=None) -> pd.Series:
    """Image paths (str, or None for none) as a column of dtype object, which holds any name a file
    system gives as the str the file opens by (a pandas text column holds UTF-8 only)."""
    return pd.Series(list(paths), index=index, dtype=object)


def records_of(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Rows (dicts, each with a ``path``) as a table of ``columns``, its ``path`` a path_column."""
    table = pd.DataFrame([{**row, "path": None} for row in rows], columns=columns)
    table["path"] = path_column(row["path"] for row in rows)
    return table


def groups_of(ages) -> np.ndarray:
    """age_to_group with -1 where the age is unknown."""
    ages = np.asarray(ages, dtype=np.float64)
    groups = np.full(ages.shape, -1, dtype=np.int64)
    known = np.isfinite(ages)
    if known.any():
        groups[known] = age_to_group(ages[known])
    return groups


def first_existing(*candidates: Path) -> str | None:
    """The first candidate that is a file, as a str; None when none is."""
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return None


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def dropped_at(reason: str, mask, where, fmt=str) -> list[tuple[str, str]]:
    """(fmt(where), reason) for each row ``mask`` marks (only those rows are formatted)."""
    return [(fmt(w), reason) for w in pd.Series(where)[np.asarray(mask, dtype=bool)]]


def dropped_lines(reason: str, mask, csv_path) -> list[tuple[str, str]]:
    """("<csv>:<line>", reason) for each row ``mask`` marks in a table read by ``read_csv_text`` from
    ``csv_path`` (a Series mask keeps that table's index: file line - 2)."""
    index = mask.index if isinstance(mask, pd.Series) else pd.RangeIndex(len(mask))
    return [(f"{csv_path}:{i + 2}", reason) for i in index[np.asarray(mask, dtype=bool)]]


def finish(records: pd.DataFrame, drops: list[tuple[str, str]], name: str, root,
           mapped: Counter | None = None) -> ReadResult:
    """Standard column order and dtypes, a fresh 0..N-1 index, and the ReadResult around it.

    ``drops``: (path or line ref, reason) for every dropped row; the counts are made from it, so
    the two always agree.
    """
    records = records.reset_index(drop=True)
    records["path"] = path_column(str(path) for path in records["path"])
    records["age"] = pd.to_numeric(records["age"], errors="coerce").astype(np.float64)
    records["group"] = records["group"].astype(np.int64)
    records["subject"] = records["subject"].astype(str)
    if "gender" in records:
        records["gender"] = records["gender"].astype(object).where(records["gender"].isin(["m", "f"]), np.nan)
    others = [c for c in records.columns if c not in BASE_COLUMNS]
    records = records[BASE_COLUMNS + others]
    dropped = Counter(reason for _, reason in drops)
    mapped = Counter({k: int(v) for k, v in (mapped or {}).items() if v})
    return ReadResult(records=records, dropped=dropped, mapped=mapped, name=name, root=printable(str(root)),
                      drops=pd.DataFrame([(printable(where), reason) for where, reason in drops], columns=DROP_COLUMNS))

