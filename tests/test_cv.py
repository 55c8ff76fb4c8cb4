"""K-fold cross-validation: folds dealt from any source, nested MLflow runs, mean ± std, summed confusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf, open_dict
from PIL import Image

from agelab.cv import aggregate, cross_validate
from agelab.results.runs import PARENT_TAG
from agelab.data.kfold import KFoldSource, assign_folds
from agelab.errors import ConfigError

from conftest import compose_config
from test_faces import draw_face

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


def test_pooled_scores_weigh_each_fold_by_its_faces():
    # One person with 1 photo missed by 10 years, one with 3 photos hit exactly: 2.5 years per photo.
    folds = [{"test/mae": 10.0, "test/n_age": 1.0, "test/acc": 0.0, "test/n_group": 1.0},
             {"test/mae": 0.0, "test/n_age": 3.0, "test/acc": 1.0, "test/n_group": 3.0}]
    out = aggregate(folds)
    assert out["test/mae_mean"] == 5.0 and out["test/mae_pooled"] == 2.5
    assert out["test/acc_pooled"] == 0.75 and "test/n_age_pooled" not in out
    # A leave-one-person-out fold has one person's age bands: each band over the folds that have it.
    bands = aggregate([{"test/mae_age_0-9": 2.0}, {"test/mae_age_0-9": 4.0, "test/mae_age_10-19": 7.0}])
    assert bands == {"test/mae_age_0-9_mean": 3.0, "test/mae_age_0-9_std": 1.0,
                     "test/mae_age_10-19_mean": 7.0}  # one fold: no spread
    # With the faces behind each band, a band is pooled too: 1 face off by 2, 3 faces off by 4 -> 3.5.
    bands = aggregate([{"test/mae_age_0-9": 2.0, "test/n_age_0-9": 1.0},
                       {"test/mae_age_0-9": 4.0, "test/n_age_0-9": 3.0, "test/mae_race_asian": 1.0}])
    assert bands["test/mae_age_0-9_pooled"] == 3.5 and "test/mae_race_asian_pooled" not in bands


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
    confusion = pd.read_csv(client.download_artifacts(parent.info.run_id, "cv/confusion_sum.csv", str(tmp_path)),
                            index_col=0)
    assert list(confusion.index) == list(confusion.columns) == ["0-2", "4-6", "8-13", "15-20", "25-32", "38-43",
                                                                 "48-53", "60+"]
    assert parent.data.params["data.fold"] == "all"
    confusion = confusion.to_numpy()
    assert confusion.shape == (8, 8) and confusion.sum() == 60
    record = json.loads(Path(client.download_artifacts(parent.info.run_id, "cv/confusion_sum.json", str(tmp_path)))
                        .read_text())
    assert record["counts"] == confusion.astype(int).tolist() and record["n"] == 60
    assert all(sum(row) == pytest.approx(1.0) for row, n in zip(record["normalized"], confusion.sum(1)) if n)
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
    with pytest.raises(ConfigError, match="folds must be null or an integer >= 2"):
        cross_validate(cfg)


def parent_run(root):
    client = MlflowClient(tracking_uri=f"sqlite:///{root.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("agelab").experiment_id])
    assert len(runs) == 1  # the folds' trainings are stubbed: only the parent run
    return runs[0]


@pytest.fixture
def stub_train(monkeypatch):
    """agelab.training.train replaced by a stub that records each fold and returns test/mae = the fold."""
    calls = []

    def train(cfg):
        calls.append((cfg.data.fold, OmegaConf.select(cfg, "data.source.folds")))
        return {"test/mae": float(cfg.data.fold), "val/mae": 1.0}

    monkeypatch.setattr("agelab.training.train", train)
    return calls


def test_cv_runs_every_fold_the_data_has_warns_on_fewer_and_refuses_more(tmp_path, stub_train, caplog):
    root = tmp_path / "fgnet"  # leave one person out over 4 people: 4 folds
    root.mkdir()
    for person in range(1, 5):
        Image.fromarray(draw_face(64, 40, seed=person)).save(root / f"00{person}A{10 + person}.JPG")
    data = ["data=fgnet", f"data.root={root}", "data.source.cropper.min_face_size=32", "data.source.workers=1",
            "+data.source.progress=false"]

    summary = cross_validate(compose_config(tmp_path / "all", data, config_name="cv"))  # folds left out
    assert stub_train == [(0, None), (1, None), (2, None), (3, None)]
    parent = parent_run(tmp_path / "all")
    assert {k: v for k, v in parent.data.tags.items() if k.startswith("cv.")} == {"cv.folds": "4", "cv.data_folds": "4"}
    assert parent.data.params["folds"] == "4" and parent.info.run_name.endswith("-cv4")
    assert summary == {"test/mae_mean": 1.5, "test/mae_std": pytest.approx(1.25 ** 0.5), "val/mae_mean": 1.0,
                       "val/mae_std": 0.0}
    assert parent.data.metrics["test/mae_mean"] == 1.5

    stub_train.clear()
    summary = cross_validate(compose_config(tmp_path / "two", [*data, "folds=2"], config_name="cv"))
    assert stub_train == [(0, None), (1, None)] and summary["test/mae_mean"] == 0.5
    warning = parent_run(tmp_path / "two").data.tags["cv.warning"]
    assert warning.startswith("2 of the 4 folds of data=fgnet (one per subject: leave one person out) run")
    assert warning in caplog.text

    with pytest.raises(ConfigError, match=r"^folds=5 but data=fgnet has 4 folds \(one per subject"):
        cross_validate(compose_config(tmp_path / "five", [*data, "folds=5"], config_name="cv"))
    assert not (tmp_path / "five" / "mlflow.db").exists()


def test_cv_without_folds_deals_five_from_data_without_its_own(tmp_path, stub_train):
    cross_validate(compose_config(tmp_path, ["experiment=levi_synth"], config_name="cv"))
    assert stub_train == [(k, 5) for k in range(5)]
    assert "cv.data_folds" not in parent_run(tmp_path).data.tags


@pytest.mark.parametrize("overrides, error", [
    (["experiment=levi_synth", "model.input_size=64"], "model.input_size=64 is too small for levi_hassner"),
    (["experiment=levi_synth", "trainer.max_epochs=0"], "trainer.max_epochs must be a positive integer"),
    (["data=adience", "data.root={root}", "folds=6"], "folds=6 but data=adience has 5 folds (data.folds); use folds=2..5, "
                                  "or leave folds out to run all 5"),
], ids=["model_input_size", "max_epochs", "adience_6_folds"])
def test_a_config_error_is_one_line_before_any_run(tmp_path, capsys, overrides, error):
    from agelab.cli import run_or_exit

    (tmp_path / "adience").mkdir()  # an empty folder: the folds are refused before any file is read
    cfg = compose_config(tmp_path, [o.format(root=tmp_path / "adience") for o in overrides], config_name="cv")
    with pytest.raises(SystemExit):
        run_or_exit(cross_validate, cfg)
    assert capsys.readouterr().err.startswith(f"error: {error}")
    assert not (tmp_path / "mlflow.db").exists()
