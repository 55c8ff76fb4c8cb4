"""The benchmark commands run on tiny sizes and report finite figures (no timing is asserted)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from agelab.bench.__main__ import main as bench
from agelab.bench.prepare import main as bench_prepare
from agelab.bench.train import main as bench_train
from agelab.errors import ConfigError


def finite_positive(value) -> bool:
    return math.isfinite(value) and value > 0


def test_bench_train_cpu_reports_ceiling_end_to_end_and_ratio(tmp_path, capsys):
    overrides = [f"paths.root_dir={tmp_path}", "data.source.train_size=96", "data.source.val_size=16",
                 "data.source.test_size=16", "data.source.image_size=72", "data.batch_size=16", "data.num_workers=0",
                 "~callbacks.rich_progress_bar"]
    for mode in ([], ["data.augment_on=device"]):
        result = bench_train(["--warmup", "1", "--steps", "2", *overrides, *mode])
        keys = ("model_only_img_s", "end_to_end_img_s", "ratio", "data_only_img_s", "data_to_model_ratio")
        assert all(finite_positive(result[k]) for k in keys)
        assert result["ratio"] == result["end_to_end_img_s"] / result["model_only_img_s"]
        assert result["data_to_model_ratio"] == result["data_only_img_s"] / result["model_only_img_s"]
    out = capsys.readouterr().out
    assert out.count("ratio end-to-end / model-only") == 2
    assert out.count("data path only (no model)") == 2


def test_bench_prepare_reports_rates_and_ratios(capsys):
    result = bench_prepare(["--count", "6", "--side", "320", "--workers", "2"])
    for key in ("decode_per_s", "prepare_per_s_one_core", "prepare_per_s_all_cores", "ratio_prepare_to_decode",
                "parallel_speedup"):
        assert finite_positive(result[key]), key
    assert result["count"] == 6 and result["kept"] == 6  # every photo's face is found, so each is timed whole
    assert "photos/s" in capsys.readouterr().out
    for bad in (["--count", "0"], ["--workers", "-1"], ["--side", "40"]):
        with pytest.raises(ConfigError, match="--count must be >= 1"):
            bench_prepare(bad)


def test_bench_predict_times_every_stage_of_the_predict_path(tmp_path, capsys):
    from agelab.bench.predict import STAGES, main as bench_predict
    from agelab.bench.prepare import write_photos
    from agelab.data.faces import FaceCropper
    from agelab.inference.backends import default_face_settings

    write_photos(tmp_path, 4, 320, FaceCropper(**default_face_settings(64)))
    (tmp_path / "blank.png").write_bytes(cv2.imencode(".png", np.full((200, 200, 3), 128, np.uint8))[1].tobytes())
    result = bench_predict(["--photos", str(tmp_path), "--limit", "0"])
    assert result["photos"] == 5 and result["found"] == 0.8  # the blank photo is searched, and has no face
    assert set(result["stages"]) == set(STAGES) and all(v >= 0 for v in result["stages"].values())
    assert sum(result["stages"].values()) == pytest.approx(result["seconds"])
    assert finite_positive(result["stages"]["face search"]) and finite_positive(result["stages"]["model"])
    out = capsys.readouterr().out
    assert "5 photos of" in out and "face found in 80.0 %" in out and "face search" in out
    with pytest.raises(ConfigError, match="^bench predict: no photos in"):
        bench_predict(["--photos", str(tmp_path / "none")])


@pytest.mark.parametrize("argv, message", [
    (["train", "--steps", "0"], "error: --warmup must be >= 0 and --steps >= 1, got 5 and 0"),
    (["train", "data.batch_size=-1"], "error: data.batch_size must be a positive integer, got -1"),
    (["train", "data=morph2"], "error: data.root is required"),
    (["infer", "model=nope"], "error: Could not find 'model/nope' (available in 'model': inception,"),
])
def test_bench_mistakes_are_one_line(capsys, argv, message):
    assert bench(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
