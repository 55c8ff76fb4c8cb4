"""The figure callbacks: a tiny synth training logs every figure to its MLflow run, and the numbers
behind them (confusion counts, the worst faces, the learning curves) are the right ones."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger
from torch.utils.flop_counter import FlopCounterMode

from agelab.callbacks import ConfusionMatrixFigure, MAEBreakdownFigure, WorstPredictionsFigure
from agelab.callbacks.confusion import confusion_record
from agelab.callbacks.error_breakdown import breakdown
from agelab.callbacks.figures import cs_curve_figure
from agelab.callbacks.learning_curves import epoch_of_step, run_curves
from agelab.callbacks.worst_predictions import prediction_errors, to_uint8_images
from agelab.checkpoint import load_module
from agelab.groups import GROUP_NAMES, age_to_group
from agelab.metrics import BAND_NAMES
from agelab.training import train

from conftest import TINY, compose_config

# Under 500 faces in all (generated in-process), a narrow CNN (the figures don't care which model),
# 2 epochs so the learning curves have two points.
SMALL_RUN = [*TINY, "data.source.train_size=256", "data.source.val_size=64", "data.source.test_size=96",
             "trainer.max_epochs=2", "model=simple_cnn", "model.channels=[8,16,32]", "model.hidden=64"]
TEST_SIZE = 96
TRAINING_FIGURES = {"figures/cs_curve.png", "figures/confusion_matrix.png", "figures/confusion_matrix_normalized.png",
                    "figures/mae_by_age.png", "figures/mae_by_gender.png", "figures/learning_curves.png",
                    "figures/worst_predictions.png", "figures/spread_reliability.png"}


def trained_run(tmp_path_factory) -> SimpleNamespace:
    """One tiny training per test session (test_eval.py reuses it): its root, checkpoint, run, client."""
    root = tmp_path_factory.getbasetemp() / "figures_run"
    done = root / "done.json"
    if not done.is_file():
        metrics = train(compose_config(root, SMALL_RUN))
        done.write_text(json.dumps({"ckpt": metrics["best_model_path"]}))
    client = MlflowClient(f"sqlite:///{root.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("agelab")
    run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])[0]  # trained first
    return SimpleNamespace(root=root, ckpt=json.loads(done.read_text())["ckpt"], client=client, run=run,
                           run_id=run.info.run_id)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_run(tmp_path_factory)


def download(trained, artifact: str) -> Path:
    return Path(trained.client.download_artifacts(trained.run_id, artifact, str(trained.root / "downloads")))


def test_training_calibrates_the_spread_on_validation_and_tests_its_coverage(trained):
    metrics = trained.run.data.metrics
    assert metrics["val/spread_scale"] > 0 and metrics["val/spread_scale"] != 1.0
    assert 0 <= metrics["test/spread_coverage"] <= 1
    from agelab.checkpoint import load_module

    module, _ = load_module(trained.ckpt)  # the checkpoint carries the scale its validation set
    assert module.head.spread_scale.item() != 1.0


def test_a_training_run_logs_every_figure_as_a_real_png(trained):
    logged = {a.path: a.file_size for a in trained.client.list_artifacts(trained.run_id, "figures")}
    assert set(logged) == TRAINING_FIGURES  # synth faces have a gender but no race: no mae_by_race
    for artifact in TRAINING_FIGURES:
        image = cv2.imread(str(download(trained, artifact)))
        assert image is not None, artifact
        height, width, _ = image.shape
        assert height >= 300 and width >= 400, (artifact, image.shape)
        assert logged[artifact] > 10_000 and image.std() > 10, artifact  # drawn, not blank


def test_the_run_records_the_networks_flops_per_face(trained):
    module, _ = load_module(trained.ckpt)
    with FlopCounterMode(display=False) as counter:
        module.logits(torch.zeros(1, 3, module.model.input_size, module.model.input_size))
    logged = trained.run.data.metrics["model/mflops"]
    assert logged == pytest.approx(counter.get_total_flops() / 1e6) and logged > 1


def test_the_confusion_json_is_the_test_sets_8x8_confusion(trained):
    record = json.loads(download(trained, "metrics/confusion_matrix.json").read_text())
    counts = np.array(record["counts"])
    assert record["labels"] == list(GROUP_NAMES) and counts.shape == (8, 8)
    assert counts.sum() == record["n"] == TEST_SIZE
    normalized = np.array(record["normalized"])
    np.testing.assert_allclose(normalized.sum(1)[counts.sum(1) > 0], 1.0, atol=1e-9)

    # The same matrix from the checkpoint's own predictions on the test faces (age head: predicted
    # ages mapped to groups), so the figure shows what the model did.
    module, cfg = load_module(trained.ckpt)
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    expected = np.zeros((8, 8), dtype=np.int64)
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            pred = age_to_group(module(batch["image"])["age"].numpy())
            np.add.at(expected, (batch["group"].numpy(), pred), 1)
    np.testing.assert_array_equal(counts, expected)
    # Exact accuracy is the diagonal's share, as the run's test/acc says.
    assert np.trace(counts) / TEST_SIZE == pytest.approx(trained.run.data.metrics["test/acc"], abs=1e-6)


def test_learning_curves_come_from_the_runs_history(trained):
    curves = run_curves(trained.client, trained.run_id)
    assert {"loss", "mae", "cs5", "acc"} <= set(curves)
    for quantity in ("loss", "mae"):
        for stage in ("train", "val"):
            points = curves[quantity][stage]
            assert [epoch for epoch, _ in points] == [0, 1]
            assert points[-1][1] == pytest.approx(trained.run.data.metrics[f"{stage}/{quantity}"])


def test_epoch_of_a_step_prefers_the_epoch_that_ended_there():
    history = [SimpleNamespace(step=8, value=0.0), SimpleNamespace(step=8, value=1.0), SimpleNamespace(step=16, value=1.0)]
    assert epoch_of_step(history) == {8: 0, 16: 1}


class FakeModule:
    """Just enough of AgeModule for WorstPredictionsFigure: a head whose output decodes to ages."""

    def __init__(self, task="age"):
        self.head = torch.nn.Identity()
        self.head.task = task
        self.head.decode = lambda logits: {"age": logits[:, 0]} if task == "age" else {
            "group": logits.argmax(1), "probs": logits.softmax(1)}


def test_worst_predictions_keep_the_k_largest_errors_over_all_batches():
    torch.manual_seed(0)
    callback, module = WorstPredictionsFigure(k=5), FakeModule()
    callback.on_test_start(None, module)
    all_errors = []
    for batch_idx in range(4):
        ages = torch.rand(8) * 80
        ages[0] = float("nan")  # unknown ages are never "worst"
        batch = {"image": torch.rand(8, 3, 4, 4) * 2 - 1, "age": ages}
        pred = module.head(torch.rand(8, 1) * 80)  # the test step's head call, seen by the hook
        callback.on_test_batch_end(None, module, None, batch, batch_idx)
        all_errors += [e for e in (pred[:, 0] - ages).abs().tolist() if np.isfinite(e)]
    assert callback.keys.tolist() == pytest.approx(sorted(all_errors, reverse=True)[:5])
    assert callback.images.shape == (5, 4, 4, 3) and callback.images.dtype == torch.uint8
    assert (callback.pred - callback.truth).abs().tolist() == pytest.approx(callback.keys.tolist())
    captions = callback.captions("age")
    assert len(captions) == 5 and captions[0].startswith("true ")
    callback.on_test_end(SimpleNamespace(is_global_zero=False), module)  # not rank zero: nothing logged
    assert callback._hook is None  # the hook is gone after the test


def test_group_heads_rank_by_group_distance_then_confidence():
    probs = torch.tensor([[0.1, 0.8, 0.1] + [0] * 5,        # true 0, pred 1: off by one, confident
                          [0.0, 0.0, 0.0, 0.9, 0.1, 0, 0, 0],  # true 0, pred 3: off by three
                          [0.45, 0.55] + [0] * 6,              # true 0, pred 1: off by one, unsure
                          [0.9, 0.1] + [0] * 6])               # true 0, right
    decoded = {"group": probs.argmax(1), "probs": probs}
    keys, truth, pred = prediction_errors(decoded, {"group": torch.tensor([0, 0, 0, -1])}, "group")
    assert keys.argsort(descending=True).tolist()[:3] == [1, 0, 2]
    assert keys[3] == -np.inf  # unknown group


def test_images_are_denormalised_from_minus_one_to_one():
    images = torch.tensor([-1.0, 0.0, 1.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
    pixels = to_uint8_images(images)
    assert pixels.shape == (1, 2, 2, 3) and pixels[0, 0, 0].tolist() == [0, 128, 255]


def test_confusion_record_and_breakdown_labels():
    record = confusion_record(torch.eye(8, dtype=torch.long) * 3)
    assert record["n"] == 24 and record["normalized"][2][2] == 1.0 and record["normalized"][2][3] == 0.0
    results = {"mae_age_70plus": torch.tensor(9.0), "mae_age_0-9": torch.tensor(2.0)}
    assert breakdown(results, "mae_age", BAND_NAMES) == {"0-9": 2.0, "70+": 9.0}  # band order, "70+" label


def test_the_normalised_confusion_figure_writes_each_row_as_shares():
    from agelab.callbacks.figures import confusion_figure, plt

    counts = np.diag([30, 10, 0, 0, 0, 0, 0, 0])
    counts[1, 0] = 30  # true group 1: 30 predicted as group 0, 10 right
    fig = confusion_figure(counts, [str(g) for g in range(8)], normalized=True)
    cells = [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)
    assert cells[:2] == ["1.00", "0.00"] and cells[8:10] == ["0.75", "0.25"]


def test_gender_and_race_charts_appear_when_the_data_has_them(trained):
    logger = MLFlowLogger(experiment_name="figures-unit", tracking_uri=trained.client.tracking_uri,
                          artifact_location=(trained.root / "mlruns").as_uri())
    trainer = SimpleNamespace(loggers=[logger], is_global_zero=True)
    results = {"mae": torch.tensor(5.0), "mae_age_20-29": torch.tensor(4.0), "mae_gender_f": torch.tensor(4.5),
               "mae_gender_m": torch.tensor(5.5), "mae_race_white": torch.tensor(3.0), "mae_race_asian": torch.tensor(7.0)}
    MAEBreakdownFigure().on_test_end(trainer, SimpleNamespace(test_results=results))
    logged = {a.path for a in trained.client.list_artifacts(logger.run_id, "figures")}
    assert logged == {"figures/mae_by_age.png", "figures/mae_by_gender.png", "figures/mae_by_race.png"}
    # Without group data (no test_confusion) the confusion callback logs nothing.
    ConfusionMatrixFigure().on_test_end(trainer, SimpleNamespace(test_confusion=None))
    assert not trained.client.list_artifacts(logger.run_id, "metrics")


def test_one_epoch_of_learning_curves_gets_whole_number_ticks():
    from agelab.callbacks.figures import learning_curves_figure

    fig = learning_curves_figure({"loss": {"train": [(0, 2.0)], "val": [(0, 2.5)]}})
    ticks = [t for t in fig.axes[0].get_xticks() if fig.axes[0].get_xlim()[0] <= t <= fig.axes[0].get_xlim()[1]]
    assert 0 in ticks and all(float(t).is_integer() for t in ticks)


def test_cs_curve_figure_still_draws():
    fig = cs_curve_figure(np.linspace(0, 1, 16))
    assert list(fig.axes[0].lines[0].get_xdata()) == list(range(16))
    assert fig.axes[0].lines[0].get_ydata()[-1] == 100.0  # in percent
