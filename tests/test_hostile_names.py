"""Names a file system can hold but text cannot, files that are no files, and a batch that ends early:
each file is still read, predicted and reported, and the outputs stay valid CSV and JSON."""

from __future__ import annotations

import csv
import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from agelab.data.images import load_image
from agelab.data.names import printable
from agelab.data.readers import read_utkface
from agelab.errors import ConfigError
from agelab.inference import AgePredictor, VideoOptions, default_face_settings, make_cropper, predict_input

from test_faces import draw_face

AGE, STD = 42.0, 3.0
LONG = "l" * 251 + ".jpg"  # 255 bytes: NAME_MAX of ext4, xfs, btrfs, tmpfs
NAMES = [  # (the file's name, as the outputs name it)
    (os.fsdecode(b"caf\xe9.jpg"), "caf\\xe9.jpg"),  # Latin-1, not UTF-8
    ("new\nline.jpg", "new\\nline.jpg"),
    ('quo"te,comma.jpg', 'quo"te,comma.jpg'),
    (LONG, LONG),
    ("-x.jpg", "-x.jpg"),
]


class FixedAge:
    """A backend that finds every face 42 +- 3 years old: predict's whole path without a model."""

    task, input_size, name = "age", 64, "fixed"
    face_settings = default_face_settings(64)

    def preprocess(self, crops):
        return np.zeros((len(crops), 3, self.input_size, self.input_size), np.float32)

    def run(self, batch):
        return {"age": np.full(len(batch), AGE), "std": np.full(len(batch), STD)}


def predictor() -> AgePredictor:
    return AgePredictor(FixedAge(), make_cropper(FixedAge.face_settings))


def write_face(path: Path, seed: int = 0) -> Path:
    """A 200x200 JPEG of one face, written by Python (OpenCV cannot take a name that is not UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".jpg", draw_face(200, 80, seed=seed)[..., ::-1])[1].tobytes())
    return path


def outputs(out: Path) -> tuple[list[dict], list[dict], dict]:
    """results.csv (read strictly as UTF-8), results.json and summary.json."""
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    return table, *(json.loads((out / name).read_text("utf-8")) for name in ("results.json", "summary.json"))


@pytest.mark.parametrize("name, shown", NAMES, ids=["latin1", "newline", "quote-comma", "long", "dash"])
def test_any_name_is_predicted_and_reported_escaped(tmp_path, name, shown):
    folder = tmp_path / "photos"
    write_face(folder / name)
    write_face(folder / "plain.jpg", seed=1)
    report = predict_input(predictor(), folder, tmp_path / "out")

    expected = {f"{folder}/{shown}": "ok", str(folder / "plain.jpg"): "ok"}
    assert report.file_status == expected
    table, rows, summary = outputs(tmp_path / "out")
    assert len((tmp_path / "out" / "results.csv").read_text("utf-8").splitlines()) == 3  # a header, a line a face
    assert {r["file"]: (r["status"], float(r["age"]), float(r["std"])) for r in table} == {
        file: ("ok", AGE, STD) for file in expected}
    assert {r["file"]: (r["status"], r["age"]) for r in rows} == {file: ("ok", AGE) for file in expected}
    for row in rows:  # the face found on the photo: the drawn one, about in the middle
        assert 40 < row["x1"] < 100 < row["x2"] < 160 and 40 < row["y1"] < 100 < row["y2"] < 160
    assert summary == {"files": 2, "faces": 2, "status": {"ok": 2}, "per_file": expected}
    assert (tmp_path / "out" / "annotated" / name).is_file()  # the annotated copy keeps the file's own name


def test_a_video_whose_name_is_not_utf8_is_predicted(tmp_path):
    made = tmp_path / "clip.avi"  # (OpenCV writes it under a UTF-8 name; it is renamed after)
    writer = cv2.VideoWriter(str(made), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (200, 200))
    for t in range(3):
        writer.write(draw_face(200, 80, seed=t)[..., ::-1].copy())
    writer.release()
    video = made.rename(tmp_path / os.fsdecode(b"clip\xe9.avi"))
    report = predict_input(predictor(), video, tmp_path / "out", video=VideoOptions(codec="MJPG"))
    table, _, summary = outputs(tmp_path / "out")
    assert summary["per_file"] == {printable(video): "ok"} and report.faces == 3
    assert [(r["file"], r["frame"], float(r["age_raw"])) for r in table] == [
        (printable(video), str(frame), AGE) for frame in range(3)]
    annotated = cv2.VideoCapture(os.fsencode(tmp_path / "out" / "annotated" / video.name))
    assert annotated.get(cv2.CAP_PROP_FRAME_COUNT) == 3


def test_a_utkface_chip_whose_name_is_not_utf8_is_read_and_a_bad_name_counted(tmp_path):
    root = tmp_path / os.fsdecode(b"fotos\xe9") / "UTKFace"
    chip = write_face(root / os.fsdecode(b"31_0_1_20170116174525777.caf\xe9.jpg.chip.jpg"))
    write_face(root / "25_1_2_20170116174525778.jpg.chip.jpg")
    write_face(root / os.fsdecode(b"3\xe91_0_1_20170116174525779.jpg.chip.jpg"))  # the age is no number
    result = read_utkface(root)
    assert result.counts() == {"kept": 2, "dropped": 1, "dropped/bad_filename": 1}
    row = result.records.set_index("path").loc[str(chip)]
    assert (row["age"], row["gender"], row["race"], row["subject"]) == (31, "m", "Black", "31_0_1_20170116174525777")
    image, reason, _ = load_image(row.name)  # the path as read opens the file
    assert reason is None and image.shape == (200, 200, 3)
    bad = f"{tmp_path}/fotos\\xe9/UTKFace/3\\xe91_0_1_20170116174525779.jpg.chip.jpg"
    assert result.drops.values.tolist() == [[bad, "bad_filename"]]
    assert "fotos\\xe9" in result.report()


def test_a_label_csv_in_a_folder_whose_name_is_not_utf8_is_read(tmp_path):
    from agelab.data.readers.table import read_table

    root = tmp_path / os.fsdecode(b"fotos\xe9")
    photo = write_face(root / "a.jpg")
    write_face(root / os.fsdecode(b"b\xe9.jpg"))
    (root / "labels.csv").write_text("path,age\na.jpg,31\nmissing.jpg,40\n", encoding="utf-8")
    result = read_table(root)
    assert result.counts() == {"kept": 1, "dropped": 1, "dropped/missing_file": 1}
    assert result.records["path"].tolist() == [str(photo)] and load_image(str(photo))[1] is None
    assert result.records["subject"].tolist() == [printable(photo)]
    assert result.drops.values.tolist() == [[f"{tmp_path}/fotos\\xe9/missing.jpg", "missing_file"]]


@contextmanager
def fails_after(seconds: int):
    """A TimeoutError where the block would hang (a FIFO opened for reading waits for a writer)."""
    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_is_listed_unreadable_and_never_opened(tmp_path):
    folder = tmp_path / "photos"
    write_face(folder / "a.jpg")
    os.mkfifo(folder / "pipe.jpg")
    with fails_after(30):
        report = predict_input(predictor(), folder, tmp_path / "out")
        alone = predict_input(predictor(), folder / "pipe.jpg", tmp_path / "alone")
    assert report.file_status == {str(folder / "a.jpg"): "ok", str(folder / "pipe.jpg"): "unreadable"}
    assert report.summary_line() == "2 files: 1 ok (1 face), 1 unreadable"
    assert alone.file_status == {str(folder / "pipe.jpg"): "unreadable"}
    table, _, _ = outputs(tmp_path / "alone")
    assert [(r["file"], r["status"]) for r in table] == [(str(folder / "pipe.jpg"), "unreadable")]


class BreaksOnThirdPhoto:
    """The predictor, until its third photo: there a setting wrong for every file ends the batch."""

    def __init__(self):
        self.inner, self.photos = predictor(), 0
        self.cropper, self.task = self.inner.cropper, self.inner.task

    def faces(self, image):
        self.photos += 1
        if self.photos == 3:
            raise ConfigError("faces: a wrong setting")
        return self.inner.faces(image)


def test_a_batch_that_ends_early_keeps_the_rows_of_the_photos_done(tmp_path):
    folder, out = tmp_path / "photos", tmp_path / "out"
    for i, name in enumerate("abcd"):
        write_face(folder / f"{name}.jpg", seed=i)
    lines = []  # results.csv as each file is done: its rows are there at once
    with pytest.raises(ConfigError, match="a wrong setting"):
        predict_input(BreaksOnThirdPhoto(), folder, out,
                      progress=lambda *_: lines.append(len((out / "results.csv").read_text().splitlines())))
    assert lines == [2, 3]
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        assert [(r["file"], r["status"], float(r["age"])) for r in csv.DictReader(f)] == [
            (str(folder / "a.jpg"), "ok", AGE), (str(folder / "b.jpg"), "ok", AGE)]
    assert not (out / "results.json").exists() and not (out / "summary.json").exists()  # no summary of half a batch
