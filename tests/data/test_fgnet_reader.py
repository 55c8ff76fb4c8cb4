"""FG-NET: subject and age in the file name."""

from __future__ import annotations

import pytest

from agelab.data.readers import read_fgnet
from agelab.errors import DataError

NAMES = ["078A11.JPG", "001A02.JPG", "001A02a.JPG", "001A43b.jpg", "002A16.JPG", "README.JPG", "1A2.JPG"]


def write_fgnet(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (folder / name).write_bytes(b"")
    (folder / "001a02.pts").write_text("landmarks")  # not an image: ignored
    return folder


@pytest.mark.parametrize("sub", ["", "images"])
def test_parses_subjects_and_ages(tmp_path, sub):
    folder = write_fgnet(tmp_path / sub if sub else tmp_path)
    result = read_fgnet(tmp_path)
    assert result.dropped == {"bad_filename": 2}
    assert result.drops.values.tolist() == [[str(folder / "1A2.JPG"), "bad_filename"],
                                            [str(folder / "README.JPG"), "bad_filename"]]
    records = result.records
    assert records["subject"].tolist() == ["001", "001", "001", "002", "078"]
    assert records["age"].tolist() == [2, 2, 43, 16, 11]
    assert records["group"].tolist() == [0, 0, 5, 3, 2]
    assert records["path"].iloc[1] == str(folder / "001A02a.JPG")


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_fgnet(tmp_path / "FGNET")
    with pytest.raises(DataError, match="078A11.JPG"):
        read_fgnet(tmp_path)
