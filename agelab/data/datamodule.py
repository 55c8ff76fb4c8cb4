"""LightningDataModule: a face source split into train/val/test, augmented, batched."""

from __future__ import annotations

import multiprocessing
import warnings
from typing import Callable

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from agelab.data.attributes import gender_codes, race_codes
from agelab.data.readers.base import require_root
from agelab.data.workers import loader_worker_init
from agelab.errors import ConfigError, require_int

AUGMENT_RNG_KEY = "device_augment_rng"


class FaceDataset(Dataset):
    """Faces from a uint8 image array (often a memory map) and their records."""

    def __init__(self, images: np.ndarray, records: pd.DataFrame, transform: Callable):
        self.images = images
        self.index = records.index.to_numpy()
        self.ages = records["age"].to_numpy(np.float32) if "age" in records else np.full(len(records), np.nan, np.float32)
        self.groups = records["group"].fillna(-1).to_numpy(np.int64) if "group" in records else np.full(len(records), -1)
        self.genders, self.races = gender_codes(records), race_codes(records)  # -1 where unknown
        self.transform = transform

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        image = np.asarray(self.images[self.index[i]])
        return {"image": self.transform(image=image)["image"], "age": self.ages[i], "group": self.groups[i],
                "gender": self.genders[i], "race": self.races[i]}


class FaceBatchDataset(FaceDataset):
    """Whole uint8 batches from one gather on the (memory-mapped) array; indexed by a list of rows.

    For ``augment_on=device``: the loader does no per-image work, the device augments the batch.
    """

    def __init__(self, images, records, transform, rows_only: bool = False):
        super().__init__(images, records, transform)
        self.rows_only = rows_only  # the images already sit on the device: ship cache rows, not pixels

    def __getitem__(self, positions):
        positions = np.sort(np.asarray(positions))  # sequential reads from the memory map
        rows = self.index[positions]
        batch = {key: torch.from_numpy(values[positions]) for key, values in
                 (("age", self.ages), ("group", self.groups), ("gender", self.genders), ("race", self.races))}
        if self.rows_only:
            batch["rows"] = torch.from_numpy(rows.astype(np.int64))
        else:
            batch["image"] = torch.from_numpy(np.ascontiguousarray(self.images[rows]))
        return batch


class ShardBatches(UnrepeatedDistributedSampler):
    """Under DDP, this process's share of the evaluation faces as batches of row lists (for
    ``augment_on=device``, whose dataset takes a list of rows): every face scored once over all
    processes, the last batches a few faces short instead of padded with repeats. Being a
    DistributedSampler, Lightning leaves it as it is."""

    def __init__(self, dataset: Dataset, batch_size: int, **shard):
        super().__init__(dataset, shuffle=False, **shard)
        self.batch_size = batch_size

    def __iter__(self):
        rows = list(super().__iter__())
        return iter([rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)])

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)


def loader_start_method() -> str | None:
    """How loader workers start: None (torch's default) unless this process runs under a start method
    torch cannot start its workers with, as in a job of the local parallel sweep (joblib's loky
    processes set "loky"); then fork where the platform has it (the memory-mapped cache is shared,
    not pickled), else spawn."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method in (None, "fork", "spawn", "forkserver"):
        return None
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class FaceDataModule(pl.LightningDataModule):
    def __init__(self, source, train_transform: Callable, eval_transform: Callable, batch_size: int = 64,
                 eval_batch_size: int | None = None, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = False, max_age: int = 100, root: str | None = None,
                 fold: int | None = None, folds: int | None = None, augment_on: str = "cpu", device_train_transform: Callable | None = None,
                 device_eval_transform: Callable | None = None, device_cache: bool = False, layout: str | None = None):
        super().__init__()
        # Facts about the data that other config nodes interpolate: the oldest label (age heads size
        # their outputs from it), the dataset folder and the test fold (the source reads them).
        self.max_age, self.root, self.fold = max_age, root, fold
        require_root(root, layout)  # before any run starts
        if fold is not None and (not isinstance(fold, int) or fold < 0 or (folds is not None and fold >= folds)):
            span = f"0..{folds - 1}" if folds is not None else "an integer >= 0"
            raise ConfigError(f"data.fold must be {span}, got {fold!r}")
        require_int("data.batch_size", batch_size, 1)
        require_int("data.eval_batch_size", eval_batch_size, 1, allow_none=True)
        require_int("data.num_workers", num_workers, 0)
        if augment_on not in ("cpu", "device"):
            raise ConfigError(f"data.augment_on must be 'cpu' or 'device', got {augment_on!r}")
        if augment_on == "device" and (device_train_transform is None or device_eval_transform is None):
            raise ConfigError("data.augment_on=device needs data.device_train_transform and data.device_eval_transform")
        self.source = source
        self.augment_on = augment_on
        self.device_transforms = {"train": device_train_transform, "eval": device_eval_transform}
        # augment_on=device only: copy the whole uint8 cache to the device once (when it fits) and
        # gather batches there, so the loader moves a few indices instead of pixels.
        self.device_cache = device_cache and augment_on == "device"
        self._images = None
        self._device_images: torch.Tensor | None = None
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.loader_args = {"num_workers": num_workers, "pin_memory": pin_memory,
                            "persistent_workers": persistent_workers and num_workers > 0,
                            "multiprocessing_context": loader_start_method() if num_workers > 0 else None,
                            "worker_init_fn": loader_worker_init}  # workers end with this process
        self.datasets: dict[str, FaceDataset] = {}
        self._source_prepared = False

    def prepare_data(self):
        """Build the source's face cache. Lightning calls this on one process per node before
        ``setup`` runs on all of them, so under DDP only one process crops; the others reuse the cache."""
        prepare = getattr(self.source, "prepare", None)
        if callable(prepare) and not self._source_prepared:
            prepare()
            self._source_prepared = True  # fit then test: read and check the dataset once

    def setup(self, stage: str | None = None):
        if self.datasets:
            return
        images, records = self.source.load()
        self._images = images
        needed = ("test",) if stage == "test" else ("train", "val", "test")  # a test needs no training faces
        for split in ("train", "val", "test"):
            part = records[records["split"] == split]
            if len(part) == 0:
                if split in needed:
                    raise ConfigError(f"the {split} split of the data is empty")
                continue
            transform = self.train_transform if split == "train" else self.eval_transform
            self.datasets[split] = (FaceBatchDataset(images, part, transform, rows_only=self.device_cache)
                                    if self.augment_on == "device" else FaceDataset(images, part, transform))

    def _loader(self, split: str) -> DataLoader:
        train = split == "train"
        dataset = self.datasets[split]
        batch_size = self.batch_size if train else self.eval_batch_size
        drop_last = train and len(dataset) > batch_size
        processes = self.trainer.world_size if self.trainer is not None else 1
        if not train and processes > 1:  # each face scored once: Lightning's sampler would repeat some
            if len(dataset) < processes:  # a process without a face would never join the loss sync
                raise ConfigError(f"data: the {split} split has {len(dataset)} face(s), fewer than the {processes} "
                                  "processes that score it (trainer.devices x trainer.num_nodes); use fewer "
                                  "devices or a larger split")
            shard = dict(num_replicas=processes, rank=self.trainer.global_rank)
            if self.augment_on == "device":
                return DataLoader(dataset, sampler=ShardBatches(dataset, batch_size, **shard), batch_size=None,
                                  **self.loader_args)
            return DataLoader(dataset, sampler=UnrepeatedDistributedSampler(dataset, shuffle=False, **shard),
                              batch_size=batch_size, **self.loader_args)
        if self.augment_on == "device":
            sampler = RandomSampler(dataset) if train else SequentialSampler(dataset)
            return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None,
                              **self.loader_args)
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=drop_last, **self.loader_args)

    def _images_on(self, device: torch.device) -> torch.Tensor:
        if self._device_images is None or self._device_images.device != device:
            with warnings.catch_warnings():  # the read-only memory map: batches are gathered from it, never written
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                self._device_images = torch.from_numpy(np.ascontiguousarray(self._images)).to(device)
        return self._device_images

    def device_batch(self, batch: dict, training: bool) -> dict:
        """With ``augment_on=device``: gather the uint8 batch (device cache) and augment (train) or
        crop (eval) it on the device the batch is on; otherwise the batch as it is (also anything
        that is not a batch dict, like the model summary's example input)."""
        if self.augment_on == "device" and isinstance(batch, dict):
            if "rows" in batch:
                batch["image"] = self._images_on(batch["age"].device)[batch.pop("rows")]
            batch["image"] = self.device_transforms["train" if training else "eval"](batch["image"])
        return batch

    # The device augmentation's own generator travels in checkpoints (the global ones: RngStateCheckpoint).
    def state_dict(self) -> dict:
        state = self.device_transforms["train"].rng_state() if self.augment_on == "device" else None
        return {} if state is None else {AUGMENT_RNG_KEY: state}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.augment_on == "device" and AUGMENT_RNG_KEY in state_dict:
            self.device_transforms["train"].set_rng_state(state_dict[AUGMENT_RNG_KEY])

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return self.device_batch(batch, training=self.trainer is not None and self.trainer.training)

    def train_dataloader(self):
        return self._loader("train")

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")
