"""UTKFace labels parsed from file names, including the released names that miss a field, and the
download's layout: UTKFace/ chips, their crop_part1/ subset and the uncropped part1/..part3/ photos."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
from hydra.utils import instantiate
from PIL import Image

from agelab.data.readers import read_utkface
from agelab.errors import DataError

from conftest import compose_config
from test_faces import draw_face

GOOD = {
    "UTKFace/1_0_0_20161219140623097.jpg.chip.jpg": (1, "m", "White"),
    "UTKFace/26_1_2_20170116174525125.jpg.chip.jpg": (26, "f", "Asian"),
    "UTKFace/100_0_4_20170112213500903.jpg.chip.jpg": (100, "m", "Others"),
    "UTKFace/45_1_3_20170109142408075.jpg.chip.jpg": (45, "f", "Indian"),
}
BAD = [
    "UTKFace/39_1_20170116174525125.jpg.chip.jpg",     # race missing (real file)
    "UTKFace/61_3_20170109150557335.jpg.chip.jpg",     # race missing, '3' read as the gender
    "UTKFace/x_0_1_20170109150557335.jpg.chip.jpg",    # age not a number
    "UTKFace/30_2_1_20170109150557335.jpg.chip.jpg",   # gender out of range
    "UTKFace/30_0_7_20170109150557335.jpg.chip.jpg",   # race out of range
]
# The rest of the download: crop_part1/ repeats some UTKFace/ chips and has one of its own here;
# part1/..part3/ hold the uncropped photos (also one with a bad name).
DOWNLOAD = [
    "crop_part1/1_0_0_20161219140623097.jpg.chip.jpg",    # duplicate
    "crop_part1/26_1_2_20170116174525125.jpg.chip.jpg",   # duplicate
    "crop_part1/8_1_0_20170109201907286.jpg.chip.jpg",    # kept: no UTKFace/ copy here
    "part1/26_1_2_20170116174525125.jpg",                 # not_a_chip (its chip is kept)
    "part2/52_0_1_20170117161018159.jpg",                 # not_a_chip
    "part3/77_0_20170117161018159.jpg",                   # bad_filename
]


def touch(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_parses_names_and_counts_bad_ones(tmp_path):
    touch(tmp_path, [*GOOD, *BAD])
    (tmp_path / "UTKFace" / "landmarks.txt").write_text("not an image")
    result = read_utkface(tmp_path / "UTKFace")
    assert result.dropped == {"bad_filename": 5}
    records = result.records.set_index("path")
    assert len(records) == 4
    for name, (age, gender, race) in GOOD.items():
        row = records.loc[str(tmp_path / name)]
        assert (row["age"], row["gender"], row["race"]) == (age, gender, race)
    assert sorted(records["group"]) == [0, 4, 5, 7]
    assert records["subject"].nunique() == 4
    assert "bad_filename" in result.report()


def test_the_download_keeps_one_chip_per_photo(tmp_path):
    touch(tmp_path, [*GOOD, *BAD, *DOWNLOAD])
    result = read_utkface(tmp_path)
    assert result.dropped == {"bad_filename": 6, "duplicate": 2, "not_a_chip": 2}
    assert sorted(result.records["path"]) == sorted(str(tmp_path / n) for n in [*GOOD, DOWNLOAD[2]])
    assert result.records["subject"].is_unique  # no photo on both sides of a split
    named = result.drops[result.drops["reason"] != "bad_filename"].values.tolist()
    assert named == [[str(tmp_path / DOWNLOAD[0]), "duplicate"], [str(tmp_path / DOWNLOAD[1]), "duplicate"],
                     [str(tmp_path / DOWNLOAD[3]), "not_a_chip"], [str(tmp_path / DOWNLOAD[4]), "not_a_chip"]]


def test_in_the_wild_photos_alone_are_read_as_they_are(tmp_path):
    touch(tmp_path, DOWNLOAD[3:])
    result = read_utkface(tmp_path)
    assert result.dropped == {"bad_filename": 1}
    assert result.records["path"].tolist() == [str(tmp_path / DOWNLOAD[3]), str(tmp_path / DOWNLOAD[4])]


def test_layout_drops_reach_the_counts_dropped_csv_and_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    from agelab.data.report import data_metrics
    from agelab.prepare import prepare

    root = tmp_path / "utkface-download"
    names = [*GOOD, *DOWNLOAD[:5]]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(draw_face(64, 44, seed=i)).save(root / name, "JPEG")
    overrides = ["data=utkface", f"data.root={root}", "data.source.workers=1", "+data.source.progress=false",
                 "data.source.cropper.min_face_size=32"]
    counts = prepare(compose_config(tmp_path, overrides, config_name="prepare"))
    assert counts == {"kept": 5, "dropped/duplicate": 2, "dropped/not_a_chip": 2}
    expected = pd.DataFrame({"path": [str(root / n) for n in DOWNLOAD[:2] + DOWNLOAD[3:5]],
                             "reason": ["duplicate", "duplicate", "not_a_chip", "not_a_chip"]})
    (folder,) = (tmp_path / "data" / "cache").glob("utkface-*")
    pd.testing.assert_frame_equal(pd.read_csv(folder / "dropped.csv"), expected)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("agelab-prepare").experiment_id])
    assert run.data.metrics["prepare/dropped/duplicate"] == 2 and run.data.metrics["prepare/dropped/not_a_chip"] == 2
    logged = client.download_artifacts(run.info.run_id, "prepare/dropped.csv", str(tmp_path / "artifacts"))
    pd.testing.assert_frame_equal(pd.read_csv(logged), expected)

    # A training run's data report reads the same counts from its source.
    source = instantiate(compose_config(tmp_path, overrides).data.source)
    source.prepare()
    assert data_metrics(SimpleNamespace(source=source)) == {
        "data/kept": 5.0, "data/dropped/duplicate": 2.0, "data/dropped/not_a_chip": 2.0}


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_utkface(tmp_path / "UTKFace")
    with pytest.raises(DataError, match="age_gender_race"):
        read_utkface(tmp_path)


def test_extra_sets_train_only_and_leave_the_datasets_own_split_as_it_was(tmp_path):
    root, extra = tmp_path / "UTKFace", tmp_path / "asian"
    root.mkdir()
    extra.mkdir()
    for i in range(12):
        Image.fromarray(draw_face(120, 80, seed=i)).save(root / f"{20 + i}_0_2_2017010914240{i:04d}.jpg.chip.jpg")
    for i in range(5):
        Image.fromarray(draw_face(120, 80, seed=50 + i)).save(extra / f"a{i}.jpg")
    pd.DataFrame({"path": [f"a{i}.jpg" for i in range(5)], "age": [30] * 5, "subject": list("vwxyz")}).to_csv(
        extra / "labels.csv", index=False)
    base = ["data=utkface", f"data.root={root}", "data.source.workers=1", "+data.source.progress=false",
            "data.source.cropper.min_face_size=32"]
    _, alone = instantiate(compose_config(tmp_path, base).data.source).load()
    _, merged = instantiate(compose_config(tmp_path, [*base, f"data.source.reader.extra_dirs=[{extra}]"]).data.source).load()
    added = merged[merged["extra_set"].notna()]
    assert len(added) == 5 and set(added["split"]) == {"train"} and set(added["extra_set"]) == {"asian"}
    own = merged[merged["extra_set"].isna()]
    assert dict(zip(own["path"], own["split"])) == dict(zip(alone["path"], alone["split"]))
