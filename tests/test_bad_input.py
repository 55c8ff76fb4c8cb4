"""Bad input, tried systematically: 61 test cases (41 hand-made cases + 20 seeded CSV mutations).

- read_image: 13 kinds of broken, odd or awkwardly named files; each is read as RGB uint8 or
  refused with a reason ("unreadable" / "too_large"), never an exception.
- FaceCropper.crops: 4 odd arrays (gray, RGBA, tiny, all black), never an exception.
- prepare_cache: a mix of good and broken files; drops counted by reason.
- read_table: 9 label-file faults, each dropped under its exact reason and count, or a one-line
  DataError naming the file.
- every reader in READERS: a missing and an empty dataset folder (one-line DataError naming it, or
  an empty ReadResult).
- fuzz: 20 seeded mutations of a valid CSV; each gives a ReadResult whose kept + dropped equals the
  data rows, or a one-line DataError/ConfigError naming the file.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agelab.data.faces import FaceCropper
from agelab.data.images import read_image
from agelab.data.prepare_cache import prepare_cache
from agelab.data.readers import READERS, ReadResult, read_table
from agelab.errors import ConfigError, DataError

from test_faces import draw_face

# ------------------------------------------------------------------------------ image files


def _rgb(h=40, w=50, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _jpeg(path: Path) -> None:
    Image.fromarray(_rgb()).save(path, "JPEG", quality=90)


def make_truncated_jpeg(d: Path) -> Path:
    p = d / "truncated.jpg"
    _jpeg(p)
    p.write_bytes(p.read_bytes()[: 200])  # header survives, scan data cut
    return p


def make_corrupt_jpg(d: Path) -> Path:
    p = d / "corrupt.jpg"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return p


def make_zero_byte(d: Path) -> Path:
    p = d / "empty.jpg"
    p.write_bytes(b"")
    return p


def make_text_png(d: Path) -> Path:
    p = d / "notes.png"
    p.write_text("this is not an image\n" * 20)
    return p


def make_dir_jpg(d: Path) -> Path:
    p = d / "folder.jpg"
    p.mkdir()
    return p


def make_missing(d: Path) -> Path:
    return d / "nowhere.jpg"


def make_rgba_png(d: Path) -> Path:
    p = d / "alpha.png"
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :25, 3] = 255  # left half opaque red, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(p)
    return p


def make_cmyk_jpeg(d: Path) -> Path:
    p = d / "cmyk.jpg"
    Image.new("CMYK", (50, 40), (0, 0, 0, 0)).save(p, "JPEG")  # no ink: white
    return p


def make_gray_jpeg(d: Path) -> Path:
    p = d / "gray.jpg"
    Image.fromarray(np.full((40, 50), 128, np.uint8), "L").save(p, "JPEG")
    return p


def make_16bit_png(d: Path) -> Path:
    p = d / "deep.png"
    assert cv2.imwrite(str(p), np.full((40, 50, 3), 0x8000, np.uint16))
    return p


def make_huge_png(d: Path) -> Path:
    p = d / "huge.png"
    assert cv2.imwrite(str(p), np.zeros((12000, 12000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return p


def make_spaces_unicode(d: Path) -> Path:
    sub = d / "my photos ÄÖü 照片"
    sub.mkdir()
    p = sub / "José ñ 顔 01.jpg"
    _jpeg(p)
    return p


def make_unicode_png(d: Path) -> Path:
    p = d / "żółw café.png"
    Image.fromarray(_rgb()).save(p)
    return p


# name -> (maker, expected reason or None, expected shape or None, check on the pixels or None)
IMAGE_CASES = {
    "truncated_jpeg": (make_truncated_jpeg, "either", None, None),
    "corrupt_bytes_jpg": (make_corrupt_jpg, "unreadable", None, None),
    "zero_byte": (make_zero_byte, "unreadable", None, None),
    "text_named_png": (make_text_png, "unreadable", None, None),
    "directory_named_jpg": (make_dir_jpg, "unreadable", None, None),
    "missing_file": (make_missing, "unreadable", None, None),
    "png_with_alpha": (make_rgba_png, None, (40, 50, 3),
                       lambda im: (im[:, :25] == [200, 0, 0]).all() and (im[:, 25:] == 255).all()),
    "cmyk_jpeg": (make_cmyk_jpeg, None, (40, 50, 3), lambda im: im.min() >= 240),
    "grayscale_jpeg": (make_gray_jpeg, None, (40, 50, 3), lambda im: np.abs(im.astype(int) - 128).max() <= 2),
    "png_16bit": (make_16bit_png, None, (40, 50, 3), lambda im: (im == 128).all()),
    "huge_png_12000": (make_huge_png, "huge", None, None),
    "spaces_and_non_ascii_path": (make_spaces_unicode, None, (40, 50, 3), None),
    "non_ascii_png": (make_unicode_png, None, (40, 50, 3), lambda im: (im == _rgb()).all()),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_read_image_bad_files(tmp_path, case):
    maker, expected, shape, check = IMAGE_CASES[case]
    path = maker(tmp_path)
    image, reason = read_image(path)  # must never raise
    if expected == "either":  # a truncated JPEG may decode partially (grey fill) or be refused
        assert (image is None and reason == "unreadable") or (image is not None and reason is None)
    elif expected == "huge":  # refused, or read with the longer side bounded to max_side
        assert (image is None and reason == "too_large") or (image is not None and max(image.shape[:2]) <= 4000)
    elif expected is not None:
        assert image is None and reason == expected
    else:
        assert reason is None and image is not None
        assert image.dtype == np.uint8 and image.shape == shape
        assert check is None or check(image)
    if image is not None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


ODD_ARRAYS = {
    "gray_2d": np.full((64, 64), 100, np.uint8),
    "rgba": np.full((64, 64, 4), 100, np.uint8),
    "one_pixel": np.zeros((1, 1, 3), np.uint8),
    "all_black": np.zeros((120, 120, 3), np.uint8),
}


@pytest.mark.parametrize("name", sorted(ODD_ARRAYS))
def test_cropper_odd_arrays_find_no_face(name):
    try:
        faces, reason = FaceCropper().crops(ODD_ARRAYS[name])
    except (ValueError, DataError) as exc:  # a clear refusal of a malformed array is acceptable
        assert "\n" not in str(exc)
        return
    assert faces == [] and reason == "no_face"


def test_prepare_cache_counts_bad_files(tmp_path):
    good = []
    for i in range(3):
        p = tmp_path / f"good {i} é.jpg"
        Image.fromarray(draw_face(120, 80, seed=i)).save(p, "JPEG")
        good.append(p)
    bad = [make_corrupt_jpg(tmp_path), make_zero_byte(tmp_path), make_text_png(tmp_path), make_dir_jpg(tmp_path),
           make_missing(tmp_path), make_huge_png(tmp_path)]
    records = pd.DataFrame({"path": [str(p) for p in [*good, *bad]], "age": 30.0})
    result = prepare_cache(records, tmp_path / "cache", FaceCropper(output_size=32), workers=1,
                           progress=False)
    assert result.kept == 3
    assert list(result.records["source_index"]) == [0, 1, 2]
    assert result.images.shape == (3, 32, 32, 3)
    # the 12000² PNG is either refused as too_large or read downscaled (then kept)
    unreadable, too_large = result.dropped.get("unreadable", 0), result.dropped.get("too_large", 0)
    assert unreadable == 5 and too_large in (0, 1)
    assert sum(result.dropped.values()) == 5 + too_large


# ------------------------------------------------------------------------------ table reader

HEADER = "path,age,subject,gender\n"


def _table_root(tmp_path: Path, n_images: int = 4) -> Path:
    for i in range(n_images):
        Image.fromarray(_rgb(8, 8, seed=i)).save(tmp_path / f"img{i}.jpg", "JPEG")
    return tmp_path


def _rows(ages) -> str:
    return "".join(f"img{i}.jpg,{a},s{i},m\n" for i, a in enumerate(ages))


# name -> (CSV text, expected kept, expected drops) or (CSV text, DataError)
TABLE_CASES = {
    "missing_age_and_group_columns": ("path,subject\nimg0.jpg,s0\n", DataError),
    "missing_path_column": ("age,subject\n30,s0\n", DataError),
    "non_numeric_age": (HEADER + _rows([30, "thirty", 40, "4O"]), 2, {"bad_age": 2}),
    "nan_age_without_group": (HEADER + _rows([30, "NaN", "", 40]), 2, {"bad_age": 2}),
    "negative_age": (HEADER + _rows([-1, 30, -0.5, 40]), 2, {"bad_age": 2}),
    "absurd_age": (HEADER + _rows([121, 30, 999, 120]), 2, {"bad_age": 2}),
    "duplicate_rows": (HEADER + _rows([30, 40]) + _rows([30, 40]) + _rows([30]), 2, {"duplicate": 3}),
    "image_missing": (HEADER + _rows([30, 40]) + "gone.jpg,20,s9,f\nsub/also_gone.png,25,s8,f\n", 2,
                      {"missing_file": 2}),
    "empty_file": ("", DataError),
    "trailing_comma_on_every_row": (HEADER + _rows([30, 40, 50]).replace("\n", ",\n"), 3, {}),
    "too_many_fields": (HEADER + _rows([30, 40]) + "img2.jpg,50,s2,m,extra\n", 2, {"bad_row": 1}),
}


@pytest.mark.parametrize("case", sorted(TABLE_CASES))
def test_read_table_bad_rows(tmp_path, case):
    text, *expected = TABLE_CASES[case]
    root = _table_root(tmp_path)
    (root / "labels.csv").write_text(text)
    if expected[0] is DataError:
        with pytest.raises(DataError) as info:
            read_table(root)
        assert "labels.csv" in str(info.value) and "\n" not in str(info.value)
        return
    kept, drops = expected
    result = read_table(root)
    assert len(result.records) == kept
    assert dict(result.dropped) == drops
    assert result.records["age"].between(0, 120).all()


@pytest.mark.parametrize("state", ["missing", "empty"])
@pytest.mark.parametrize("name", sorted(READERS))
def test_readers_on_missing_or_empty_folder(tmp_path, name, state):
    root = tmp_path / f"{name}_root"
    if state == "empty":
        root.mkdir()
    try:
        result = READERS[name](root)
    except (DataError, ConfigError) as exc:
        assert f"{name}_root" in str(exc) and "\n" not in str(exc)
        return
    assert state == "empty", "a missing folder must raise DataError"
    assert isinstance(result, ReadResult) and len(result.records) == 0


# ------------------------------------------------------------------------------ fuzz

N_MUTATIONS = 20


def _mutate(lines: list[str], rng: random.Random) -> list[str]:
    kind = rng.choice(["delete_column", "blank_cell", "garbage_cell", "duplicate_line", "truncate", "extra_cells"])
    rows = [line.split(",") for line in lines]
    if kind == "delete_column":
        col = rng.randrange(len(rows[0]))
        rows = [r[:col] + r[col + 1:] for r in rows]
    elif kind in ("blank_cell", "garbage_cell"):
        r, c = rng.randrange(1, len(rows)), rng.randrange(len(rows[0]))
        rows[r][c] = "" if kind == "blank_cell" else rng.choice(["x!", "-7", "1e9", "nan", "\"", "é", "  ", "12.5.3"])
    elif kind == "duplicate_line":
        rows.insert(rng.randrange(1, len(rows) + 1), list(rows[rng.randrange(1, len(rows))]))
    elif kind == "extra_cells":
        rows[rng.randrange(1, len(rows))].append("surplus")
    out = [",".join(r) for r in rows]
    if kind == "truncate":
        text = "\n".join(out)
        return text[: rng.randrange(len(text))].split("\n")
    return out


@pytest.mark.parametrize("seed", range(N_MUTATIONS))
def test_read_table_fuzz(tmp_path, seed):
    rng = random.Random(seed)
    root = _table_root(tmp_path, n_images=6)
    lines = (HEADER + _rows([5, 17, 30, 45, 61, 80])).strip().split("\n")
    for _ in range(rng.randint(1, 3)):
        lines = _mutate(lines, rng)
    text = "\n".join(lines) + "\n"
    (root / "labels.csv").write_text(text)
    try:
        result = read_table(root)
    except (DataError, ConfigError) as exc:
        assert "labels.csv" in str(exc) and "\n" not in str(exc)
        return
    # Every data row, those longer than the header too (read_table drops them as bad_row).
    width = len(next(csv.reader(io.StringIO(text))))
    data_rows = len(pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False, usecols=range(width)))
    assert isinstance(result, ReadResult)
    assert len(result.records) + sum(result.dropped.values()) == data_rows
