"""Loader workers: they start inside a job of the local parallel sweep, and a memory-mapped cache
travels to a spawned worker as its file, not as a copy of every face (a cache rebuilt meanwhile is
an error naming it)."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
from hydra.utils import instantiate

from conftest import compose_config

SIZES = ["data.source.train_size=16", "data.source.val_size=8", "data.source.test_size=8", "data.source.image_size=64"]


def datamodule_in(root: Path, *overrides: str):
    cfg = compose_config(root, [f"paths.root_dir={root}", *SIZES, *overrides])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def first_batch_in_this_process(root: str) -> tuple[str, int]:
    """(the process's start method, the size of the first training batch) read with one loader worker."""
    loader = datamodule_in(Path(root), "data.num_workers=1", "data.batch_size=16").train_dataloader()
    return multiprocessing.get_start_method(), len(next(iter(loader))["image"])


def test_loader_workers_start_inside_a_job_of_the_local_parallel_sweep(tmp_path):
    # hydra/launcher=local runs each job in a joblib (loky) process, whose start method torch's
    # loader workers cannot start with: every job with data.num_workers > 0 failed.
    from joblib import Parallel, delayed

    done = Parallel(n_jobs=2, backend="loky")(delayed(first_batch_in_this_process)(str(tmp_path)) for _ in range(2))
    assert done == [("loky", 16), ("loky", 16)]


def test_a_memory_mapped_cache_travels_as_its_file(tmp_path):
    dataset = datamodule_in(tmp_path).train_dataloader().dataset
    assert isinstance(dataset.images, np.memmap)
    blob = pickle.dumps(dataset)
    assert np.asarray(dataset.images[0]).tobytes() not in blob and len(blob) < dataset.images.nbytes
    clone = pickle.loads(blob)
    assert isinstance(clone.images, np.memmap) and clone.images.shape == dataset.images.shape
    np.testing.assert_array_equal(np.asarray(clone.images), np.asarray(dataset.images))
    assert clone[5]["age"] == dataset[5]["age"]


def test_both_caches_of_a_cross_dataset_travel_as_files_and_a_rebuilt_one_is_named(tmp_path):
    import pandas as pd
    import pytest

    from agelab.data.cache import load_cache, save_cache
    from agelab.data.cross import ConcatImages
    from agelab.errors import DataError

    faces = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    for name in ("train", "test"):
        save_cache(tmp_path / name, faces, pd.DataFrame({"age": range(40)}))
    both = ConcatImages(load_cache(tmp_path / "train")[0], load_cache(tmp_path / "test")[0])
    blob = pickle.dumps(both)
    assert len(blob) < 2000  # two file references, not 2 x 123 KB of faces
    np.testing.assert_array_equal(pickle.loads(blob)[[0, 45]], faces[[0, 5]])
    save_cache(tmp_path / "test", faces[::-1], pd.DataFrame({"age": range(40)}))  # rebuilt under the run
    with pytest.raises(DataError, match=r"test/images.npy: the face cache was rebuilt while it was in use"):
        pickle.loads(blob)
