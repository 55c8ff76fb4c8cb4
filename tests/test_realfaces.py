"""The face pipeline and a tiny training on real faces (../shared/realfaces: UTKFace chips and
All-Age-Faces photos with labelled eyes). Skipped where the folder is absent; a failure under CI."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from agelab.bench.faces import EYES
from agelab.config import CROP_FRACTION
from agelab.data.faces import FaceCropper
from agelab.data.images import read_image
from agelab.training import train

from conftest import TINY, compose_config

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realfaces"


@pytest.fixture(scope="module")
def real() -> Path:
    if not REAL.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{REAL} is missing: the real-face tests must run in CI")
        pytest.skip(f"{REAL} is absent (real faces for development)")
    return REAL


def photos(real: Path, count: int) -> pd.DataFrame:
    labels = pd.read_csv(real / "aaf_photos" / "labels.csv")
    return labels.iloc[np.linspace(0, len(labels) - 1, count).round().astype(int)].reset_index(drop=True)


def in_crop(point, frame, output_size: int) -> np.ndarray:
    """A point of the original image in the crop's pixels (the inverse of the crop's rotation and scale)."""
    (cx, cy), side, angle = frame
    a = math.radians(angle)
    dx, dy = point[0] - cx, point[1] - cy
    along, across = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
    return np.array([along, across]) * output_size / side + output_size / 2


def test_a_tight_chip_and_a_loose_photo_of_one_face_are_framed_alike(real):
    """The same real face cut as a UTKFace-like chip (2.6 eye distances, eyes high) and as the loose
    photo: the labelled eyes land within 3 % of the crop's side of each other in both crops."""
    cropper = FaceCropper(output_size=128)
    for _, row in photos(real, 12).iterrows():
        image = read_image(real / "aaf_photos" / row["path"])[0]
        left, right = np.array(row[EYES[:2]], float), np.array(row[EYES[2:]], float)
        distance = float(np.linalg.norm(right - left))
        mid = (left + right) / 2
        x1, y1 = (mid - [1.3 * distance, 0.8 * distance]).round().astype(int).clip(0)
        side = int(round(2.6 * distance))
        chip = image[y1:y1 + side, x1:x1 + side]
        loose, _ = cropper.largest(image)
        tight, _ = cropper.largest(chip)
        assert loose is not None and tight is not None, row["path"]
        for eye in (left, right):
            a = in_crop(eye, loose.frame, 128)
            b = in_crop(eye - [x1, y1], tight.frame, 128)
            assert np.linalg.norm(a - b) <= 0.03 * 128, (row["path"], a, b)


def test_real_faces_are_found_and_their_eyes_placed_where_the_framing_says(real):
    cropper = FaceCropper(output_size=128)
    view = 128 * CROP_FRACTION
    canonical = (64.0, 64 - view / 2 + cropper.eye_line * view)
    labels = photos(real, 60)
    chips = sorted((real / "utkface" / "UTKFace").iterdir())[::300]
    found = 0
    for path, eyes in [*zip(labels["path"], labels[EYES].to_numpy()), *((c, None) for c in chips)]:
        face, _ = cropper.largest(read_image(real / "aaf_photos" / path if eyes is not None else path)[0])
        if face is None:
            continue
        found += 1
        if eyes is not None:  # the labelled eyes: level, their midpoint where the framing puts it
            left, right = in_crop(eyes[:2], face.frame, 128), in_crop(eyes[2:], face.frame, 128)
            assert abs(left[1] - right[1]) <= 0.04 * 128
            assert np.linalg.norm((left + right) / 2 - canonical) <= 0.04 * 128
            assert np.linalg.norm(right - left) == pytest.approx(cropper.eye_distance * view, rel=0.25)
    assert found >= 0.95 * (len(labels) + len(chips))


def test_real_faces_prepare_train_eval_and_predict(real, tmp_path):
    """A few hundred real faces through prepare, a few training batches, the test and predict."""
    rows = [{"path": str(real / "aaf_photos" / p), "age": a, "subject": f"aaf{s}"}
            for p, a, s in photos(real, 100)[["path", "age", "subject"]].itertuples(index=False)]
    for chip in sorted((real / "utkface" / "UTKFace").iterdir())[::90][:200]:
        rows.append({"path": str(chip), "age": int(chip.name.split("_")[0]), "subject": chip.name})
    root = tmp_path / "faces"
    root.mkdir()
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    overrides = [o for o in TINY if not o.startswith(("data.source.", "trainer.max_epochs"))] + [
        "data=csv", f"data.root={root}", "trainer.max_epochs=1", "data.source.workers=1",
        "+data.source.progress=false", "+trainer.limit_train_batches=3"]
    cfg = compose_config(tmp_path, overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    torch.manual_seed(0)
    metrics = train(cfg)
    for key in ("test/mae", "test/cs5"):
        assert np.isfinite(metrics[key])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("agelab").experiment_id])
    logged = run.data.metrics
    assert logged["data/kept"] >= 0.97 * len(rows) and np.isfinite(logged["test/mae"])

    from agelab.inference import AgePredictor, make_cropper
    from agelab.inference.backends import TorchBackend

    (ckpt,) = (tmp_path / "output").rglob("last.ckpt")
    backend = TorchBackend(ckpt)
    predictor = AgePredictor(backend, make_cropper(backend.face_settings))
    faces, reason = predictor.faces(read_image(Path(rows[0]["path"]))[0])
    assert reason is None and len(faces) >= 1 and 0 <= faces[0].age <= 100 and np.isfinite(faces[0].std)
