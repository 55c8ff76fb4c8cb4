"""Loader workers: they start inside a job of the local parallel sweep, and a memory-mapped cache
travels to a spawned worker as its file, not as a copy of every face."""

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
