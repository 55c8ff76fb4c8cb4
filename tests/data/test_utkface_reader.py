"""UTKFace labels parsed from file names, including the released names that miss a field."""

from __future__ import annotations

import pytest

from agelab.data.readers import read_utkface
from agelab.errors import DataError

GOOD = {
    "UTKFace/1_0_0_20161219140623097.jpg.chip.jpg": (1, "m", "White"),
    "UTKFace/26_1_2_20170116174525125.jpg.chip.jpg": (26, "f", "Asian"),
    "UTKFace/100_0_4_20170112213500903.jpg.chip.jpg": (100, "m", "Others"),
    "part1/45_1_3_20170109142408075.jpg": (45, "f", "Indian"),
    "part1/26_1_2_20170116174525125.jpg": (26, "f", "Asian"),  # in-the-wild copy of an aligned face
}
BAD = [
    "UTKFace/39_1_20170116174525125.jpg.chip.jpg",     # race missing (real file)
    "UTKFace/61_3_20170109150557335.jpg.chip.jpg",     # race missing, '3' read as the gender
    "UTKFace/x_0_1_20170109150557335.jpg.chip.jpg",    # age not a number
    "UTKFace/30_2_1_20170109150557335.jpg.chip.jpg",   # gender out of range
    "UTKFace/30_0_7_20170109150557335.jpg.chip.jpg",   # race out of range
]


def test_parses_names_and_counts_bad_ones(tmp_path):
    for name in [*GOOD, *BAD]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "UTKFace" / "landmarks.txt").write_text("not an image")
    result = read_utkface(tmp_path)
    assert result.dropped == {"bad_filename": 5}
    records = result.records.set_index("path")
    assert len(records) == 5
    for name, (age, gender, race) in GOOD.items():
        row = records.loc[str(tmp_path / name)]
        assert (row["age"], row["gender"], row["race"]) == (age, gender, race)
    assert sorted(records["group"]) == [0, 4, 4, 5, 7]
    # The two copies of one photo share a subject, so a subject split keeps them together.
    assert records["subject"].nunique() == 4
    assert "bad_filename" in result.report()


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_utkface(tmp_path / "UTKFace")
    with pytest.raises(DataError, match="age_gender_race"):
        read_utkface(tmp_path)
