"""APPA-REAL: three gt_avg CSVs, real and apparent ages, full images or _face.jpg crops."""

from __future__ import annotations

import pytest

from agelab.data.readers import read_appa
from agelab.errors import ConfigError, DataError

HEADER = "file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age"
FILES = {
    "train": ["000000.jpg,36,5.0,1.146423008,4", "000001.jpg,63,20.079365079,4.096,18",
              "000002.jpg,38,76.815789474,6.133,80"],
    "valid": ["004113.jpg,38,26.684210526,3.2,28", "004114.jpg,30,40.1,5.0,"],   # second: no real age
    "test": ["005613.jpg,38,61.5,5.5,59", "005614.jpg,40,31.0,3.0,33"],           # second: no image at all
}


def write_appa(root):
    for split, rows in FILES.items():
        (root / f"gt_avg_{split}.csv").write_text("\n".join([HEADER, *rows]) + "\n")
        (root / split).mkdir()
        for row in rows:
            name = row.split(",")[0]
            if name == "005614.jpg":
                continue
            if name != "000001.jpg":  # this one only as the aligned crop
                (root / split / name).write_bytes(b"")
            (root / split / f"{name}_face.jpg").write_bytes(b"")
    return root


def test_real_target_splits_and_columns(tmp_path):
    result = read_appa(write_appa(tmp_path))
    records = result.records
    assert result.dropped == {"bad_age": 1, "missing_file": 1}
    assert result.drops.values.tolist() == [[f"{tmp_path / 'gt_avg_valid.csv'}:3", "bad_age"],
                                            [str(tmp_path / "test" / "005614.jpg"), "missing_file"]]
    assert records["split"].tolist() == ["train", "train", "train", "val", "test"]
    assert records["age"].tolist() == [4, 18, 80, 28, 59]
    assert records["group"].tolist() == [1, 3, 7, 4, 7]
    assert records["apparent_age"].iloc[2] == pytest.approx(76.815789474)
    assert records["apparent_std"].iloc[0] == pytest.approx(1.146423008)
    assert records["path"].iloc[0] == str(tmp_path / "train" / "000000.jpg")
    assert records["path"].iloc[1] == str(tmp_path / "train" / "000001.jpg_face.jpg")  # fallback to the crop
    assert records["subject"].nunique() == 5


def test_apparent_target_and_face_crops(tmp_path):
    result = read_appa(write_appa(tmp_path), target="apparent", face_crops=True)
    records = result.records
    assert result.dropped == {"missing_file": 1}
    assert records["age"].tolist() == pytest.approx([5.0, 20.079365079, 76.815789474, 26.684210526, 40.1, 61.5])
    assert records["path"].str.endswith("_face.jpg").all()
    assert records["real_age"].isna().sum() == 1


def test_missing_files_and_bad_target(tmp_path):
    write_appa(tmp_path)
    (tmp_path / "gt_avg_valid.csv").unlink()
    with pytest.raises(DataError, match=r"gt_avg_valid\.csv"):
        read_appa(tmp_path)
    assert set(read_appa(tmp_path, splits=("train", "test")).records["split"]) == {"train", "test"}
    with pytest.raises(ConfigError, match="target"):
        read_appa(tmp_path, target="mean")


def test_broken_rows_are_bad_rows_and_a_trailing_comma_is_fine(tmp_path):
    write_appa(tmp_path)
    train = tmp_path / "gt_avg_train.csv"
    train.write_text(HEADER + "\n" + "".join(f"{row},\n" for row in FILES["train"]))
    valid = tmp_path / "gt_avg_valid.csv"
    valid.write_text("\n".join([HEADER, FILES["valid"][0], "004114.jpg,30",    # cut short: no age columns
                                 "004115.jpg,30,40.1,5.0,41,7"]) + "\n")    # one field too many
    result = read_appa(tmp_path)
    assert result.dropped == {"bad_row": 2, "missing_file": 1}
    assert result.drops.values.tolist()[:2] == [[f"{valid}:4", "bad_row"], [f"{valid}:3", "bad_row"]]
    assert result.records["split"].tolist() == ["train", "train", "train", "val", "test"]
    assert result.records["age"].tolist() == [4, 18, 80, 28, 59]
