"""IMDB-WIKI label structs written with scipy.io.savemat in the released layout (1x1 struct of 1xN fields)."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hydra.utils import instantiate
from omegaconf import OmegaConf

from agelab.data.readers import read_imdb
from agelab.data.readers.imdb import age_at_photo, datenum_to_date
from agelab.errors import ConfigError, DataError

from conftest import compose_config

NAN, INF = float("nan"), float("inf")


def datenum(day: date, fraction: float = 0.0) -> float:
    """Matlab datenum of a date (datenum 1 is 0000-01-01)."""
    return day.toordinal() + 366 + fraction


def cell(items) -> np.ndarray:
    """A 1xN Matlab cell array."""
    out = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        out[0, i] = item
    return out


def write_mat(path: Path, key: str, rows: list[dict], celeb: bool):
    fields = {
        "dob": np.array([[r["dob"] for r in rows]], dtype=np.float64),
        "photo_taken": np.array([[r["taken"] for r in rows]], dtype=np.uint16),
        "full_path": cell([r["path"] for r in rows]),
        "gender": np.array([[r.get("gender", NAN) for r in rows]]),
        "name": cell([r.get("name", "") for r in rows]),
        "face_location": cell([np.array([r.get("box", [1, 1, 1, 1])], dtype=np.float64) for r in rows]),
        "face_score": np.array([[r.get("score", 3.0) for r in rows]]),
        "second_face_score": np.array([[r.get("second", NAN) for r in rows]]),
    }
    if celeb:
        fields["celeb_names"] = cell(["Fred Astaire", "Lauren Bacall"])
        fields["celeb_id"] = np.array([[r.get("celeb", 1) for r in rows]], dtype=np.uint16)
    scipy.io.savemat(path, {key: fields})


IMDB_ROWS = [
    dict(path="01/nm0000001_rm1_1980-3-15_2010.jpg", dob=datenum(date(1980, 3, 15)), taken=2010, gender=1,
         name="Fred Astaire", box=[10.5, 20.0, 110.5, 140.0], score=4.2, celeb=1),         # 30
    dict(path="01/nm0000001_rm2_1980-9-1_2010.jpg", dob=datenum(date(1980, 9, 1)), taken=2010, gender=1,
         name="Fred Astaire", celeb=1),                                                   # 29: birthday after 1 July
    dict(path="02/nm0000002_rm3_1975-7-1_2000.jpg", dob=datenum(date(1975, 7, 1), 0.75), taken=2000, gender=0,
         name="Lauren Bacall", celeb=2),                                                  # 25: born on 1 July
    dict(path="02/nm0000002_rm4.jpg", dob=datenum(date(1975, 7, 1)), taken=2000, score=-INF, celeb=2),  # no_face_score
    dict(path="02/nm0000002_rm5.jpg", dob=datenum(date(1975, 7, 1)), taken=2000, score=0.5, celeb=2),   # low score
    dict(path="02/nm0000002_rm6.jpg", dob=datenum(date(1975, 7, 1)), taken=2000, second=2.5, celeb=2),  # second face
    dict(path="02/nm0000002_rm7.jpg", dob=100.0, taken=2000, celeb=2),                                  # bad_dob
    dict(path="02/nm0000002_rm8.jpg", dob=datenum(date(1890, 1, 1)), taken=2010, celeb=2),             # 120
    dict(path="02/nm0000002_rm9.jpg", dob=datenum(date(1990, 1, 1)), taken=1985, celeb=2),             # -5
    dict(path="03/nm0000003_missing.jpg", dob=datenum(date(1960, 1, 1)), taken=2000, celeb=2),         # no file
    dict(path="nm0000002_rm10.jpg", dob=datenum(date(1950, 12, 31)), taken=2001, celeb=2),             # 50, in root
]
WIKI_ROWS = [
    dict(path="17/10000217_1981-05-05_2009.jpg", dob=datenum(date(1981, 5, 5)), taken=2009, gender=0,
         name="Alice Example"),                                                           # 28
    dict(path="48/10000548_1925-04-04_1964.jpg", dob=datenum(date(1925, 4, 4)), taken=1964, gender=1),  # 39, no name
    dict(path="12/100012_1948-07-03_2008.jpg", dob=datenum(date(1948, 7, 3)), taken=2008, score=-INF),  # no_face_score
]


def write_imdb_wiki(root: Path) -> Path:
    write_mat(root / "imdb.mat", "imdb", IMDB_ROWS, celeb=True)
    write_mat(root / "wiki.mat", "wiki", WIKI_ROWS, celeb=False)
    for row in IMDB_ROWS[:-2] + WIKI_ROWS:
        crop = "imdb_crop" if row in IMDB_ROWS else "wiki_crop"
        (root / crop / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        (root / crop / row["path"]).write_bytes(b"")
    (root / IMDB_ROWS[-1]["path"]).write_bytes(b"")  # the last imdb face lies directly under root
    return root


@pytest.fixture
def imdb_root(tmp_path):
    return write_imdb_wiki(tmp_path)


def test_fixture_has_the_released_layout(imdb_root):
    struct = scipy.io.loadmat(imdb_root / "imdb.mat")["imdb"]
    assert struct.shape == (1, 1)
    fields = struct[0, 0]
    assert fields["dob"].shape == (1, len(IMDB_ROWS))
    assert fields["full_path"].dtype == object and fields["full_path"][0, 0][0] == IMDB_ROWS[0]["path"]
    assert fields["face_location"][0, 0].shape == (1, 4)


def test_datenum_conversion_matches_the_standard_formula():
    values = [723671.0, 711600.5, 726000.99, 367.0, 700000.25, 738000.0]
    expected = [(datetime.fromordinal(int(d)) + timedelta(days=d % 1) - timedelta(days=366)).date() for d in values]
    assert [np.datetime64(d, "D") for d in expected] == list(datenum_to_date(values))
    assert np.isnat(datenum_to_date([NAN, 100.0, 0.0])).all()
    np.testing.assert_array_equal(
        age_at_photo([datenum(date(2000, 7, 1)), datenum(date(2000, 7, 2)), datenum(date(2000, 1, 1)), NAN],
                     [2010, 2010, 2010, 2010]),
        [10, 9, 10, NAN])


def test_cleaning_rules_and_ages(imdb_root):
    result = read_imdb(imdb_root)
    assert result.dropped == {"no_face_score": 2, "low_face_score": 1, "second_face": 1, "bad_dob": 1,
                              "age_out_of_range": 2, "missing_file": 1}
    crop = imdb_root / "imdb_crop"  # each drop named by its image
    assert result.drops.values.tolist() == [
        [str(crop / "02/nm0000002_rm4.jpg"), "no_face_score"], [str(crop / "02/nm0000002_rm5.jpg"), "low_face_score"],
        [str(crop / "02/nm0000002_rm6.jpg"), "second_face"], [str(crop / "02/nm0000002_rm7.jpg"), "bad_dob"],
        [str(crop / "02/nm0000002_rm8.jpg"), "age_out_of_range"],
        [str(crop / "02/nm0000002_rm9.jpg"), "age_out_of_range"],
        [str(crop / "03/nm0000003_missing.jpg"), "missing_file"],
        [str(imdb_root / "wiki_crop" / WIKI_ROWS[2]["path"]), "no_face_score"]]
    records = result.records
    assert records["age"].tolist() == [30, 29, 25, 50, 28, 39]
    assert records["group"].tolist() == [4, 4, 4, 6, 4, 5]
    assert records["source"].tolist() == ["imdb"] * 4 + ["wiki"] * 2
    assert records["subject"].tolist()[:5] == ["imdb:1", "imdb:1", "imdb:2", "imdb:2", "wiki:Alice Example"]
    assert records["subject"].iloc[5] == records["path"].iloc[5]  # no name: its own subject
    assert records["gender"].tolist()[:3] == ["m", "m", "f"] and records["gender"].iloc[4] == "f"
    assert math.isnan(records["gender"].iloc[3])
    # Crops: face_location is in the original photo's pixels, so it is no face box here.
    assert records.loc[0, ["location_x1", "location_y1", "location_x2", "location_y2"]].tolist() == [
        10.5, 20.0, 110.5, 140.0]
    assert "box_x1" not in records
    assert records.loc[0, "face_score"] == 4.2
    assert records["path"].iloc[0] == str(imdb_root / "imdb_crop" / IMDB_ROWS[0]["path"])
    assert records["path"].iloc[3] == str(imdb_root / IMDB_ROWS[-1]["path"])
    assert result.counts() == {"kept": 6, "dropped": 8, "dropped/age_out_of_range": 2, "dropped/bad_dob": 1,
                               "dropped/low_face_score": 1, "dropped/missing_file": 1, "dropped/no_face_score": 2,
                               "dropped/second_face": 1}


def test_full_images_give_face_boxes(tmp_path):
    write_mat(tmp_path / "imdb.mat", "imdb", IMDB_ROWS[:3], celeb=True)
    for row in IMDB_ROWS[:3]:
        (tmp_path / "imdb" / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "imdb" / row["path"]).write_bytes(b"")
    crops = read_imdb(tmp_path, sources=("imdb",))
    assert crops.dropped == {"missing_file": 3}  # no imdb_crop folder
    records = read_imdb(tmp_path, sources=("imdb",), full_images=True).records
    assert records["path"].iloc[0] == str(tmp_path / "imdb" / IMDB_ROWS[0]["path"])
    assert records.loc[0, ["box_x1", "box_y1", "box_x2", "box_y2"]].tolist() == [10.5, 20.0, 110.5, 140.0]
    assert records.loc[1, ["box_x1", "box_y2"]].tolist() == [1.0, 1.0]


def test_options(imdb_root):
    relaxed = read_imdb(imdb_root, sources=("imdb",), min_face_score=0.0, allow_second_face=True, max_age=120)
    assert relaxed.dropped == {"no_face_score": 1, "bad_dob": 1, "age_out_of_range": 1, "missing_file": 1}
    assert relaxed.records["age"].tolist() == [30, 29, 25, 25, 25, 120, 50]
    wiki = read_imdb(imdb_root, sources="wiki", min_age=30)
    assert wiki.records["age"].tolist() == [39] and wiki.dropped == {"no_face_score": 1, "age_out_of_range": 1}


def test_extra_dirs_are_appended(imdb_root, tmp_path_factory):
    extra = tmp_path_factory.mktemp("asian")
    (extra / "faces").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (extra / "faces" / name).write_bytes(b"")
    (extra / "labels.csv").write_text(
        "path,age,subject,gender\nfaces/a.jpg,23,p1,f\nfaces/b.jpg,130,p2,m\nfaces/c.jpg,101,p3,m\n"
        "faces/d.jpg,40,p4,f\n")
    other = tmp_path_factory.mktemp("other")
    (other / "x.jpg").write_bytes(b"")
    (other / "more.csv").write_text("path,age\nx.jpg,61\n")
    result = read_imdb(imdb_root, sources=("wiki",), extra_dirs=[str(extra), str(other / "more.csv")])
    records = result.records
    assert records["source"].tolist() == ["wiki", "wiki", extra.name, "more"]
    assert records["age"].tolist() == [28, 39, 23, 61]
    assert records["subject"].iloc[2] == "p1" and records["gender"].iloc[2] == "f"
    assert records["path"].iloc[2] == str(extra / "faces" / "a.jpg")
    assert result.dropped == {"no_face_score": 1, "bad_age": 1, "age_out_of_range": 1, "missing_file": 1}
    assert result.drops.values.tolist()[1:] == [  # the extra set's drops by line / path, after wiki's
        [f"{extra / 'labels.csv'}:3", "bad_age"], [str(extra / "faces" / "d.jpg"), "missing_file"],
        [str(extra / "faces" / "c.jpg"), "age_out_of_range"]]


def test_missing_files_and_bad_options(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_imdb(tmp_path / "nowhere")
    with pytest.raises(DataError, match=f"^imdb: neither imdb.mat nor wiki.mat in {tmp_path} "):
        read_imdb(tmp_path)
    write_mat(tmp_path / "wiki.mat", "wiki", WIKI_ROWS, celeb=False)
    with pytest.raises(DataError, match=r"imdb\.mat") as info:
        read_imdb(tmp_path, sources=["imdb", "wiki"])  # named: each must be there
    assert str(tmp_path) in str(info.value)
    with pytest.raises(DataError, match="labels.csv"):
        read_imdb(tmp_path, sources=("wiki",), extra_dirs=[str(tmp_path)])
    with pytest.raises(ConfigError, match="sources"):
        read_imdb(tmp_path, sources=("imdb", "flickr"))
    scipy.io.savemat(tmp_path / "imdb.mat", {"other": np.zeros((1, 3))})
    with pytest.raises(DataError, match="no struct named 'imdb'"):
        read_imdb(tmp_path, sources=("imdb",))


def write_crop_tars(root: Path) -> Path:
    """root as imdb_crop.tar and wiki_crop.tar unpack: <source>_crop/<source>.mat beside NN/*.jpg."""
    for source, rows in (("imdb", IMDB_ROWS), ("wiki", WIKI_ROWS)):
        crop = root / f"{source}_crop"
        crop.mkdir(parents=True)
        write_mat(crop / f"{source}.mat", source, rows, celeb=source == "imdb")
        for row in rows:
            if "missing" not in row["path"]:
                (crop / row["path"]).parent.mkdir(parents=True, exist_ok=True)
                (crop / row["path"]).write_bytes(b"")
    return root


def test_the_crop_tars_layout_is_read_from_the_folder_holding_both(tmp_path):
    root = write_crop_tars(tmp_path)
    result = read_imdb(root)
    assert result.dropped == {"no_face_score": 2, "low_face_score": 1, "second_face": 1, "bad_dob": 1,
                              "age_out_of_range": 2, "missing_file": 1}
    assert result.records["age"].tolist() == [30, 29, 25, 50, 28, 39]
    assert result.records["path"].tolist() == (
        [str(root / "imdb_crop" / IMDB_ROWS[i]["path"]) for i in (0, 1, 2, 10)]
        + [str(root / "wiki_crop" / WIKI_ROWS[i]["path"]) for i in (0, 1)])
    assert result.drops.values.tolist()[-2:] == [
        [str(root / "imdb_crop" / "03/nm0000003_missing.jpg"), "missing_file"],
        [str(root / "wiki_crop" / WIKI_ROWS[2]["path"]), "no_face_score"]]
    # data.root may also be one of the crop folders itself.
    assert len(read_imdb(root / "wiki_crop", sources="wiki").records) == 2


def test_either_half_alone_is_read_and_named(tmp_path, caplog):
    root = write_crop_tars(tmp_path / "both")
    shutil.rmtree(root / "imdb_crop")  # many download only the 1 GB WIKI half
    with caplog.at_level("INFO", logger="agelab.data.readers.imdb"):
        result = read_imdb(root)
    assert result.records["source"].unique().tolist() == ["wiki"] and len(result.records) == 2
    assert f"imdb: reading wiki.mat from {root}" in caplog.messages
    cfg = compose_config(tmp_path, ["data=imdb", f"data.root={root}"])
    assert instantiate(cfg.data.source.reader)().counts()["kept"] == 2


def test_the_configs_find_the_crop_tars_layout(tmp_path):
    root = write_crop_tars(tmp_path / "imdb-wiki")
    for overrides, reader in ((["data=imdb"], "reader"), (["data=imdb_morph2", "data.source.test_root=/nope"],
                                                          "train.reader")):
        cfg = compose_config(tmp_path, [*overrides, f"data.root={root}"])
        result = instantiate(OmegaConf.select(cfg.data.source, reader))()
        assert result.counts()["kept"] == 6 and result.counts()["dropped/no_face_score"] == 2


def test_the_full_photo_release_keeps_its_mat_in_its_folder(tmp_path):
    (tmp_path / "imdb").mkdir()
    write_mat(tmp_path / "imdb" / "imdb.mat", "imdb", IMDB_ROWS[:3], celeb=True)
    for row in IMDB_ROWS[:2]:
        (tmp_path / "imdb" / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "imdb" / row["path"]).write_bytes(b"")
    result = read_imdb(tmp_path, sources="imdb", full_images=True)
    assert result.records["path"].tolist() == [str(tmp_path / "imdb" / r["path"]) for r in IMDB_ROWS[:2]]
    assert result.drops.values.tolist() == [[str(tmp_path / "imdb" / IMDB_ROWS[2]["path"]), "missing_file"]]


def test_a_missing_mat_names_every_place_looked_at(tmp_path):
    (tmp_path / "imdb_crop" / "01").mkdir(parents=True)  # images but no imdb.mat
    with pytest.raises(DataError) as info:
        read_imdb(tmp_path, sources="imdb")
    assert str(info.value) == (f"imdb: expected label file imdb.mat in {tmp_path}, {tmp_path / 'imdb_crop'}, "
                               f"{tmp_path / 'imdb'} (not found)")


def test_a_v73_mat_is_refused_with_how_to_resave_it(tmp_path):
    # A MATLAB v7.3 file is HDF5 behind a 128-byte MATLAB header whose version is 0x0200.
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    (tmp_path / "imdb.mat").write_bytes(header.ljust(124, b" ") + b"\x00\x02IM" + b"\x89HDF\r\n\x1a\n" + bytes(512))
    with pytest.raises(DataError) as info:
        read_imdb(tmp_path, sources="imdb")
    assert str(info.value) == (f"imdb: {tmp_path / 'imdb.mat'} is a MATLAB v7.3 (HDF5) file; "
                               "re-save it in MATLAB with save(..., '-v7')")
