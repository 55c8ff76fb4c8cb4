"""CrossDatasetSource: train/val from one dataset, test from another, images joined without copying."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest

from agelab.data.cross import ConcatImages, CrossDatasetSource
from agelab.data.datamodule import FaceDataModule
from agelab.data.readers import read_imdb, read_morph2
from agelab.errors import ConfigError, DataError


class ArraySource:
    """Images whose pixels are their own row number plus ``base``; records with given splits."""

    def __init__(self, splits, base=0, size=4, name="", drops=None):
        n = len(splits)
        self.images = (np.arange(n, dtype=np.uint8) + base)[:, None, None, None].repeat(size, 1).repeat(size, 2).repeat(3, 3)
        self.records = pd.DataFrame({"age": np.arange(n, dtype=float) + base, "group": 0, "split": splits})
        self.name, self.prepared = name, 0
        if drops is not None:
            self.drop_counts, self.kept = drops, n

    def prepare(self):
        self.prepared += 1

    def load(self):
        return self.images, self.records.copy()


def test_train_source_gives_train_and_val_test_source_gives_test():
    train = ArraySource(["train"] * 5 + ["val"] * 2 + ["test"] * 3, name="imdb", drops={"no_face": 4})
    test = ArraySource(["train", "test", "val", "test"], base=100, name="morph2", drops={"no_face": 1, "too_small": 2})
    source = CrossDatasetSource(train, test)
    assert source.prepare() == {"train/no_face": 4, "test/no_face": 1, "test/too_small": 2}
    assert train.prepared == test.prepared == 1 and source.kept == 14 and source.name == "imdb+morph2"
    images, records = source.load()
    assert len(images) == 14 and images.shape == (14, 4, 4, 3)
    counts = records["split"].value_counts().to_dict()
    assert counts == {"train": 5, "test": 4, "val": 2}  # the train dataset's own test rows are left out
    assert source.left_out == {"train_source_test_rows": 3, "test_source_other_rows": 0}
    # Every record's index is its image row in the joined array.
    for row, age in zip(records.index, records["age"]):
        assert images[row][0, 0, 0] == age
    test_rows = records.index[records["split"] == "test"].to_numpy()
    assert (images[test_rows][:, 0, 0, 0] == [100, 101, 102, 103]).all()
    assert set(records.loc[records["split"] == "test", "dataset"]) == {"test"}


def test_test_splits_narrow_the_test_dataset():
    source = CrossDatasetSource(ArraySource(["train", "val"]), ArraySource(["train", "test", "test"], base=50),
                                test_splits=["test"])
    _, records = source.load()
    assert records.loc[records["split"] == "test", "age"].tolist() == [51.0, 52.0]
    assert source.left_out["test_source_other_rows"] == 1


def test_concat_images_reads_rows_slices_and_whole():
    a, b = np.zeros((3, 2, 2, 3), np.uint8), np.ones((2, 2, 2, 3), np.uint8)
    joined = ConcatImages(a, b)
    assert joined[2].max() == 0 and joined[3].min() == 1 and joined[-1].min() == 1
    assert joined[np.array([4, 0, 3])][:, 0, 0, 0].tolist() == [1, 0, 1]
    assert joined[1:4][:, 0, 0, 0].tolist() == [0, 0, 1]
    assert np.ascontiguousarray(joined).shape == (5, 2, 2, 3)
    with pytest.raises(IndexError):
        joined[5]
    with pytest.raises(DataError, match="crop both for the same model"):
        ConcatImages(a, np.ones((2, 3, 3, 3), np.uint8))


def test_bad_configs_fail_with_one_line():
    with pytest.raises(ConfigError, match="data.source.test must be a face source"):
        CrossDatasetSource(ArraySource(["train"]), object())
    with pytest.raises(ConfigError, match="test_splits"):
        CrossDatasetSource(ArraySource(["train"]), ArraySource(["test"]), test_splits=["holdout"])
    with pytest.raises(DataError, match="no rows in splits"):
        CrossDatasetSource(ArraySource(["train", "val"]), ArraySource(["train"]), test_splits=["test"]).load()


def test_datamodule_batches_from_both_datasets():
    source = CrossDatasetSource(ArraySource(["train"] * 6 + ["val"] * 2), ArraySource(["test"] * 3, base=10))
    datamodule = FaceDataModule(source, train_transform=lambda image: {"image": image},
                                eval_transform=lambda image: {"image": image}, batch_size=4)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.test_dataloader()))
    assert batch["age"].tolist() == [10.0, 11.0, 12.0]
    assert batch["image"][:, 0, 0, 0].tolist() == [10, 11, 12]
    assert len(datamodule.datasets["train"]) == 6 and len(datamodule.datasets["val"]) == 2


def test_a_missing_test_root_stops_before_the_train_dataset_is_cropped(tmp_path):
    train, test = ArraySource(["train", "val"], name="imdb"), ArraySource(["test"], name="morph2")
    train.reader, test.reader = partial(read_imdb, root=str(tmp_path)), partial(read_morph2, root="/nope")
    source = CrossDatasetSource(train, test, test_root="/nope")
    for step in (source.prepare, source.load):
        with pytest.raises(DataError, match=r"^data\.source\.test_root /nope is not a folder$"):
            step()
    assert train.prepared == 0
    train.reader = partial(read_imdb, root=str(tmp_path / "gone"))  # the train folder: data.root, as training says
    with pytest.raises(DataError, match=r"^data\.root .*gone is not a folder$"):
        source.prepare()


def test_drops_of_both_datasets_are_named_with_their_role():
    train = ArraySource(["train", "val"], drops={"no_face": 1})
    test = ArraySource(["test"], base=10, drops={"missing_file": 1})
    train.drops = pd.DataFrame({"path": ["/imdb/a.jpg"], "reason": ["no_face"]})
    test.drops = pd.DataFrame({"path": ["/morph/b.jpg"], "reason": ["missing_file"]})
    source = CrossDatasetSource(train, test)
    source.prepare()
    assert source.drops.values.tolist() == [["/imdb/a.jpg", "train/no_face"], ["/morph/b.jpg", "test/missing_file"]]
