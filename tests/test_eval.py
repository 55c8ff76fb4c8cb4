"""agelab.eval: a checkpoint re-tested on its own split gives the training run's numbers, in a new
MLflow run linked to the training run, with the same figures; other splits, data and bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from agelab.errors import ConfigError
from agelab.eval import evaluate_and_print
from agelab.evaluation import (TRAINED_RUN_TAG, checkpoint_data_config, command_line_overrides,
                               data_from_checkpoint, evaluate)
from agelab.results.runs import EVAL_SPLIT_TAG

from conftest import compose_config
from test_figures import TRAINING_FIGURES, trained_run

REPO = Path(__file__).resolve().parents[1]
QUIET = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]
EVAL_FIGURES = TRAINING_FIGURES - {"figures/learning_curves.png"}  # no fitting, no learning curves


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_run(tmp_path_factory)


def eval_config(trained, *overrides):
    return compose_config(trained.root, [*QUIET, *overrides], config_name="eval")


def test_eval_reproduces_the_test_metrics_in_a_linked_run(trained, capsys):
    result = evaluate_and_print(eval_config(trained, f"ckpt={trained.ckpt}"))
    training = trained.run.data.metrics
    for name in ("mae", "cs5", "acc", "one_off", "f1", "loss"):
        assert result.metrics[name] == pytest.approx(training[f"test/{name}"], abs=1e-4), name
    assert result.metrics["n_age"] == 96 and result.data_from_checkpoint

    client = trained.client
    run = client.get_run(result.run_id)
    assert result.run_id != trained.run_id and run.info.status == "FINISHED"
    assert run.info.experiment_id == trained.run.info.experiment_id  # same experiment as the training
    assert run.data.tags[TRAINED_RUN_TAG] == trained.run_id and run.data.tags[EVAL_SPLIT_TAG] == "test"
    assert run.data.tags["model"] == trained.run.data.tags["model"] == "simple_cnn"
    assert run.data.metrics["test/mae"] == pytest.approx(training["test/mae"], abs=1e-4)
    assert {a.path for a in client.list_artifacts(result.run_id, "figures")} == EVAL_FIGURES
    assert [a.path for a in client.list_artifacts(result.run_id, "metrics")] == ["metrics/confusion_matrix.json"]
    assert [a.path for a in client.list_artifacts(result.run_id, "config")] == ["config/eval.yaml"]
    printed = capsys.readouterr().out
    assert "mae_age_" in printed and f"{result.metrics['mae']:.4f}" in printed and result.run_id in printed
    assert result.trained_run_in_store and "not in this store" not in printed


def test_a_store_without_the_training_run_is_said_and_runs_uri_needs_a_store(trained, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"  # another folder: a store of its own, without the training run
    cfg = compose_config(elsewhere, [*QUIET, f"ckpt={trained.ckpt}", "data.source.train_size=32",
                                     "data.source.val_size=16", "data.source.test_size=16"], config_name="eval")
    result = evaluate_and_print(cfg)
    assert result.trained_run_id == trained.run_id and not result.trained_run_in_store
    assert "which is not in this store" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(ConfigError, match="^onnx: eval tests the .ckpt"):
        evaluate(compose_config(tmp_path, ["onnx=model.onnx"], config_name="eval"))
    empty = tmp_path / "empty"
    with pytest.raises(ConfigError, match=r"no MLflow store at .*empty/mlflow.db \(run from the folder"):
        evaluate(compose_config(empty, [f"ckpt=runs:/{trained.run_id}/checkpoints/x.ckpt"], config_name="eval"))
    assert not (empty / "mlflow.db").exists()


def test_eval_of_the_val_split_from_an_mlflow_uri(trained):
    """runs:/<id>/checkpoints/<file> is fetched from the store; split=val matches the best epoch's val/mae."""
    (artifact,) = trained.client.list_artifacts(trained.run_id, "checkpoints")
    result = evaluate(eval_config(trained, f"ckpt=runs:/{trained.run_id}/{artifact.path}", "split=val",
                                  "+data.eval_batch_size=16"))
    best_epoch = torch.load(trained.ckpt, weights_only=True)["epoch"]
    history = {m.step: m.value for m in trained.client.get_metric_history(trained.run_id, "val/mae")}
    val_mae = [value for _, value in sorted(history.items())][best_epoch]
    assert result.metrics["mae"] == pytest.approx(val_mae, abs=1e-4) and result.metrics["n_age"] == 64
    assert trained.client.get_run(result.run_id).data.tags[EVAL_SPLIT_TAG] == "val"


def test_choosing_data_composes_it_for_the_checkpoints_model(trained):
    result = evaluate(eval_config(trained, f"ckpt={trained.ckpt}", "data=synth", "data.source.train_size=16",
                                  "data.source.val_size=16", "data.source.test_size=24", "data.source.image_size=72",
                                  "data.num_workers=0", "data.source.seed=5"))
    assert not result.data_from_checkpoint and result.metrics["n_age"] == 24
    assert trained.client.get_run(result.run_id).data.tags["eval.data"] == "synth"


def test_split_all_tests_on_every_face_of_another_dataset(trained, tmp_path):
    """A dataset used whole as a cross-dataset test: no training faces needed, the run names what it tested."""
    import pandas as pd
    from PIL import Image

    from test_faces import draw_face

    root = tmp_path / "others"
    root.mkdir()
    for i in range(6):
        Image.fromarray(draw_face(200, 100, seed=i)).save(root / f"f{i}.jpg", quality=95)
    pd.DataFrame({"path": [f"f{i}.jpg" for i in range(6)], "age": [20, 30, 40, 50, 60, 70]}).to_csv(
        root / "labels.csv", index=False)
    result = evaluate(eval_config(trained, f"ckpt={trained.ckpt}", "data=csv", f"data.root={root}", "split=all",
                                  "data.num_workers=0", "data.source.workers=1"))
    assert result.metrics["n_age"] == 6 and result.split == "all"
    run = trained.client.get_run(result.run_id)
    assert run.data.tags[EVAL_SPLIT_TAG] == "all" and run.data.tags["eval.data"] == "csv"
    assert run.info.run_name.endswith("-csv-all")
    with pytest.raises(ConfigError, match="^split=all needs a dataset read from files"):
        evaluate(eval_config(trained, f"ckpt={trained.ckpt}", "data=synth", "split=all"))


def test_data_overrides_apply_to_the_checkpoints_data(tmp_path):
    cfg = compose_config(tmp_path, ["data.batch_size=8", "~data.pin_memory", "+data.eval_batch_size=4"],
                         config_name="eval")
    overrides = command_line_overrides(cfg)
    assert data_from_checkpoint(cfg, overrides)
    stored = OmegaConf.create({"data": {"batch_size": 64, "pin_memory": True, "source": {"seed": 0}}})
    data = checkpoint_data_config(stored, overrides)
    assert data.batch_size == 8 and data.eval_batch_size == 4 and "pin_memory" not in data
    assert stored.data.batch_size == 64  # the stored config is left as it was
    chosen = compose_config(tmp_path, ["data=synth"], config_name="eval")
    assert not data_from_checkpoint(chosen, command_line_overrides(chosen))  # data=<name>: compose it
    with open_dict(chosen):
        chosen.data_from_checkpoint = True
    assert data_from_checkpoint(chosen, command_line_overrides(chosen))  # unless told otherwise


def test_a_checkpoint_naming_code_outside_the_allow_list_is_refused(tmp_path):
    marker = tmp_path / "owned"
    bad = tmp_path / "evil.ckpt"
    config = {"model": {"_target_": "os.system", "command": f"touch {marker}"}, "head": {}, "data": {}}
    torch.save({"state_dict": {}, "agelab_config": OmegaConf.to_yaml(OmegaConf.create(config))}, bad)
    with pytest.raises(ConfigError, match=r"model._target_='os.system' is not allowed"):
        evaluate(compose_config(tmp_path, [f"ckpt={bad}"], config_name="eval"))
    assert not marker.exists()
    with pytest.raises(ConfigError, match="split must be one of train, val, test, all"):
        evaluate(compose_config(tmp_path, [f"ckpt={bad}", "split=every"], config_name="eval"))


def test_cli_missing_checkpoint_is_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "agelab.eval", f"paths.root_dir={tmp_path}", "ckpt=/no/such.ckpt"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: no checkpoint at /no/such.ckpt"]
    assert not (tmp_path / "mlflow.db").exists()  # failed before any run was created


@pytest.mark.parametrize("overrides, error", [
    (["data.batch_size=-1"], "error: data.batch_size must be a positive integer, got -1"),
    (["data=adience", "data.root=/no/such/folder"], "error: data.root /no/such/folder is not a folder"),
    pytest.param(["trainer=gpu"], "error: trainer.accelerator=gpu needs a CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_cli_data_overrides_reach_the_evaluation(trained, tmp_path, overrides, error):
    # @hydra.main keeps the command line outside the job's config: eval must still see it
    result = subprocess.run([sys.executable, "-m", "agelab.eval", f"paths.root_dir={tmp_path}", f"ckpt={trained.ckpt}",
                             *overrides], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(error)


def test_a_failure_after_the_run_opened_marks_it_failed(trained, tmp_path):
    from hydra.errors import InstantiationException
    from mlflow.tracking import MlflowClient

    cfg = compose_config(tmp_path, [*QUIET, f"ckpt={trained.ckpt}", "trainer.precision=nonsense"], config_name="eval")
    with pytest.raises(InstantiationException, match="nonsense"):  # Lightning refuses it when it is built
        evaluate(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_the_loss_is_left_out_when_the_split_has_no_targets_for_the_head():
    from agelab.evaluation import scalar_metrics

    loss = {"test/loss": torch.tensor(0.0)}
    group_only = {"n_group": torch.tensor(30.0), "acc": torch.tensor(0.5)}
    assert "loss" not in scalar_metrics(group_only, loss, task="age")  # an age head on Adience's group labels
    assert scalar_metrics(group_only, {"test/loss": torch.tensor(1.5)}, task="group")["loss"] == 1.5
    assert scalar_metrics({"n_age": torch.tensor(9.0)}, {"test/loss": torch.tensor(2.0)})["loss"] == 2.0


def test_other_data_is_cropped_as_the_checkpoint_was_unless_the_command_says(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from agelab.evaluation import composed_data_config

    train_cfg = compose_config(tmp_path, ["data=imdb", f"data.root={tmp_path}"])
    with open_dict(train_cfg):
        train_cfg.data.source.cropper.eye_distance = 0.3  # a model trained with its own framing
    eval_cfg = compose_config(tmp_path, ["data=morph2", f"data.root={tmp_path}", "ckpt=x"], config_name="eval")
    assert composed_data_config(eval_cfg, train_cfg).source.cropper.eye_distance == 0.3
    chosen = OverridesParser.create().parse_overrides(["data=morph2", "data.source.cropper.eye_distance=0.4"])
    assert composed_data_config(eval_cfg, train_cfg, chosen).source.cropper.eye_distance == 0.35  # the command's
    with open_dict(train_cfg):  # a model cut by the earlier pipeline (Haar box x enlarge): one clear line
        train_cfg.data.source.cropper = {"_target_": "agelab.data.faces.FaceCropper", "enlarge": 1.3714}
    with pytest.raises(ConfigError, match="earlier face pipeline"):
        composed_data_config(eval_cfg, train_cfg)
