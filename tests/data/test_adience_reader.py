"""Adience fold files in their real tab-separated layout, with every kind of odd age label."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agelab.data.readers import READERS, read_adience
from agelab.errors import ConfigError, DataError

HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
          "fiducial_yaw_angle\tfiducial_score")

# (user_id, original_image, face_id, age, gender) per fold; geometry columns are filled in.
FOLD_0 = [
    ("30601258@N03", "10399646885_67c7d20df9_o.jpg", "1", "(25, 32)", "f"),
    ("30601258@N03", "10424815813_e94629b1ec_o.jpg", "2", "(8, 12)", "m"),
    ("30601258@N03", "10437979845_5985be4b26_o.jpg", "1", "(60, 100)", "u"),
    ("30601258@N03", "10437979845_5985be4b27_o.jpg", "3", "None", "f"),
    ("7153718@N04", "11598838386_349a0d4849_o.jpg", "10", "35", "m"),
    ("7153718@N04", "11598166203_c70bb34c80_o.jpg", "11", "(27, 32)", "f"),
    ("7153718@N04", "11598145163_ab19c3e3b8_o.jpg", "12", "(38, 42)", ""),
    ("7153718@N04", "11597919044_cf0bd6d9bf_o.jpg", "13", "(0, 2)", "m"),
]
FOLD_1 = [
    ("10044155@N06", "8621431457_6ba0e13c53_o.jpg", "20", "(38, 48)", "m"),
    ("10044155@N06", "8621431458_6ba0e13c53_o.jpg", "21", "(8, 23)", "f"),
    ("10044155@N06", "8621431459_6ba0e13c53_o.jpg", "22", "(25, 23)", "f"),
    ("10044155@N06", "8621431460_6ba0e13c53_o.jpg", "23", "3", "m"),
    ("10044155@N06", "8621431461_6ba0e13c53_o.jpg", "24", "(48, 53)", "f"),
    ("10044155@N06", "8621431462_6ba0e13c53_o.jpg", "25", "(4, 6)", "m"),
    ("10044155@N06", "8621431463_6ba0e13c53_o.jpg", "26", "forty", "m"),       # unreadable label
    ("10044155@N06", "8621431464_6ba0e13c53_o.jpg", "27", "(15, 20)", "m"),    # image left out on disk
    ("114841417@N06", "12068804204_085d553238_o.jpg", "30", "(38, 43)", "f"),  # in the faces/ layout
]


def write_adience(root: Path, frontal: bool = False) -> Path:
    name = "fold_frontal_{}_data.txt" if frontal else "fold_{}_data.txt"
    folds = [FOLD_0, FOLD_1, [], [], []]
    for k, rows in enumerate(folds):
        lines = [HEADER] + ["\t".join([*row, "0", "414", "1086", "1383", "-115", "30", "17"]) for row in rows]
        if k == 1:
            lines.append("10044155@N06\tbroken_line_without_fields.jpg")  # too few fields
            lines.append("")  # the real files end with blank lines
        (root / name.format(k)).write_text("\n".join(lines) + "\n")
    for rows in folds:
        for user, image, face, _, _ in rows:
            if image == "8621431464_6ba0e13c53_o.jpg":
                continue
            if user == "114841417@N06":
                path = root / "faces" / user / f"coarse_tilt_aligned_face.{face}.{image}"
            else:
                path = root / "aligned" / user / f"landmark_aligned_face.{face}.{image}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    return root


@pytest.fixture
def adience(tmp_path):
    return write_adience(tmp_path)


def by_image(result):
    return {Path(p).name.split(".", 2)[2]: row for p, row in zip(result.records["path"], result.records.itertuples())}


def test_default_rules_map_or_drop_every_odd_label(adience):
    result = read_adience(adience)
    assert result.dropped == {"age_none": 1, "bad_age": 1, "missing_file": 1, "bad_row": 1}
    fold_1 = adience / "fold_1_data.txt"  # labels by their line, a missing image by its path
    assert result.drops.values.tolist() == [
        [f"{adience / 'fold_0_data.txt'}:5", "age_none"], [f"{fold_1}:8", "bad_age"],
        [str(adience / "aligned/10044155@N06/landmark_aligned_face.27.8621431464_6ba0e13c53_o.jpg"), "missing_file"],
        [f"{fold_1}:11", "bad_row"]]
    assert result.mapped == {"canonical_tuple": 7, "odd_tuple": 5, "bare_int": 2}
    assert len(result.records) == 14
    rows = by_image(result)
    expected_group = {
        "10399646885_67c7d20df9_o.jpg": 4,   # (25, 32)
        "10424815813_e94629b1ec_o.jpg": 2,   # (8, 12) is 8-13
        "10437979845_5985be4b26_o.jpg": 7,   # (60, 100)
        "11598838386_349a0d4849_o.jpg": 5,   # 35: halfway between 25-32 and 38-43, ties go older
        "11598166203_c70bb34c80_o.jpg": 4,   # (27, 32): midpoint 29.5
        "11598145163_ab19c3e3b8_o.jpg": 5,   # (38, 42): midpoint 40
        "11597919044_cf0bd6d9bf_o.jpg": 0,
        "8621431457_6ba0e13c53_o.jpg": 5,    # (38, 48): midpoint 43
        "8621431458_6ba0e13c53_o.jpg": 3,    # (8, 23): midpoint 15.5
        "8621431459_6ba0e13c53_o.jpg": 4,    # (25, 23): midpoint 24
        "8621431460_6ba0e13c53_o.jpg": 1,    # 3 -> 4-6 (ties go older)
        "8621431461_6ba0e13c53_o.jpg": 6,
        "8621431462_6ba0e13c53_o.jpg": 1,
        "12068804204_085d553238_o.jpg": 5,
    }
    assert {name: row.group for name, row in rows.items()} == expected_group
    # Tuples give only a group; bare integers keep their age.
    assert rows["11598838386_349a0d4849_o.jpg"].age == 35.0
    assert rows["8621431460_6ba0e13c53_o.jpg"].age == 3.0
    assert math.isnan(rows["10399646885_67c7d20df9_o.jpg"].age)
    assert rows["11598166203_c70bb34c80_o.jpg"].age_label == "(27, 32)"


def test_columns_fold_gender_subject_and_paths(adience):
    records = read_adience(adience).records
    assert list(records.columns[:4]) == ["path", "age", "group", "subject"]
    assert records["fold"].tolist() == [0] * 7 + [1] * 7
    rows = by_image(read_adience(adience))
    assert rows["10399646885_67c7d20df9_o.jpg"].gender == "f"
    assert rows["11598838386_349a0d4849_o.jpg"].gender == "m"
    assert isinstance(rows["10437979845_5985be4b26_o.jpg"].gender, float)  # 'u' -> NaN
    assert isinstance(rows["11598145163_ab19c3e3b8_o.jpg"].gender, float)  # empty -> NaN
    assert rows["12068804204_085d553238_o.jpg"].path == str(
        adience / "faces" / "114841417@N06" / "coarse_tilt_aligned_face.30.12068804204_085d553238_o.jpg")
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in records["path"])
    assert records["subject"].nunique() == 4
    assert records["x"].iloc[0] == 0 and records["dy"].iloc[0] == 1383 and records["fiducial_score"].iloc[0] == 17
    assert records.index.tolist() == list(range(14))


def test_drop_rules(adience):
    result = read_adience(adience, odd_ages="drop", bare_ints="drop")
    assert result.dropped == {"age_none": 1, "bad_age": 1, "missing_file": 1, "bad_row": 1,
                              "odd_tuple": 5, "bare_int": 2}
    assert result.mapped == {"canonical_tuple": 7}
    assert len(result.records) == 7
    assert result.records["age"].isna().all()
    counts = result.counts()
    assert counts["kept"] == 7 and counts["dropped"] == 11
    assert counts["dropped/odd_tuple"] == 5 and counts["mapped/canonical_tuple"] == 7


def test_fold_selection_and_frontal_files(tmp_path):
    root = write_adience(tmp_path, frontal=True)
    result = read_adience(root, frontal_only=True, folds=(1,))
    assert set(result.records["fold"]) == {1} and len(result.records) == 7
    with pytest.raises(DataError, match="fold_0_data.txt"):
        read_adience(root)  # only the frontal files exist


def test_report_lists_reasons_and_groups(adience):
    text = read_adience(adience).report()
    assert "kept 14 of 18 rows" in text
    for word in ("age_none", "missing_file", "odd_tuple", "bare_int", "25-32: 3", "38-43: 4", "60+: 1"):
        assert word in text


def test_missing_root_file_and_bad_options(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_adience(tmp_path / "nowhere")
    write_adience(tmp_path)
    (tmp_path / "fold_3_data.txt").unlink()
    with pytest.raises(DataError, match=r"fold_3_data\.txt") as info:
        read_adience(tmp_path)
    assert "\n" not in str(info.value)
    assert len(read_adience(tmp_path, folds=(0, 1)).records) == 14
    with pytest.raises(ConfigError, match="odd_ages"):
        read_adience(tmp_path, odd_ages="round")
    with pytest.raises(ConfigError, match="folds"):
        read_adience(tmp_path, folds=(5,))
    assert READERS["adience"] is read_adience
