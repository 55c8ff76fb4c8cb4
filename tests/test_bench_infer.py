"""``python -m agelab.bench infer``: every runtime, batch and thread setting measured side by side,
with finite ratios to PyTorch eager, file sizes and (with a checkpoint) the MAE per runtime.
Timings are never asserted, only that they are measured and consistent."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from agelab.bench.__main__ import SUBCOMMANDS, main
from agelab.bench.infer import LABELS, RUNTIMES, bench_infer
from agelab.errors import ConfigError
from agelab.module import AgeModule
from agelab.tracking import CONFIG_KEY

from conftest import TINY, compose_config

FAST = ["--runs", "2", "--batch-runs", "1", "--warmup", "0", "--batch", "4", "--calibration-size", "8", "--threads", "2"]


def test_cli_prints_every_setting_with_finite_ratios(capsys):
    result = main(["infer", *FAST[:2], "model=smlf_small", *FAST[2:]])  # options on both sides of an override
    assert result == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(tuple(LABELS.values())) and len(line.split()) == 8]
    settings = {(" ".join(r[:3]), int(r[3]), int(r[4])) for r in rows}
    assert settings == {(LABELS[rt], b, t) for rt in RUNTIMES for b in (1, 4) for t in (1, 2)}
    for row in rows:
        ms_per_batch, ms_per_face, x_eager = map(float, row[5:])
        assert 0 < ms_per_face <= ms_per_batch < math.inf and 0 < x_eager < math.inf
        if row[0] == "PyTorch":
            assert x_eager == 1.0
    assert "smlf_small (64x64, 0.356 M params)" in out
    assert "target (2-core CPU): int8 <= 1.0 ms/face on 1 thread and <= 0.5 MB" in out
    operators = [line.split() for line in out.split("by operator", 1)[1].splitlines()[1:] if line.startswith("  ")]
    assert "QLinearConv" in [row[0] for row in operators]  # the convolutions run in int8
    assert all(0 < float(row[1]) < math.inf and 0 < float(row[3]) <= 100 for row in operators)


def test_dispatcher_knows_its_subcommands(capsys):
    assert {"infer", "train"} <= set(SUBCOMMANDS)
    assert main(["nope"]) == 2
    assert "unknown subcommand 'nope'" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "infer" in capsys.readouterr().out
    assert main(["infer", "model=smlf_small", "--batch", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: batch must be a positive integer, got 0"


@pytest.fixture
def checkpoint(tmp_path):
    """An untrained smlf_small saved as agelab.train saves it (weights + resolved config)."""
    cfg = compose_config(tmp_path, [*TINY, "data.source.train_size=128", "data.source.val_size=32",
                                    "data.source.test_size=64"])
    model = instantiate(cfg.model)
    module = AgeModule(model, instantiate(cfg.head, in_features=model.out_features), optimizer=None)
    path = tmp_path / "untrained.ckpt"
    torch.save({"state_dict": module.state_dict(), CONFIG_KEY: OmegaConf.to_yaml(cfg, resolve=True)}, path)
    return path


def test_with_a_checkpoint_reports_test_mae_per_runtime(checkpoint):
    result = bench_infer(["model=smlf_small"], ckpt=str(checkpoint), runs=2, batch_runs=1, warmup=0, batch=4,
                         calibration_size=16, threads=2)
    assert result["model"] == "smlf_small" and result["input_size"] == 64
    assert len(result["rows"]) == 12
    by_setting = {(r["runtime"], r["batch"], r["threads"]): r for r in result["rows"]}
    for (runtime, batch, threads), row in by_setting.items():
        eager = by_setting[("torch_fp32", batch, threads)]["ms_per_batch"]
        assert row["x_eager"] == pytest.approx(eager / row["ms_per_batch"])
        assert row["ms_per_face"] == pytest.approx(row["ms_per_batch"] / batch)
    sizes = result["sizes_mb"]
    assert sizes["onnx_int8"] < 0.5 * sizes["onnx_fp32"] and sizes["torch_fp32"] > sizes["onnx_int8"]
    accuracy = result["accuracy"]
    assert accuracy["metric"] == "mae" and accuracy["faces"] == 64
    assert accuracy["onnx_fp32"] == pytest.approx(accuracy["torch_fp32"], abs=1e-4)
    assert math.isfinite(accuracy["int8_vs_fp32"])
    assert accuracy["int8_vs_fp32"] == pytest.approx(accuracy["onnx_int8"] - accuracy["onnx_fp32"])


def test_the_model_is_named_from_the_checkpoint_and_another_model_is_refused(checkpoint):
    from agelab.bench.infer import checkpoint_model_name

    assert checkpoint_model_name(str(checkpoint), OmegaConf.create(
        {"model": {"_target_": "agelab.models.smlf.SMLFNetSmall"}})) == "smlf_small"  # no stored choice: by class
    with pytest.raises(ConfigError, match=r"^model=smlf, but .*untrained.ckpt holds a trained smlf_small"):
        bench_infer(["model=smlf"], ckpt=str(checkpoint))
