"""Data with age groups only (Adience, a CSV of groups) and what the run asks of it.

An age head would learn nothing there (its loss is 0 without ages) and a ``val/mae`` checkpoint
monitor fails after the first epoch. ``LabelCheck`` looks at the splits once the datamodule is set
up and stops with one line: agelab.train calls it before the MLflow run opens when it runs in one
process; under DDP its setup hook does, after Lightning's prepare step (so one process crops).
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl

from agelab.errors import ConfigError

MONITOR_NEEDS_AGES = ("val/mae", "val/cs5")  # the group metrics (val/acc ...) also take groups


def has_ages(dataset) -> bool:
    return bool(np.isfinite(np.asarray(dataset.ages, dtype=np.float64)).any())


def require_labels(monitor: str | None, head_task: str, datamodule) -> None:
    """ConfigError when the train split has no ages for an age head, or the val split none for ``monitor``."""
    datasets = getattr(datamodule, "datasets", {})
    train, val = datasets.get("train"), datasets.get("val")
    if head_task == "age" and hasattr(train, "ages") and not has_ages(train):
        raise ConfigError(f"the head learns from ages and none of the {len(train.ages)} training faces has one (age "
                          "groups only): use head=ce, the age-group classifier")
    if monitor in MONITOR_NEEDS_AGES and hasattr(val, "ages") and not has_ages(val):
        raise ConfigError(f"callbacks.model_checkpoint.monitor={monitor} needs ages in the val split, and none of "
                          f"its {len(val.ages)} faces has one (age groups only): pick the best epoch by "
                          "callbacks.model_checkpoint.monitor=val/acc callbacks.model_checkpoint.mode=max")


class LabelCheck(pl.Callback):
    def __init__(self, monitor: str | None):
        self.monitor = monitor

    def check(self, pl_module, datamodule) -> None:
        require_labels(self.monitor, pl_module.head.task, datamodule)

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":
            self.check(pl_module, trainer.datamodule)
