"""What a training run is told about its data: counts, splits and the per-age balancing, on the
console, in the run's log file and in MLflow."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pandas as pd
from pytorch_lightning.loggers import MLFlowLogger

from agelab.data.balance import balance_per_age
from agelab.data.report import DataReport, data_metrics


def balanced_datamodule():
    # ages 20 (5 faces), 21 (1), 23 (2); low 2, high 3: 20 capped (2 left out), 21 resampled (1 copy),
    # 22 empty, 23 kept
    records = pd.DataFrame({"age": [20] * 5 + [21] + [23] * 2, "split": "train"})
    balanced, report = balance_per_age(records, low=2, high=3, seed=0)
    source = SimpleNamespace(name="demo", kept=8, drop_counts={"no_face": 1}, balance_report=report)
    return SimpleNamespace(source=source, datasets={"train": balanced, "val": records[:1], "test": records[:2]})


def test_the_balancing_is_counted_printed_written_to_the_log_file_and_logged(tmp_path, capsys):
    datamodule = balanced_datamodule()
    metrics = data_metrics(datamodule)
    assert metrics == {"data/kept": 8, "data/dropped/no_face": 1, "data/split/train": 7, "data/split/val": 1,
                       "data/split/test": 2, "data/balance/capped_ages": 1, "data/balance/resampled_ages": 1,
                       "data/balance/empty_ages": 1, "data/balance/copies": 1, "data/balance/left_out": 2}

    logger = MLFlowLogger(experiment_name="data-report", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    trainer = SimpleNamespace(datamodule=datamodule, loggers=[logger], is_global_zero=True)
    log_file = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(log_file)
    try:
        DataReport().setup(trainer, None, "fit")
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()

    printed = capsys.readouterr().out
    line = ("train split balanced per age: ages capped 1 (faces left out 2), resampled 1 (copies added 1), "
            "without faces 1")
    assert "demo: kept 8 of 9" in printed and "splits: train 7, val 1, test 2" in printed and line in printed
    assert printed.strip() in (tmp_path / "train.log").read_text()  # the console's lines, in the log
    client, run_id = logger.experiment, logger.run_id
    assert client.get_run(run_id).data.metrics == metrics
    table = pd.read_csv(client.download_artifacts(run_id, "data/balance_per_age.csv", str(tmp_path)))
    assert table.values.tolist() == [[20, 5, 3, "capped"], [21, 1, 2, "resampled"], [22, 0, 0, "empty"],
                                     [23, 2, 2, "kept"]]
