"""The generic labels.csv reader (private data)."""

from __future__ import annotations

import math

import pytest

from agelab.data.readers import read_table
from agelab.errors import DataError


def test_rules_and_counts(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg", "g.jpg", "h.jpg"):
        (tmp_path / "img" / name).write_bytes(b"")
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"")
    (tmp_path / "labels.csv").write_text(
        "path,age,subject,group,gender,camera\n"
        "img/a.jpg,23,anna,,F,phone\n"
        "img/b.jpg,,bob,6,male,dslr\n"        # group only
        "img/c.jpg,-3,carl,,m,\n"             # bad_age: negative
        "img/d.jpg,121,dora,,f,\n"            # bad_age: above 120
        "img/e.jpg,old,eve,,f,\n"             # bad_age: not a number
        "img/f.jpg,NaN,,,x,\n"                # bad_age: no age and no group
        "img/g.jpg,30,,9,,\n"                 # bad_group
        "img/a.jpg,24,anna,,f,\n"             # duplicate of the first row
        "img/zz.jpg,30,zed,,f,\n"             # missing_file
        f"{outside},70.5,,,,\n"               # absolute path; no subject -> its own
        "img/h.jpg,45,hal,5,,\n")             # the file's group wins
    result = read_table(tmp_path)
    assert result.dropped == {"bad_age": 4, "bad_group": 1, "duplicate": 1, "missing_file": 1}
    csv = tmp_path / "labels.csv"  # label problems are named by their line, a missing image by its path
    assert sorted(result.drops.itertuples(index=False, name=None)) == sorted([
        (f"{csv}:4", "bad_age"), (f"{csv}:5", "bad_age"), (f"{csv}:6", "bad_age"), (f"{csv}:7", "bad_age"),
        (f"{csv}:8", "bad_group"), (f"{csv}:9", "duplicate"), (str(tmp_path / "img" / "zz.jpg"), "missing_file")])
    records = result.records
    assert records["path"].tolist() == [str(tmp_path / "img" / "a.jpg"), str(tmp_path / "img" / "b.jpg"),
                                        str(outside), str(tmp_path / "img" / "h.jpg")]
    assert records["age"].tolist()[0] == 23 and math.isnan(records["age"].iloc[1])
    assert records["age"].tolist()[2:] == [70.5, 45]
    assert records["group"].tolist() == [4, 6, 7, 5]
    assert records["subject"].tolist() == ["anna", "bob", str(outside), "hal"]
    assert records["gender"].tolist()[:2] == ["f", "m"] and math.isnan(records["gender"].iloc[2])
    assert records["camera"].tolist()[:2] == ["phone", "dslr"]


def test_blank_lines_keep_the_line_numbers_of_dropped_rows(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "labels.csv").write_text("path,age\na.jpg,30\n\n  \nb.jpg,abc\n\n")
    result = read_table(tmp_path)
    assert result.drops.values.tolist() == [[f"{tmp_path / 'labels.csv'}:5", "bad_age"]]
    assert result.records["path"].tolist() == [str(tmp_path / "a.jpg")] and result.dropped == {"bad_age": 1}


def test_a_quoted_cell_over_two_lines_keeps_the_line_numbers_of_later_rows(tmp_path):
    (tmp_path / "a b.jpg").write_bytes(b"")
    (tmp_path / "labels.csv").write_text('path,age,subject\n"a b.jpg",30,"first\nsecond"\nc.jpg,40,s,EXTRA\n'
                                         'd.jpg,abc,s\n')
    result = read_table(tmp_path)
    csv_file = tmp_path / "labels.csv"
    assert result.drops.values.tolist() == [[f"{csv_file}:4", "bad_row"], [f"{csv_file}:5", "bad_age"]]
    assert result.records["subject"].tolist() == ["first\nsecond"]


def test_group_only_table_and_errors(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "faces.csv").write_text("path,group\na.jpg,3\n")
    result = read_table(tmp_path, file="faces.csv")
    assert result.records["group"].tolist() == [3] and result.records["age"].isna().all()
    with pytest.raises(DataError, match=r"expected label file labels\.csv in"):
        read_table(tmp_path)
    (tmp_path / "labels.csv").write_text("file,years\na.jpg,3\n")
    with pytest.raises(DataError, match="needs a 'path' column"):
        read_table(tmp_path)


def test_a_trailing_comma_on_every_row_keeps_the_paths(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "labels.csv").write_text("path,age,subject\na.jpg,30,anna,\nb.jpg,41,bob,\n")
    result = read_table(tmp_path)
    assert result.dropped == {}
    assert result.records["path"].tolist() == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert result.records["age"].tolist() == [30, 41] and result.records["subject"].tolist() == ["anna", "bob"]


def test_a_row_with_too_many_fields_is_dropped_and_the_rest_read(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "labels.csv").write_text(
        "path,age,subject\n"
        "a.jpg,30,anna\n"
        "b.jpg,41,Smith, Bob\n"     # bad_row: an unquoted comma
        "c.jpg,52,carl,\n"           # an empty field past the header: fine
        "\n"
        "d.jpg,63,dora,x,y\n"        # bad_row
        "a.jpg,abc,anna\n")          # bad_age, after the dropped rows: still named by its line
    result = read_table(tmp_path)
    csv = tmp_path / "labels.csv"
    assert result.dropped == {"bad_row": 2, "bad_age": 1}
    assert result.drops.values.tolist() == [[f"{csv}:3", "bad_row"], [f"{csv}:6", "bad_row"],
                                            [f"{csv}:7", "bad_age"]]
    assert result.records["path"].tolist() == [str(tmp_path / "a.jpg"), str(tmp_path / "c.jpg")]
    assert result.records["age"].tolist() == [30, 52]


def test_paths_written_with_windows_separators_find_their_images(tmp_path):
    (tmp_path / "faces" / "sub").mkdir(parents=True)
    (tmp_path / "faces" / "sub" / "a.jpg").write_bytes(b"")
    (tmp_path / "faces" / "odd\\name.jpg").write_bytes(b"")  # a backslash in a file name is kept as such
    (tmp_path / "labels.csv").write_text("path,age\nfaces\\sub\\a.jpg,30\nfaces/odd\\name.jpg,40\nfaces\\gone.jpg,50\n")
    result = read_table(tmp_path)
    assert result.records["path"].tolist() == [str(tmp_path / "faces" / "sub" / "a.jpg"),
                                               str(tmp_path / "faces" / "odd\\name.jpg")]
    assert result.drops.values.tolist() == [[str(tmp_path / "faces\\gone.jpg"), "missing_file"]]
