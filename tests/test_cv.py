"""K-fold cross-validation: folds dealt from any source, nested MLflow runs, mean ± std, summed confusion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from agelab.cv import PARENT_TAG, aggregate, cross_validate
from agelab.data.kfold import KFoldSource, assign_folds
from agelab.errors import ConfigError

from conftest import compose_config

# levi_synth at its smallest: a few faces per fold, one batch of each split per epoch.
TINY_CV = [
    "experiment=levi_synth", "folds=3", "data.source.source.train_size=36", "data.source.source.val_size=12",
    "data.source.source.test_size=12", "data.source.source.image_size=64", "model.input_size=96",
    "data.batch_size=8", "data.num_workers=0", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1", "~callbacks.rich_progress_bar", "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


class ListSource:
    def __init__(self, n, subjects=None):
        self.images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(3, axis=3)
        self.records = pd.DataFrame({"age": np.arange(n, dtype=float), "group": 0,
                                     "subject": subjects if subjects is not None else [f"s{i}" for i in range(n)],
                                     "split": "train"})

    def load(self):
        return self.images, self.records.copy()


def test_folds_test_every_face_once_and_keep_subjects_together():
    subjects = [f"p{i // 2}" for i in range(40)]  # two faces per person
    tested = []
    for fold in range(4):
        _, records = KFoldSource(ListSource(40, subjects), folds=4, fold=fold, val_fraction=0.2, seed=3).load()
        test = records[records.split == "test"]
        tested += test.index.tolist()
        assert 8 <= len(test) <= 12  # 20 subjects dealt 5 per fold
        assert set(records.split) == {"train", "val", "test"}
        by_subject = records.groupby("subject")["split"].nunique()
        assert (by_subject == 1).all()  # a person never sits on two sides
    assert sorted(tested) == list(range(40))
    # The draw depends on the seed only, not on the row order.
    shuffled = ListSource(40, subjects)
    shuffled.records = shuffled.records.sample(frac=1, random_state=0)
    assert (assign_folds(shuffled.records, 4, 3) == pd.Series(assign_folds(ListSource(40, subjects).records, 4, 3))
            .reindex(shuffled.records.index).to_numpy()).all()


def test_kfold_source_refuses_bad_folds():
    with pytest.raises(ConfigError, match="data.fold must be an integer in 0..2"):
        KFoldSource(ListSource(10), folds=3, fold=3)
    with pytest.raises(ConfigError, match="at least 12 subjects"):
        KFoldSource(ListSource(10), folds=12, fold=0).load()


def test_aggregate_gives_mean_and_population_std():
    out = aggregate([{"test/mae": 2.0, "val/mae": 1.0, "train/loss": 9.0}, {"test/mae": 4.0, "val/mae": 1.0}])
    assert out == {"test/mae_mean": 3.0, "test/mae_std": 1.0, "val/mae_mean": 1.0, "val/mae_std": 0.0}


def test_cv_nests_one_run_per_fold_under_a_parent_with_mean_and_std(tmp_path):
    cfg = compose_config(tmp_path, TINY_CV, config_name="cv")
    summary = cross_validate(cfg)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("agelab").experiment_id])
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    assert len(runs) == 4 and len(parents) == 1
    parent = parents[0]
    children = sorted((r for r in runs if r is not parent), key=lambda r: int(r.data.tags["cv.fold"]))
    assert [r.data.tags[PARENT_TAG] for r in children] == [parent.info.run_id] * 3
    assert [r.data.tags["cv.fold"] for r in children] == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert parent.data.tags["cv.folds"] == "3" and parent.data.tags["experiment"] == "levi_synth"
    assert parent.data.params["folds"] == "3"

    # The parent's figures are the fold figures' mean and std.
    maes = np.array([r.data.metrics["test/mae"] for r in children])
    accs = np.array([r.data.metrics["test/acc"] for r in children])
    assert parent.data.metrics["test/mae_mean"] == pytest.approx(maes.mean(), rel=1e-6)
    assert parent.data.metrics["test/mae_std"] == pytest.approx(maes.std(), rel=1e-6, abs=1e-9)
    assert parent.data.metrics["test/acc_mean"] == pytest.approx(accs.mean(), rel=1e-6)
    assert summary["test/acc_std"] == pytest.approx(accs.std(), abs=1e-9)
    assert {"val/loss_mean", "test/one_off_mean", "test/one_off_std"} <= set(parent.data.metrics)

    # Each fold tested its own faces: 60 pooled faces, 20 per fold, every group count summed.
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "cv/folds.csv", str(tmp_path)))
    assert table["fold"].tolist() == [0, 1, 2]
    assert table["run_id"].tolist() == [r.info.run_id for r in children]
    confusion = np.loadtxt(client.download_artifacts(parent.info.run_id, "cv/confusion_sum.csv", str(tmp_path)),
                           delimiter=",")
    assert confusion.shape == (8, 8) and confusion.sum() == 60
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "figures")] == [
        "figures/confusion_sum.png", "figures/confusion_sum_normalized.png"]
    # Every fold wrote its checkpoints in its own folder.
    assert all((tmp_path / "output" / f"fold{k}" / "checkpoints" / "last.ckpt").is_file() for k in range(3))


def test_cv_refuses_data_without_folds(tmp_path):
    cfg = compose_config(tmp_path, ["folds=3"], config_name="cv")  # data=synth has fixed splits
    with pytest.raises(ConfigError, match="does not read data.fold"):
        cross_validate(cfg)
    with open_dict(cfg):
        cfg.folds = 1
    with pytest.raises(ConfigError, match="folds must be an integer >= 2"):
        cross_validate(cfg)
