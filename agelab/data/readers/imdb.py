"""IMDB-WIKI: ``imdb.mat`` / ``wiki.mat`` label structs plus, optionally, extra labelled folders.

Each .mat file holds a 1x1 struct (``imdb`` or ``wiki``) whose fields are 1xN arrays: ``dob``
(Matlab datenum), ``photo_taken`` (year), ``full_path`` (cell of str, relative to the image
folder), ``gender`` (0 f, 1 m, NaN), ``name``, ``face_location`` (cell of [x1 y1 x2 y2]),
``face_score`` (-Inf = no face), ``second_face_score`` (NaN = none), and for imdb ``celeb_id`` /
``celeb_names``.

The label file is looked for at ``<root>/imdb.mat``, then ``<root>/imdb_crop/imdb.mat`` (where the
crop tar unpacks it, beside ``NN/*.jpg``), then ``<root>/imdb/imdb.mat`` (the full-photo release);
likewise ``wiki``. Images: by default the face-crop release, ``<root>/imdb_crop/<full_path>`` (or
``wiki_crop``), or directly ``<root>/<full_path>`` when root is that folder itself. face_location is
given in the pixels of the original photo, so for crops it is kept only as
``location_x1..location_y2`` and the face is left to the detector. With ``full_images=True`` the
images are the original photos, ``<root>/imdb/<full_path>`` (or ``wiki``) or ``<root>/<full_path>``,
and face_location becomes the face box ``box_x1..box_y2``.

Age: the photo is taken as shot on 1 July of ``photo_taken``, so age = photo_taken - birth year,
minus one when the birthday falls after 1 July. The birth date comes from the datenum as
``datetime.fromordinal(int(dob)) + timedelta(days=dob % 1) - timedelta(days=366)`` (done in numpy).

Cleaning, each dropped row counted once under the first rule it fails, in this order:
``no_face_score`` (face_score -Inf or NaN: the release's detector found no face; named apart from the
cropper's ``no_face``), ``low_face_score`` (< min_face_score), ``second_face`` (a second face found,
unless allow_second_face), ``bad_dob`` (no usable birth date or photo year), ``age_out_of_range``
(outside min_age..max_age), ``missing_file``.

``subject`` is ``imdb:<celeb_id>`` for imdb and ``wiki:<name>`` for wiki (the image path where the
name is empty). ``source`` says which file a row came from.

``extra_dirs``: more faces (e.g. an Asian set) to merge in, each a CSV file or a folder holding
``labels.csv``, in the agelab.data.readers.table format (path, age[, subject, gender]); their rows
get ``source`` = the folder or file name and obey the same age range; their drop counts are added,
and they join the training split only (agelab.data.readers.table.read_extra_sets).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from agelab.data.names import printable
from agelab.data.readers.base import ReadResult, dropped_at, finish, groups_of, path_column, require_dir
from agelab.data.readers.table import EXTRA_SET, read_extra_sets
from agelab.errors import ConfigError, DataError

SOURCES = ("imdb", "wiki")
log = logging.getLogger(__name__)
# Matlab datenum of 1970-01-01; datenums outside [1 Jan year 1, 1 Jan 10000) are unusable.
_EPOCH_DATENUM = 719529
_MIN_DATENUM, _MAX_DATENUM = 367, 3652060


def datenum_to_date(dob) -> np.ndarray:
    """Matlab datenums -> numpy datetime64[D]; NaT where the datenum is not a usable date."""
    dob = np.asarray(dob, dtype=np.float64)
    ok = np.isfinite(dob) & (dob >= _MIN_DATENUM) & (dob < _MAX_DATENUM)
    days = np.where(ok, np.floor(np.where(ok, dob, _EPOCH_DATENUM)) - _EPOCH_DATENUM, 0).astype(np.int64)
    dates = np.datetime64("1970-01-01", "D") + days.astype("timedelta64[D]")
    return np.where(ok, dates, np.datetime64("NaT"))


def age_at_photo(dob, photo_taken) -> np.ndarray:
    """Age on 1 July of the photo year; NaN where the birth date or the year is unusable."""
    dates = datenum_to_date(dob)
    taken = np.asarray(photo_taken, dtype=np.float64)
    years, months = dates.astype("datetime64[Y]"), dates.astype("datetime64[M]")
    year = years.astype(np.int64) + 1970
    month = (months - years.astype("datetime64[M]")).astype(np.int64) + 1
    day = (dates - months.astype("datetime64[D]")).astype(np.int64) + 1
    after_july_first = (month > 7) | ((month == 7) & (day > 1))
    with np.errstate(invalid="ignore"):
        age = taken - year - after_july_first
    return np.where(np.isnat(dates) | ~np.isfinite(taken), np.nan, age)


def mat_places(root: Path, source: str) -> list[Path]:
    """Where ``<source>.mat`` may be: in root, in ``<source>_crop/`` (as the crop tar unpacks) or in ``<source>/``."""
    return [folder / f"{source}.mat" for folder in (root, root / f"{source}_crop", root / source)]


def find_mat(root: Path, source: str) -> Path:
    places = mat_places(root, source)
    found = next((path for path in places if path.is_file()), None)
    if found is None:
        raise DataError(f"imdb: expected label file {source}.mat in {', '.join(str(p.parent) for p in places)} "
                        "(not found)")
    return found


def present_sources(root: Path) -> list[str]:
    """The halves whose label file is in root (both, either or none): many download only WIKI's."""
    return [source for source in SOURCES if any(path.is_file() for path in mat_places(root, source))]


def _struct(mat_path: Path, key: str):
    try:
        mat = scipy.io.loadmat(mat_path)
    except NotImplementedError:  # scipy reads MATLAB v4 to v7.2 files only
        raise DataError(f"imdb: {mat_path} is a MATLAB v7.3 (HDF5) file; re-save it in MATLAB with "
                        "save(..., '-v7')") from None
    except Exception as exc:  # scipy raises several kinds for a broken file
        raise DataError(f"imdb: cannot read {mat_path}: {exc}") from None
    if key not in mat or mat[key].dtype.names is None:
        raise DataError(f"imdb: {mat_path} has no struct named '{key}'")
    return mat[key].reshape(-1)[0]


def _field(struct, name: str, mat_path: Path, required: bool = True):
    if name not in struct.dtype.names:
        if required:
            raise DataError(f"imdb: {mat_path} struct has no field '{name}'")
        return None
    return np.asarray(struct[name]).reshape(-1)


def _cell_str(cell) -> str:
    """A Matlab cell holding a string -> str ('' for an empty cell)."""
    while isinstance(cell, np.ndarray):
        if cell.size == 0:
            return ""
        cell = cell.reshape(-1)[0]
    return str(cell).strip()


def _boxes(cells, n: int) -> np.ndarray:
    boxes = np.full((n, 4), np.nan)
    if cells is None:
        return boxes
    for i, cell in enumerate(cells):
        values = np.asarray(cell, dtype=np.float64).reshape(-1)
        if values.size == 4:
            boxes[i] = values
    return boxes


def read_mat(root: Path, source: str, min_face_score: float, allow_second_face: bool, min_age: float,
             max_age: float, full_images: bool = False) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Records and drops (image path, reason) of one .mat file."""
    mat_path = find_mat(root, source)
    struct = _struct(mat_path, source)
    full_path = [_cell_str(c) for c in _field(struct, "full_path", mat_path)]
    n = len(full_path)
    numbers = {}
    for name in ("dob", "photo_taken", "face_score", "second_face_score", "gender"):
        values = _field(struct, name, mat_path, required=name in ("dob", "photo_taken", "face_score"))
        values = np.full(n, np.nan) if values is None else values.astype(np.float64)
        if len(values) != n:
            raise DataError(f"imdb: {mat_path} field '{name}' has {len(values)} entries, full_path has {n}")
        numbers[name] = values
    names_cells = _field(struct, "name", mat_path, required=False)
    names = [""] * n if names_cells is None else [_cell_str(c) for c in names_cells]
    celeb_id = _field(struct, "celeb_id", mat_path, required=False)
    boxes = _boxes(_field(struct, "face_location", mat_path, required=False), n)

    score, second = numbers["face_score"], numbers["second_face_score"]
    age = age_at_photo(numbers["dob"], numbers["photo_taken"])
    no_score = ~np.isfinite(score)
    low = ~no_score & (score < min_face_score)
    has_second = ~no_score & ~low & ~np.isnan(second) & (not allow_second_face)
    bad_dob = ~no_score & ~low & ~has_second & np.isnan(age)
    out_of_range = ~no_score & ~low & ~has_second & ~bad_dob & ((age < min_age) | (age > max_age))
    keep = ~(no_score | low | has_second | bad_dob | out_of_range)
    # The release's image folder (where its tar also unpacks the .mat), or root when it is that folder.
    bases = (os.path.join(str(root), source if full_images else f"{source}_crop"), str(root))

    def image(i: int) -> str:  # a drop is named by its image (by its .mat entry where it has no path)
        return os.path.join(bases[0], full_path[i]) if full_path[i] else f"{mat_path}[{i}]"

    rows = np.arange(n)
    drops = [d for reason, mask in (("no_face_score", no_score), ("low_face_score", low), ("second_face", has_second),
                                    ("bad_dob", bad_dob), ("age_out_of_range", out_of_range))
             for d in dropped_at(reason, mask, rows, image)]

    # Plain os.path on str: this loop runs over every kept face (~200k in the full release).
    paths = np.array([""] * n, dtype=object)
    for i in np.flatnonzero(keep):
        for base in bases if full_path[i] else ():
            candidate = os.path.join(base, full_path[i])
            if os.path.isfile(candidate):
                paths[i] = candidate
                break
    missing = keep & (paths == "")
    drops += dropped_at("missing_file", missing, rows, image)
    keep &= ~missing

    if source == "imdb" and celeb_id is not None and len(celeb_id) == n:
        subjects = [f"imdb:{int(c)}" if np.isfinite(c) else "" for c in celeb_id.astype(np.float64)]
    else:
        subjects = [f"{source}:{name}" if name else "" for name in names]
    subjects = [s or printable(p) for s, p in zip(subjects, paths)]
    gender = np.where(numbers["gender"] == 1, "m", np.where(numbers["gender"] == 0, "f", None))
    records = pd.DataFrame({
        "path": path_column(paths), "age": age, "group": groups_of(age), "subject": subjects, "gender": gender,
        "name": names, "face_score": score, "second_face_score": second,
        "location_x1": boxes[:, 0], "location_y1": boxes[:, 1], "location_x2": boxes[:, 2],
        "location_y2": boxes[:, 3], "source": source,
    })
    if full_images:
        for i, corner in enumerate(("x1", "y1", "x2", "y2")):
            records[f"box_{corner}"] = boxes[:, i]
    records = records[keep]
    return records, drops


def read_imdb(root, sources=None, min_face_score: float = 1.0, allow_second_face: bool = False,
              min_age: float = 0, max_age: float = 100, extra_dirs=(), full_images: bool = False) -> ReadResult:
    """``sources``: None for whichever of imdb.mat and wiki.mat root holds (said in the log), or a list
    of the halves to read, each then required."""
    if min_age > max_age:
        raise ConfigError(f"imdb min_age ({min_age}) is above max_age ({max_age})")
    root = require_dir(root, "imdb")
    if sources is None:
        sources = present_sources(root)
        if not (sources or extra_dirs):
            raise DataError(f"imdb: neither imdb.mat nor wiki.mat in {root} or its imdb_crop/, wiki_crop/, imdb/, "
                            "wiki/ folders")
        log.info("imdb: reading %s from %s", " and ".join(f"{s}.mat" for s in sources) or "no .mat", printable(root))
    sources = [sources] if isinstance(sources, str) else list(sources)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not (sources or extra_dirs):
        raise ConfigError(f"imdb sources must be null or a list from {list(SOURCES)}, got {sources!r}")
    parts, drops = [], []
    for source in sources:
        records, more = read_mat(root, source, min_face_score, allow_second_face, min_age, max_age, full_images)
        parts.append(records)
        drops += more
    extra = read_extra_sets(extra_dirs, "imdb")
    out_of_range = extra.records["age"].notna() & ~extra.records["age"].between(min_age, max_age)
    drops += [*extra.drops.itertuples(index=False, name=None), *dropped_at("age_out_of_range", out_of_range,
                                                                          extra.records["path"])]
    if len(extra.records):
        parts.append(extra.records[~out_of_range].assign(source=lambda r: r[EXTRA_SET]))
    records = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return finish(records, drops, "imdb", root)
