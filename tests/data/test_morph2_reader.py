"""MORPH II academic CSV with its album folders."""

from __future__ import annotations

import math

import pytest

from agelab.data.readers import read_morph2
from agelab.errors import DataError

HEADER = "id_num,picture_num,dob,doa,race,gender,facial_hair,age,age_diff,glasses,photo"
ROWS = [
    "070081,0,07/20/1976,10/28/1993,B,M,0,17,0,0,Album2/070081_00M17.JPG",
    "070081,2,07/20/1976,03/17/2012,B,M,1,36,19,0,Album2/070081_2M36.JPG",
    "104655,1,01/02/1950,05/05/2005,W,F,0,55,0,1,Album2/104655_1F55.JPG",
    "104656,1,01/02/1950,05/05/2005,W,F,0,abc,0,1,Album2/104656_1F55.JPG",   # bad_age
    "104657,1,01/02/1950,05/05/2005,W,F,0,55,0,1,",                          # bad_row: no photo
    "104658,1,01/02/1950,05/05/2005,H,F,0,41,0,1,Album2/104658_1F41.JPG",     # missing_file
    "104659,1,01/02/1950,05/05/2005,A,X,0,62,0,0,104659_1X62.JPG",            # file found by name in root
]


def write_morph2(root, csv_name="morph_2008_nonCommercial.csv"):
    (root / "Album2").mkdir()
    (root / csv_name).write_text("\n".join([HEADER, *ROWS]) + "\n")
    (root / "notes.csv").write_text("a,b\n1,2\n")  # a CSV that is not the label file
    for name in ("070081_00M17.JPG", "070081_2M36.JPG", "104655_1F55.JPG", "104656_1F55.JPG"):
        (root / "Album2" / name).write_bytes(b"")
    (root / "104659_1X62.JPG").write_bytes(b"")
    return root


def test_reads_rows_and_counts_drops(tmp_path):
    result = read_morph2(write_morph2(tmp_path))
    records = result.records
    assert result.dropped == {"bad_age": 1, "bad_row": 1, "missing_file": 1}
    csv = tmp_path / "morph_2008_nonCommercial.csv"  # rows 4 and 5 are its lines 5 and 6
    assert result.drops.values.tolist() == [[f"{csv}:6", "bad_row"], [f"{csv}:5", "bad_age"],
                                            [str(tmp_path / "Album2" / "104658_1F41.JPG"), "missing_file"]]
    assert records["age"].tolist() == [17, 36, 55, 62]
    assert records["group"].tolist() == [3, 5, 6, 7]
    assert records["subject"].tolist() == ["070081", "070081", "104655", "104659"]
    assert records["gender"].tolist()[:3] == ["m", "m", "f"] and math.isnan(records["gender"].iloc[3])
    assert records["race"].tolist() == ["B", "B", "W", "A"]
    assert records["path"].iloc[1] == str(tmp_path / "Album2" / "070081_2M36.JPG")
    assert records["path"].iloc[3] == str(tmp_path / "104659_1X62.JPG")
    assert records["doa"].iloc[1] == "03/17/2012" and records["age_diff"].iloc[1] == "19"


def test_named_csv_and_missing_label_file(tmp_path):
    write_morph2(tmp_path, csv_name="labels_v2.csv")
    assert len(read_morph2(tmp_path, csv_name="labels_v2.csv").records) == 4
    with pytest.raises(DataError, match=r"expected label file other\.csv in "):
        read_morph2(tmp_path, csv_name="other.csv")
    (tmp_path / "labels_v2.csv").unlink()
    with pytest.raises(DataError, match=r"notes\.csv lacks columns \['age', 'id_num', 'photo'\]"):
        read_morph2(tmp_path)
    (tmp_path / "notes.csv").unlink()
    with pytest.raises(DataError, match=r"columns \['age', 'id_num', 'photo'\] in .* \(no \.csv file found\)"):
        read_morph2(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_morph2(tmp_path / "nowhere")


def test_a_label_csv_without_photo_is_named_with_what_it_lacks(tmp_path):
    write_morph2(tmp_path)
    labels = tmp_path / "morph_2008_nonCommercial.csv"
    labels.write_text("\n".join(line.rsplit(",", 1)[0] for line in [HEADER, *ROWS]) + "\n")  # no photo column
    with pytest.raises(DataError) as error:
        read_morph2(tmp_path)
    message = str(error.value)
    assert f"{labels} lacks columns ['photo']" in message
    assert f"{tmp_path / 'notes.csv'} lacks columns ['age', 'id_num', 'photo']" in message
    assert "picture_num" not in message  # only the required columns are asked for


def test_a_trailing_comma_on_every_row_reads_as_without(tmp_path):
    write_morph2(tmp_path)
    csv = tmp_path / "morph_2008_nonCommercial.csv"
    csv.write_text(HEADER + "\n" + "".join(f"{line},\n" for line in ROWS))
    result = read_morph2(tmp_path)
    assert result.dropped == {"bad_age": 1, "bad_row": 1, "missing_file": 1}
    assert result.records["path"].iloc[1] == str(tmp_path / "Album2" / "070081_2M36.JPG")
    assert result.records["age"].tolist() == [17, 36, 55, 62]


def test_a_row_with_too_many_fields_is_a_bad_row(tmp_path):
    write_morph2(tmp_path)
    csv = tmp_path / "morph_2008_nonCommercial.csv"
    rows = [*ROWS]
    rows[1] = rows[1].replace(",B,M,", ",B,M,x,")  # 12 fields: every later column shifted
    csv.write_text("\n".join([HEADER, *rows]) + "\n")
    result = read_morph2(tmp_path)
    assert result.dropped == {"bad_age": 1, "bad_row": 2, "missing_file": 1}
    assert result.drops.values.tolist()[:2] == [[f"{csv}:3", "bad_row"], [f"{csv}:6", "bad_row"]]
    assert result.records["age"].tolist() == [17, 55, 62]
