"""Tiny CPU trainings through the real config: learning, MLflow contents, resume."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from agelab.errors import ConfigError
from agelab.training import train

from conftest import TINY, compose_config


def client_for(root: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{root.resolve() / 'mlflow.db'}")


def only_run(client: MlflowClient):
    exp = client.get_experiment_by_name("agelab")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_tiny_training_beats_mean_baseline_and_is_tracked(tmp_path):
    cfg = compose_config(tmp_path, [*TINY, "data.source.train_size=768", "trainer.max_epochs=4",
                                    "optimizer.lr=0.005"])
    metrics = train(cfg)

    # Predict-the-train-mean baseline on the same validation faces.
    _, records = instantiate(cfg.data.source).load()
    mean_age = records.loc[records.split == "train", "age"].mean()
    baseline = (records.loc[records.split == "val", "age"] - mean_age).abs().mean()
    assert baseline > 20
    assert metrics["val/mae"] < 0.75 * baseline
    assert metrics["test/mae"] < 0.75 * baseline
    assert 0 <= metrics["test/cs5"] <= 1

    client = client_for(tmp_path)
    run = only_run(client)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model._target_"] == "agelab.models.smlf.SMLFNet" or params["model._target_"].endswith("SMLFNetSmall")
    assert params["data.batch_size"] == "32"
    assert params["trainer.max_epochs"] == "4"
    assert run.data.tags["model"] == "smlf_small" and run.data.tags["head"] == "dex" and run.data.tags["data"] == "synth"
    assert "git_commit" in run.data.tags
    for key in ("train/loss", "train/mae", "train/cs5", "val/loss", "val/mae", "val/cs5", "test/loss", "test/mae", "test/cs5"):
        assert key in run.data.metrics, key
    history = client.get_metric_history(run.info.run_id, "val/mae")
    assert len(history) == 4  # one value per epoch
    assert history[-1].value < history[0].value
    curve = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "test/cs_curve"), key=lambda m: m.step)]
    assert len(curve) == 16 and np.all(np.diff(curve) >= 0)
    assert curve[5] == run.data.metrics["test/cs5"]

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "figures", "checkpoints"} <= artifacts
    assert "figures/cs_curve.png" in [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
    ckpts = client.list_artifacts(run.info.run_id, "checkpoints")
    assert len(ckpts) == 1 and ckpts[0].path.endswith(".ckpt")
    # Artifacts live under <root>/mlruns, beside mlflow.db.
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns").resolve().as_uri())
    yaml_text = Path(client.download_artifacts(run.info.run_id, "config/config.yaml", str(tmp_path))).read_text()
    assert "SMLFNet" in yaml_text

    # The checkpoint alone rebuilds the trained model.
    from agelab.checkpoint import load_module
    module, stored_cfg = load_module(metrics["best_model_path"])
    assert stored_cfg.data.batch_size == 32
    ages = module(torch.zeros(2, 3, 64, 64))["age"]
    assert ages.shape == (2,) and torch.all((ages >= 0) & (ages <= 100))


def test_resume_continues_the_same_mlflow_run(tmp_path):
    cfg = compose_config(tmp_path, [*TINY, "trainer.max_epochs=1"])
    first = train(cfg)
    last = Path(first["best_model_path"]).parent / "last.ckpt"
    assert last.is_file()
    steps_before = torch.load(last, weights_only=True)["global_step"]
    client = client_for(tmp_path)
    run_id = only_run(client).info.run_id

    # Resuming with another setup stops before the run is touched, naming the overrides to repeat.
    for changed, expected in ((["data.source.train_size=256"], "(data.source.train_size=384;"),
                              (["model=simple_cnn"], "(model=smlf_small;")):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            train(compose_config(tmp_path, [*TINY, *changed, "trainer.max_epochs=2", f"ckpt_path={last}"]))
    assert only_run(client).info.status == "FINISHED"

    # Another trainer (here: more epochs) and more loader workers are fine.
    cfg = compose_config(tmp_path, [*TINY, "trainer.max_epochs=2", "data.num_workers=1", f"ckpt_path={last}"])
    train(cfg)
    run = only_run(client)  # still one run
    assert run.info.run_id == run_id
    steps = [m.step for m in client.get_metric_history(run_id, "val/mae")]
    assert len(steps) == 2 and len(set(steps)) == 2  # epoch 0 from the first process, epoch 1 from the resume
    assert len(client.get_metric_history(run_id, "train/mae")) == 2  # no epoch lost or repeated
    # The resumed training kept writing checkpoints next to the one it resumed from.
    assert torch.load(last, weights_only=True)["global_step"] == 2 * steps_before > 0

    # The same command again: nothing left to train or test; it returns the run's results, logs nothing twice.
    tested = client.get_metric_history(run_id, "test/mae")
    again = train(compose_config(tmp_path, [*TINY, "trainer.max_epochs=2", f"ckpt_path={last}"]))
    assert again["test/mae"] == tested[-1].value and Path(again["best_model_path"]).is_file()
    assert len(client.get_metric_history(run_id, "test/mae")) == len(tested)
    # One best checkpoint in the run's artifacts: the longer fit's replaced the first fit's.
    artifacts = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
    assert artifacts == [f"checkpoints/{Path(again['best_model_path']).name}"]
    assert only_run(client).data.tags["agelab.complete"] == "true"
    for once in ("model/params", "data/split/train"):  # logged by the first process only, not by each resume
        assert len(client.get_metric_history(run_id, once)) == 1, once

    # Stopped during its final test, figures or export: Lightning marks the run FINISHED when the fit
    # ends, but the run is not complete. The same command tests it again, without logging its test
    # figures twice, and completes it.
    client.set_tag(run_id, "agelab.complete", "false")
    retested = train(compose_config(tmp_path, [*TINY, "trainer.max_epochs=2", f"ckpt_path={last}"]))
    assert retested["test/mae"] == pytest.approx(tested[-1].value, abs=1e-6)
    assert len(client.get_metric_history(run_id, "test/mae")) == len(tested)
    assert len(client.get_metric_history(run_id, "test/cs_curve")) == 2 * 16  # the 1- and the 2-epoch fit's
    run = only_run(client)
    assert run.info.status == "FINISHED" and run.data.tags["agelab.complete"] == "true"


def test_a_gpu_trainer_without_a_gpu_is_one_line_before_any_data(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu needs a CUDA GPU and torch sees none; use trainer=cpu"):
        train(compose_config(tmp_path, ["trainer=gpu"]))
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.rglob("images.npy"))


def test_trainer_cpu_augments_whole_batches_in_the_training_process(tmp_path):
    cfg = compose_config(tmp_path, ["trainer=cpu", "data=utkface", "data.root=/x", "experiment=utkface_smlf"])
    assert (cfg.trainer.accelerator, cfg.trainer.max_epochs) == ("cpu", 40)  # the experiment's epochs stay
    assert (cfg.data.augment_on, cfg.data.num_workers, cfg.data.persistent_workers) == ("device", 0, False)
    assert cfg.data.device_train_transform._target_.endswith("BatchAugment")
    default = compose_config(tmp_path, [])
    assert (default.data.augment_on, default.data.num_workers) == ("cpu", 2)  # per image, in worker processes


def test_device_augmentation_with_the_model_summary_on(tmp_path):
    # The summary passes the model's example input (a bare tensor) through the batch-transfer hook,
    # which trainer=gpu points at the device augmentation.
    overrides = [o for o in TINY if "enable_model_summary" not in o]
    metrics = train(compose_config(tmp_path, [*overrides, "trainer.max_epochs=1", "data.augment_on=device",
                                              "data.source.train_size=128"]))
    assert np.isfinite(metrics["test/mae"])


def test_last_checkpoint_is_written_every_epoch_even_when_the_best_is_not(tmp_path):
    # The best checkpoint is only considered every 2nd epoch here; last.ckpt must still follow every epoch
    # (Lightning's own save_last writes it only when a best checkpoint was saved in that epoch).
    cfg = compose_config(tmp_path, [*TINY, "trainer.max_epochs=3", "data.source.train_size=128",
                                    "+callbacks.model_checkpoint.every_n_epochs=2"])
    metrics = train(cfg)
    last = Path(metrics["best_model_path"]).parent / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 2
    assert Path(metrics["best_model_path"]).name == "epoch001.ckpt"


def test_labels_the_head_and_the_monitor_need_are_checked_before_the_run(tmp_path):
    from types import SimpleNamespace

    from agelab.callbacks.label_check import require_labels

    def data(train_ages, val_ages):
        return SimpleNamespace(datasets={"train": SimpleNamespace(ages=np.array(train_ages, np.float32)),
                                         "val": SimpleNamespace(ages=np.array(val_ages, np.float32))})

    groups_only = data([np.nan] * 5, [np.nan] * 3)  # Adience-like: age groups, no ages
    with pytest.raises(ConfigError, match="none of the 5 training faces has one .* use head=ce"):
        require_labels("val/mae", "age", groups_only)
    with pytest.raises(ConfigError, match=r"monitor=val/mae needs ages in the val split, and none of its 3 faces"):
        require_labels("val/mae", "group", groups_only)
    require_labels("val/acc", "group", groups_only)  # the group classifier picked by accuracy: fine
    require_labels("val/mae", "age", data([3.0, np.nan], [np.nan, 40.0]))  # some ages on each side: fine


def test_runs_are_tagged_with_the_commit_of_the_code_not_of_the_current_folder(tmp_path, monkeypatch):
    import subprocess

    from agelab.tracking import git_commit

    package = Path(__file__).resolve().parents[1] / "agelab"
    expected = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(tmp_path)  # not a checkout
    assert git_commit() == (expected or "unknown")


def test_a_second_training_in_the_same_folder_stops_with_one_line(tmp_path):
    from agelab.run_folder import lock_checkpoint_folder

    cfg = compose_config(tmp_path, [*TINY, "trainer.max_epochs=1"])
    folder = Path(cfg.callbacks.model_checkpoint.dirpath)
    held = lock_checkpoint_folder(folder)  # as a training running there holds it
    try:
        with pytest.raises(ConfigError, match=f"^another training is running in {re.escape(str(folder))}; "):
            train(cfg)
    finally:
        held.release()
    assert not list(folder.glob("*.ckpt"))  # the refused command wrote nothing there
    assert train(cfg)["test/mae"] > 0  # free again


@pytest.mark.parametrize("stop_in", ["test", "figures"])
def test_a_run_stopped_in_the_test_of_a_longer_fit_is_tested_again(tmp_path, monkeypatch, stop_in):
    import pytorch_lightning as pl

    from agelab.callbacks.figures import CSCurveFigure

    first = train(compose_config(tmp_path, [*TINY, "trainer.max_epochs=1"]))
    last = Path(first["best_model_path"]).parent / "last.ckpt"
    client = client_for(tmp_path)
    run_id = only_run(client).info.run_id
    steps = [m.step for m in client.get_metric_history(run_id, "test/mae")]

    def stopped(*args, **kwargs):
        raise RuntimeError("stopped")  # as a kill there: the fit ended; nothing (or only the scores) tested

    longer = compose_config(tmp_path, [*TINY, "trainer.max_epochs=2", f"ckpt_path={last}"])
    if stop_in == "test":
        monkeypatch.setattr(pl.Trainer, "test", stopped)
    else:  # the test's scores are logged, its CS curve is not
        monkeypatch.setattr(CSCurveFigure, "on_test_end", stopped)
    with pytest.raises(RuntimeError, match="stopped"):
        train(longer)
    monkeypatch.undo()
    run = only_run(client)
    # FINISHED by Lightning when the fit ended (a kill in the test leaves it so); FAILED by the error in the test
    assert run.info.status == ("FINISHED" if stop_in == "test" else "FAILED")
    assert run.data.tags["agelab.complete"] == "false"

    # The 1-epoch test's figures are not this checkpoint's: the 2-epoch one is tested and logged.
    again = train(compose_config(tmp_path, [*TINY, "trainer.max_epochs=2", f"ckpt_path={last}"]))
    assert [m.step for m in client.get_metric_history(run_id, "test/mae")] == [steps[0], 2 * steps[0]]
    assert len(client.get_metric_history(run_id, "test/cs_curve")) == 2 * 16
    assert "val/mae" in again and "train/loss" in again  # the fit's metrics, logged by the process before
    assert only_run(client).data.tags["agelab.complete"] == "true"


def test_a_run_from_before_the_completion_tag_counts_as_done_only_once_tested(tmp_path):
    from agelab.resume import finished_run_metrics
    from agelab.tracking import RUN_ID_KEY

    cfg = compose_config(tmp_path, [*TINY, "trainer.max_epochs=1"])
    client = client_for(tmp_path)
    experiment = client.create_experiment("agelab")
    run_id = client.create_run(experiment).info.run_id
    client.log_metric(run_id, "val/mae", 9.0)
    client.set_terminated(run_id)  # FINISHED, no tag, no test: stopped in its test
    checkpoint = {RUN_ID_KEY: run_id, "epoch": 0}
    assert finished_run_metrics(cfg, checkpoint) is None
    client.log_metric(run_id, "test/mae", 8.0)
    assert finished_run_metrics(cfg, checkpoint) == {"val/mae": 9.0, "test/mae": 8.0, "best_model_path": ""}
