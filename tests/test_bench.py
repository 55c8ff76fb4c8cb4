"""The benchmark commands run on tiny sizes and report finite figures (no timing is asserted)."""

from __future__ import annotations

import math

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
