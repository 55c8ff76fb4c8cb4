"""Prediction on photos, folders and videos: the shared crop path, per-file statuses, flip TTA,
video tracks and smoothing, the ONNX backend and the command line. One tiny training serves the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from torch.nn.modules.batchnorm import _BatchNorm

from agelab.checkpoint import load_module
from agelab.data.faces import FaceCropper
from agelab.data.images import read_image
from agelab.errors import ConfigError
from agelab.inference import (AgePredictor, FaceTracker, OnnxBackend, TorchBackend, VideoOptions, collect,
                              default_face_settings, eval_batch, iou, make_cropper, predict_input)
from agelab.predict import hydra_quote, positional_input, predict
from agelab.training import train

from conftest import TINY, compose_config
from test_faces import draw_face

REPO = Path(__file__).resolve().parents[1]
# Centres of the two faces of two_faces(): (x, y) and face width.
LEFT, RIGHT = ((100, 130), 80), ((300, 120), 90)


def calibrate_batchnorm(ckpt: Path, out: Path) -> Path:
    """The checkpoint with its BatchNorm statistics measured on its training faces.

    A one-epoch run of a few batches leaves them near their initial values, where this net maps
    every face to nearly the same features, so two different crops would predict the same age
    and the equality checks below could not tell crops apart.
    """
    module, cfg = load_module(ckpt)
    images, records = instantiate(cfg.data.source).load()
    transform = instantiate(cfg.augment.eval)
    train_rows = np.flatnonzero(records["split"].to_numpy() == "train")[:96]
    batch = torch.stack([transform(image=np.asarray(images[i]))["image"] for i in train_rows])
    for layer in module.modules():
        if isinstance(layer, _BatchNorm):
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average over the batch
    module.train()
    with torch.no_grad():
        module(batch)
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["state_dict"] = module.state_dict()
    torch.save(checkpoint, out)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # single faces: threads only contend on a shared CPU
    root = tmp_path_factory.mktemp("predict")
    cfg = compose_config(root, [*TINY, "trainer.max_epochs=1", "data.source.train_size=96", "data.source.val_size=32",
                                "data.source.test_size=32", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"])
    metrics = train(cfg)
    ckpt = calibrate_batchnorm(Path(metrics["best_model_path"]), root / "calibrated.ckpt")
    module, stored = load_module(ckpt)
    yield SimpleNamespace(root=root, ckpt=ckpt, module=module, cfg=stored, backend=TorchBackend(ckpt))
    torch.set_num_threads(threads)


def two_faces() -> np.ndarray:
    """A 400x240 RGB photo with two drawn faces (LEFT and RIGHT)."""
    image = np.full((240, 400, 3), 90, np.uint8)
    image[20:220, 0:200] = draw_face(200, LEFT[1], (LEFT[0][0], LEFT[0][1] - 20), seed=1)
    image[20:220, 200:400] = draw_face(200, RIGHT[1], (RIGHT[0][0] - 200, RIGHT[0][1] - 20), seed=2)
    return image


def write_rgb(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def predictor_for(backend, tta_flip=False, **faces) -> AgePredictor:
    return AgePredictor(backend, make_cropper(backend.face_settings, faces), tta_flip=tta_flip)


def test_photo_with_two_faces_gives_two_rows_and_an_annotated_copy(trained, tmp_path):
    photo = write_rgb(tmp_path / "in" / "two faces.png", two_faces())
    out = tmp_path / "out"
    cfg = compose_config(tmp_path, [f"input={hydra_quote(str(photo))}", f"ckpt={trained.ckpt}", f"out_dir={out}"],
                         config_name="predict")
    report = predict(cfg)
    assert report.summary() == {"files": 1, "faces": 2, "status": {"ok": 1}}
    table = pd.read_csv(out / "results.csv")
    assert list(table["status"]) == ["ok", "ok"] and list(table["face"]) == [0, 1]
    assert (table["file"] == str(photo)).all()
    # Largest face first: the right one; boxes centred on the drawn faces, about their size.
    for (_, row), ((cx, cy), width) in zip(table.iterrows(), (RIGHT, LEFT)):
        assert abs((row.x1 + row.x2) / 2 - cx) < 0.15 * width and abs((row.y1 + row.y2) / 2 - cy) < 0.25 * width
        assert 0.9 * width < row.x2 - row.x1 < 1.6 * width
        assert 0 <= row["age"] <= 100 and row["std"] > 0 and row["score"] > 0
    assert json.loads((out / "results.json").read_text())[0]["age"] == pytest.approx(table.age[0], abs=1e-6)
    annotated = cv2.imread(str(out / "annotated" / "two faces.png"))
    assert annotated is not None and annotated.shape == (240, 400, 3)
    # Something was drawn on each face's box edge, and nowhere far from the faces.
    original = cv2.cvtColor(two_faces(), cv2.COLOR_RGB2BGR).astype(int)
    changed = np.abs(annotated.astype(int) - original).sum(axis=2) > 60
    for _, row in table.iterrows():
        assert changed[int(row.y2) - 2, int(row.x1):int(row.x2)].mean() > 0.9  # the bottom edge of the box
    assert not changed[230:, :].any()


def test_predictions_are_the_module_on_the_face_cropper_crop(trained):
    image = two_faces()
    settings = default_face_settings(64)  # synth training data: the default crop at the eval margin
    assert trained.backend.face_settings == settings and settings["output_size"] == 73
    crops, reason = FaceCropper(**settings).crops(image)
    assert reason is None and len(crops) == 2
    transform = instantiate(trained.cfg.augment.eval)
    batch = torch.stack([transform(image=c.crop)["image"] for c in crops])
    with torch.no_grad():
        expected = trained.module(batch)
    faces, _ = predictor_for(trained.backend).faces(image)
    assert [f.box for f in faces] == [c.box for c in crops]
    np.testing.assert_allclose([f.age for f in faces], expected["age"].numpy(), atol=1e-4)
    np.testing.assert_allclose([f.std for f in faces], expected["std"].numpy(), atol=1e-4)
    # The check can tell crops apart: another crop of the same faces predicts other ages.
    wider, _ = AgePredictor(trained.backend, FaceCropper(**{**settings, "eye_distance": 0.25})).faces(image)
    assert max(abs(a.age - b.age) for a, b in zip(faces, wider)) > 0.1
    # The torch-free preprocessing of the ONNX path is the checkpoint's eval transform.
    np.testing.assert_allclose(eval_batch([c.crop for c in crops], 64), batch.numpy(), atol=1e-6)
    np.testing.assert_allclose(eval_batch([cv2.resize(crops[0].crop, (120, 120))], 64)[0],
                               transform(image=cv2.resize(crops[0].crop, (120, 120)))["image"].numpy(), atol=1e-6)


def test_flip_tta_is_the_mean_of_both_passes(trained):
    image = two_faces()
    plain, _ = predictor_for(trained.backend).faces(image)
    flipped, _ = predictor_for(trained.backend, tta_flip=True).faces(image)
    crops, _ = make_cropper(trained.backend.face_settings).crops(image)
    batch = trained.backend.preprocess([c.crop for c in crops])
    with torch.no_grad():
        mirror = trained.module(torch.from_numpy(batch).flip(-1))["age"].numpy()
    for p, f, m in zip(plain, flipped, mirror):
        assert np.isfinite(f.age) and np.isfinite(f.std)
        assert f.age == pytest.approx((p.age + m) / 2, abs=1e-4)
        assert f.box == p.box
    # A mirror-symmetric crop predicts the same with and without the flip.
    symmetric = np.concatenate([batch[:1, ..., :32], batch[:1, ..., :32][..., ::-1]], axis=-1)
    assert predictor_for(trained.backend, tta_flip=True).predict_batch(symmetric)["age"][0] == pytest.approx(
        trained.backend.run(symmetric)["age"][0], abs=1e-4)


def test_folder_reports_every_file_and_completes(trained, tmp_path):
    folder = tmp_path / "photos"
    write_rgb(folder / "good.jpg", two_faces())
    write_rgb(folder / "nested" / "deeper" / "good.png", draw_face(200, 80))
    write_rgb(folder / "blank.jpg", np.full((160, 160, 3), 120, np.uint8))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("these are notes, not a picture\n")
    (folder / "readme.txt").write_text("hello\n")
    outside = write_rgb(tmp_path / "elsewhere" / "private.jpg", draw_face(200, 80))
    (folder / "link_out.jpg").symlink_to(outside)
    (folder / "link_in.jpg").symlink_to(folder / "good.jpg")
    (folder / "nested" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "away").symlink_to(outside.parent, target_is_directory=True)
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")  # a link to itself: unreadable, not a crash

    lines = []
    report = predict_input(predictor_for(trained.backend), folder, tmp_path / "out",
                           progress=lambda f, s, n: lines.append((Path(f).name, s, n)))
    status = {Path(f).relative_to(folder).as_posix(): s for f, s in report.file_status.items()}
    assert status == {"away": "link_outside", "blank.jpg": "no_face", "empty.jpg": "unreadable", "good.jpg": "ok",
                      "link_in.jpg": "ok", "link_out.jpg": "link_outside", "loop.jpg": "unreadable", "nested/deeper/good.png": "ok",
                      "notes.png": "unreadable", "readme.txt": "unsupported"}
    assert report.summary() == {"files": 10, "faces": 5, "status": {
        "link_outside": 2, "no_face": 1, "ok": 3, "unreadable": 3, "unsupported": 1}}
    assert report.summary_line() == "10 files: 3 ok (5 faces), 2 link_outside, 1 no_face, 3 unreadable, 1 unsupported"
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(table) == 5 + 7  # a row per face, and one per file without a face
    assert set(table.loc[table.status != "ok", "age"].isna()) == {True}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["faces"] == 5 and summary["per_file"][str(folder / "empty.jpg")] == "unreadable"
    annotated = tmp_path / "out" / "annotated"
    assert sorted(p.relative_to(annotated).as_posix() for p in annotated.rglob("*") if p.is_file()) == [
        "good.jpg", "link_in.jpg", "nested/deeper/good.png"]
    assert cv2.imread(str(annotated / "nested" / "deeper" / "good.png")).shape == (200, 200, 3)
    assert len(lines) == 10 and ("good.jpg", "ok", 2) in lines
    # The outside file was never read: nothing of it in the outputs.
    assert "private" not in (tmp_path / "out" / "results.csv").read_text()


def test_collect_single_files(tmp_path):
    photo = write_rgb(tmp_path / "a.JPG", draw_face(120, 60))
    assert [(i.kind, i.relative.as_posix()) for i in collect(photo)] == [("photo", "a.JPG")]
    (tmp_path / "clip.MOV").touch()
    (tmp_path / "clip.mp4.txt").touch()
    assert collect(tmp_path / "clip.MOV")[0].kind == "video"
    assert collect(tmp_path / "clip.mp4.txt")[0].kind == "unsupported"
    with pytest.raises(FileNotFoundError):
        collect(tmp_path / "missing.jpg")


def test_a_folder_that_cannot_be_listed_is_reported_not_skipped(tmp_path, monkeypatch):
    write_rgb(tmp_path / "photos" / "a.jpg", draw_face(120, 60))
    (tmp_path / "photos" / "private").mkdir()
    scandir = os.scandir

    def no_permission(folder):
        if Path(folder).name == "private":
            raise PermissionError(13, "Permission denied", str(folder))
        return scandir(folder)

    monkeypatch.setattr(os, "scandir", no_permission)
    assert [(i.kind, i.relative.as_posix()) for i in collect(tmp_path / "photos")] == [
        ("photo", "a.jpg"), ("unreadable", "private")]


class JitteryBackend:
    """The checkpoint's backend with +-6 years added on alternate calls: predictions that jitter."""

    def __init__(self, backend):
        self.backend, self.calls = backend, 0
        self.input_size, self.task, self.face_settings = backend.input_size, backend.task, backend.face_settings

    def preprocess(self, crops):
        return self.backend.preprocess(crops)

    def run(self, batch):
        out = dict(self.backend.run(batch))
        out["age"] = out["age"] + (6.0 if self.calls % 2 else -6.0)
        self.calls += 1
        return out


def write_video(path: Path, frames: int = 16, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (240, 200))
    assert writer.isOpened()
    for t in range(frames):  # the face drifts 2 px to the right per frame
        frame = np.full((200, 240, 3), 90, np.uint8)
        frame[:, 20:220] = draw_face(200, 80, (80 + 2 * t, 100), seed=t)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_keeps_one_track_and_smooths_its_age(trained, tmp_path):
    video = write_video(tmp_path / "clip.avi")
    predictor = predictor_for(JitteryBackend(trained.backend))
    options = VideoOptions(codec="MJPG", smoothing={"alpha": 0.3, "min_iou": 0.3, "max_missed": 5})
    report = predict_input(predictor, video, tmp_path / "out", video=options)
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert report.file_status == {str(video): "ok"}
    assert len(table) >= 14 and table.frame.is_monotonic_increasing and (table.face == 0).all()
    assert table.track.nunique() == 1  # one face, followed the whole way
    assert (np.diff(table.x1) >= -3).all() and table.x1.iloc[-1] > table.x1.iloc[0] + 15  # it moves right
    raw, smoothed = table.age_raw.to_numpy(), table.age.to_numpy()
    assert np.abs(np.diff(raw)).mean() > 10  # the +-6 jitter
    assert np.abs(np.diff(smoothed)).mean() < 0.5 * np.abs(np.diff(raw)).mean()
    assert smoothed.std() < raw.std()
    # The exponential moving average, exactly (the first frame starts the track).
    expected = [raw[0]]
    for value in raw[1:]:
        expected.append(0.3 * value + 0.7 * expected[-1])
    np.testing.assert_allclose(smoothed, expected, atol=1e-3)
    written = cv2.VideoCapture(str(tmp_path / "out" / "annotated" / "clip.avi"))
    count = 0
    while written.read()[0]:
        count += 1
    assert count == 16 and written.get(cv2.CAP_PROP_FRAME_WIDTH) == 240

    every = predict_input(predictor_for(trained.backend), video, tmp_path / "every",
                          video=VideoOptions(every=4, codec="mp4v"))
    frames = pd.read_csv(tmp_path / "every" / "results.csv").frame
    assert set(frames) <= {0, 4, 8, 12} and len(frames) >= 3 and every.faces == len(frames)
    assert (tmp_path / "every" / "annotated" / "clip.avi.mp4").is_file()


def test_tracker_matches_by_overlap_and_ends_lost_tracks():
    tracker = FaceTracker(alpha=0.5, min_iou=0.3, max_missed=1)
    a, b = (0, 0, 10, 10), (50, 50, 60, 60)
    assert iou(a, a) == 1.0 and iou(a, b) == 0.0 and iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    first = tracker.update([a, b], [20.0, 40.0], [1.0, 1.0])
    assert [t.id for t in first] == [0, 1]
    second = tracker.update([(51, 50, 61, 60), (1, 0, 11, 10)], [50.0, 30.0], [3.0, 3.0])  # order swapped
    assert [t.id for t in second] == [1, 0]
    assert [t.age for t in second] == [45.0, 25.0] and second[0].std == 2.0
    tracker.update([], [], [])
    tracker.update([], [], [])  # missed twice > max_missed: both tracks end
    assert [t.id for t in tracker.update([a], [20.0], [1.0])] == [2]
    with pytest.raises(ConfigError):
        FaceTracker(alpha=0)


def test_onnx_backend_matches_the_checkpoint(trained, tmp_path):
    from agelab.exporting.formats import export_onnx

    model = export_onnx(trained.module, tmp_path / "model.onnx", 64)
    backend = OnnxBackend(model)
    assert backend.input_size == 64 and backend.task == "age" and backend.face_settings == trained.backend.face_settings
    image = two_faces()
    for tta in (False, True):
        ours, _ = predictor_for(backend, tta_flip=tta).faces(image)
        ref, _ = predictor_for(trained.backend, tta_flip=tta).faces(image)
        assert [f.box for f in ours] == [f.box for f in ref]
        np.testing.assert_allclose([f.age for f in ours], [f.age for f in ref], atol=1e-3)
        np.testing.assert_allclose([f.std for f in ours], [f.std for f in ref], atol=1e-3)
    with pytest.raises(ConfigError, match="input_size=32"):
        OnnxBackend(model, input_size=32)


def test_command_line_takes_a_bare_path_and_the_onnx_path_needs_no_torch(trained, tmp_path):
    from agelab.exporting.formats import export_onnx

    model = export_onnx(trained.module, tmp_path / "model.onnx", 64)
    photo = write_rgb(tmp_path / "my photos" / "it's, two.jpg", two_faces())
    script = ("import atexit, runpy, sys; atexit.register(lambda: print('torch imported:', 'torch' in sys.modules)); "
              "runpy.run_module('agelab.predict', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script, str(photo), f"onnx={model}", f"out_dir={tmp_path / 'out'}",
                           f"paths.root_dir={tmp_path}", "tta_flip=true"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "1 file: 1 ok (2 faces)" in done.stdout
    assert "torch imported: False" in done.stdout
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table.file) == [str(photo)] * 2
    reference, _ = predictor_for(trained.backend, tta_flip=True).faces(read_image(photo)[0])
    np.testing.assert_allclose(table.age, [f.age for f in reference], atol=1e-3)

    # Several paths (a shell glob), after the options too; a file that cannot be read: exit code 1, named.
    other = write_rgb(tmp_path / "more" / "it's, two.jpg", two_faces())
    bad = tmp_path / "more" / "notes.jpg"
    bad.write_text("not a photo")
    done = subprocess.run([sys.executable, "-m", "agelab.predict", f"onnx={model}", str(photo), str(other), str(bad),
                           f"out_dir={tmp_path / 'out2'}", f"paths.root_dir={tmp_path}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1, done.stderr
    assert "3 files: 2 ok (4 faces), 1 unreadable" in done.stdout
    assert f"{bad}: unreadable" in done.stderr.splitlines()
    annotated = sorted(p.relative_to(tmp_path / "out2" / "annotated").as_posix()
                       for p in (tmp_path / "out2" / "annotated").rglob("*.jpg"))
    assert annotated == ["more/it's, two.jpg", "my photos/it's, two.jpg"]  # same names, kept apart


def test_several_inputs_keep_their_folders_below_the_output_and_a_file_counts_once(tmp_path, monkeypatch):
    from agelab.inference import collect_all

    for name in ("p/d/f.jpg", "p/d/h.jpg", "p/sub/g.jpg", "q/d/f.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "p" / "d" / "link.jpg").symlink_to("f.jpg")  # another name of a photo: a file of its own
    monkeypatch.chdir(tmp_path / "p" / "sub")
    items = collect_all(["../d/f.jpg", "g.jpg", "../d", "../../p/d/", "../../q/d/f.jpg"])
    assert [(str(i.path), i.relative.as_posix()) for i in items] == [
        ("../d/f.jpg", "p/d/f.jpg"), ("g.jpg", "p/sub/g.jpg"), ("../d/h.jpg", "p/d/h.jpg"),
        ("../d/link.jpg", "p/d/link.jpg"),
        ("../../q/d/f.jpg", "q/d/f.jpg")]  # ".." never leads out of annotated/; f.jpg of p/d once


def test_positional_argument_and_config_errors(trained, tmp_path):
    assert positional_input(["photo.jpg", "ckpt=x"]) == ["input='photo.jpg'", "ckpt=x"]
    assert positional_input(["input=photo.jpg"]) == ["input=photo.jpg"]
    assert positional_input(["--cfg", "job"]) == ["--cfg", "job"]
    assert positional_input(["ckpt=x", "photo.jpg"]) == ["input='photo.jpg'", "ckpt=x"]
    assert positional_input(["a.jpg", "b.jpg", "onnx=m", "~faces"]) == ["input=['a.jpg','b.jpg']", "onnx=m", "~faces"]
    assert positional_input(["a.jpg", "onnx=m", "--cfg", "job"]) == ["input='a.jpg'", "onnx=m", "--cfg", "job"]
    with pytest.raises(ConfigError, match="^input: give the paths either bare or as input="):
        positional_input(["a.jpg", "input=b.jpg"])
    odd = tmp_path / "a=b's.jpg"
    odd.touch()
    assert positional_input([str(odd)])[0].startswith("input='")  # an existing path, even with "="
    (tmp_path / "-x.jpg").touch()
    os.chdir(tmp_path)
    try:
        assert positional_input(["-x.jpg", "ckpt=m"]) == ["input='-x.jpg'", "ckpt=m"]  # a photo, not a flag
    finally:
        os.chdir(REPO)

    def config(*overrides):
        return compose_config(tmp_path, [f"out_dir={tmp_path / 'out'}", *overrides], config_name="predict")

    photo = write_rgb(tmp_path / "p.jpg", two_faces())
    model = f"ckpt={trained.ckpt}"
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "pipe only").mkdir()
    os.mkfifo(tmp_path / "pipe only" / "p.jpg")
    cases = {
        "^input: give a photo": config(model),
        "^input: the folder .*empty holds no files$": config(f"input={tmp_path / 'empty'}", model),
        "^input: no file or folder at /no/such/photo.jpg$": config("input=/no/such/photo.jpg", model),
        "^no model given and no MLflow store at .*mlflow.db: train one": config(f"input={photo}"),
        "^give one model: model_uri=, ckpt= or onnx=$": config(f"input={photo}", model, "model_uri=x@1"),
        "^onnx: no model at /no/model.onnx$": config(f"input={photo}", "onnx=/no/model.onnx"),
        "^video.every must be a positive integer, got 0$": config(f"input={photo}", model, "video.every=0"),
        "^video.codec must be one of mp4v, MJPG": config(f"input={photo}", model, "video.codec=H264"),
        "^faces.detect_side must be 0 or null .*, got 10$": config(f"input={photo}", model, "faces.detect_side=10"),
        "^faces.min_face_size must be an integer >= 8, got 'abc'$": config(f"input={photo}", model, "faces.min_face_size=abc"),
        "^faces.output_size: not a face setting": config(f"input={photo}", model, "+faces.output_size=99"),
        "^input_size applies to ONNX models only": config(f"input={photo}", model, "input_size=64"),
        "^out_dir: cannot create /proc/no/such": config(f"input={photo}", model, "out_dir=/proc/no/such"),
        "^input: no file or folder at /no/b.jpg$": config(f"input=[{photo},/no/b.jpg]", model),
        "^give one model": config(f"input={tmp_path / 'pipe only'}", model, "model_uri=x@1"),  # a FIFO: not "no files"
    }
    for message, cfg in cases.items():
        with pytest.raises(ConfigError, match=message):
            predict(cfg)
    assert not (tmp_path / "out").exists()  # every one failed before writing anything


def test_without_a_model_predict_takes_the_newest_training_run(trained, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    photo = write_rgb(tmp_path / "p.jpg", two_faces())
    cfg = compose_config(trained.root, [f"input={photo}", f"out_dir={tmp_path / 'out'}", "annotate=false"],
                         config_name="predict")
    report = predict(cfg)  # the store holds one finished training and no registered model
    client = MlflowClient(f"sqlite:///{trained.root / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("agelab").experiment_id])
    said = capsys.readouterr().out.splitlines()[0]
    assert said.startswith("model: checkpoints/epoch000.ckpt of the newest finished training, run "
                           f"{run.info.run_id}")
    assert report.faces == 2
    client.set_terminated(run.info.run_id, "FAILED")  # no finished training left: one line, what to do
    try:
        with pytest.raises(ConfigError, match="^no model given, no agelab-age@champion and no finished training "
                                              "in sqlite:.*: train one"):
            predict(cfg)
    finally:
        client.set_terminated(run.info.run_id, "FINISHED")


def test_group_head_checkpoint_and_onnx_give_group_names(trained, tmp_path):
    from omegaconf import OmegaConf

    from agelab.exporting.formats import export_onnx
    from agelab.groups import GROUP_CENTRES, GROUP_NAMES
    from agelab.heads.ce import GroupCEHead
    from agelab.module import AgeModule
    from agelab.tracking import CONFIG_KEY

    torch.manual_seed(0)
    module = AgeModule(model=trained.module.model, head=GroupCEHead(trained.module.model.out_features), optimizer=None)
    cfg = OmegaConf.create(OmegaConf.to_container(trained.cfg))
    cfg.head = {"_target_": "agelab.heads.ce.GroupCEHead", "label_smoothing": 0.0}
    ckpt = tmp_path / "group.ckpt"
    torch.save({"state_dict": module.state_dict(), CONFIG_KEY: OmegaConf.to_yaml(cfg)}, ckpt)
    backend = TorchBackend(ckpt)
    assert backend.task == "group"
    image = two_faces()
    faces, _ = predictor_for(backend).faces(image)
    crops, _ = make_cropper(backend.face_settings).crops(image)
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(backend.preprocess([c.crop for c in crops])))
    assert [f.group for f in faces] == expected["group"].tolist()
    np.testing.assert_allclose([f.age for f in faces], (expected["probs"].numpy() @ GROUP_CENTRES), atol=1e-4)

    onnx_faces, _ = predictor_for(OnnxBackend(export_onnx(module, tmp_path / "group.onnx", 64))).faces(image)
    assert [f.group_name for f in onnx_faces] == [GROUP_NAMES[g] for g in expected["group"].tolist()]
    np.testing.assert_allclose([f.age for f in onnx_faces], [f.age for f in faces], atol=1e-3)
    np.testing.assert_allclose([f.std for f in onnx_faces], [f.std for f in faces], atol=1e-3)

    photo = write_rgb(tmp_path / "p.png", image)  # lossless: the same pixels as above
    predict_input(predictor_for(backend), photo, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table.group) == [f.group_name for f in faces]
