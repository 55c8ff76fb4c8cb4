"""The LightningModule: model -> head, the optimiser and schedule, and per-stage metrics.

It knows nothing about datasets: batches are dicts with "image" and the targets a head reads.
"""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MetricCollection

from agelab.heads.base import Head
from agelab.metrics import CumulativeScore

STAGES = ("train", "val", "test")


class AgeModule(pl.LightningModule):
    def __init__(self, model: nn.Module, head: Head, optimizer: Callable, scheduler: Callable | None = None,
                 scheduler_interval: str = "epoch", channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last  # NHWC: faster convolutions on CPU and tensor cores
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.head = head
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        # One metric set per stage (ModuleDict keys can't be "train", so prefix them).
        self.stage_metrics = nn.ModuleDict({
            f"m_{stage}": MetricCollection({"mae": MeanAbsoluteError(), "cs": CumulativeScore()}) for stage in STAGES
        })
        self.test_cs_curve: torch.Tensor | None = None

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.model(images))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images -> decoded predictions (see Head.decode)."""
        return self.head.decode(self.logits(images))

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self.logits(batch["image"])
        loss = self.head.loss(logits, batch)
        decoded = self.head.decode(logits.detach())
        self.stage_metrics[f"m_{stage}"].update(decoded["age"], batch["age"].float())
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test",
                 batch_size=len(batch["image"]))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = self.stage_metrics[f"m_{stage}"]
        values = metrics.compute()
        self.log(f"{stage}/mae", values["mae"], prog_bar=stage == "val")
        self.log(f"{stage}/cs5", values["cs"][5])
        if stage == "test":
            self.test_cs_curve = values["cs"].detach().cpu()
        metrics.reset()

    def on_train_epoch_end(self):
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self):
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self):
        self._log_epoch_metrics("test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_factory:  # None or an empty scheduler config
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval}}
