"""The LightningModule: model -> head, the optimiser and schedule, and per-stage metrics.

It knows nothing about datasets: batches are dicts with "image" and the targets a head reads
("age", "group", optionally "gender"). Options beyond the basics:

- ``freeze_epochs``: keep the model (the backbone; the head always trains) frozen for the first N
  epochs — transfer learning from ``model=pretrained``. Frozen BatchNorm layers also keep their
  running statistics.
- ``loss_weights``: ``inverse_frequency`` weights each training sample by 1 / frequency of its
  class (group heads) or 5-year age bin (age heads) in the training set, capped at 10x and scaled
  to mean 1 — against the class imbalance that starves old ages. Validation/test losses are plain.
- ``skip_nonfinite_loss``: a NaN/Inf loss stops training with an error naming the stage and batch (at
  most NONFINITE_CHECK_EVERY batches later, or at the end of the epoch); with this on, the batch is skipped instead (no optimiser step, BatchNorm statistics restored) and
  counted in ``<stage>/skipped_batches``.
- ``scheduler_interval``: ``auto`` steps schedules that need a total step count (OneCycleLR: its
  ``total_steps`` is filled from ``trainer.estimated_stepping_batches``) per batch, others per epoch.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from agelab.errors import AgelabError, ConfigError, require_int
from agelab.groups import NUM_GROUPS
from agelab.heads.base import Head
from agelab.heads.ce import group_targets
from agelab.metrics import AgeMetrics, spread_multiple
from agelab.models.summary import blank_face

STAGES = ("train", "val", "test")
LOSS_WEIGHTS = (None, "inverse_frequency")
INTERVALS = ("auto", "epoch", "step")
AGE_WEIGHT_BIN = 5  # years per bin when weighting age targets
MAX_WEIGHT_RATIO = 10.0  # cap on a weight relative to the smallest (the commonest bin's): a handful of faces cannot dominate
LOGGED_EVERY_EPOCH = ("mae", "cs5", "acc", "one_off", "f1")
NONFINITE_CHECK_EVERY = 32  # batches between reads of the on-device NaN/Inf note


class NonFiniteLossError(AgelabError):
    """The loss became NaN or infinite."""


def inverse_frequency_table(labels: np.ndarray, num_bins: int) -> torch.Tensor:
    """Weight per bin: 1 / count, capped at MAX_WEIGHT_RATIO x the smallest, with mean 1 over the samples."""
    counts = np.bincount(labels[(labels >= 0) & (labels < num_bins)], minlength=num_bins).astype(np.float64)
    if counts.sum() == 0:
        return torch.ones(num_bins)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights = np.minimum(weights, MAX_WEIGHT_RATIO * weights[counts > 0].min())
    weights *= counts.sum() / (weights * counts).sum()
    weights[counts == 0] = 1.0
    return torch.tensor(weights, dtype=torch.float32)


def needs_total_steps(factory: Callable) -> bool:
    """Whether a scheduler factory (a partial) still needs its length, like OneCycleLR."""
    if not isinstance(factory, functools.partial):
        return False
    try:
        params = inspect.signature(factory.func).parameters
    except (TypeError, ValueError):
        return False
    given = {k for k, v in factory.keywords.items() if v is not None}
    return "total_steps" in params and not given & {"total_steps", "epochs", "steps_per_epoch"}


def check_optimizer(factory: Callable) -> None:
    """Build the optimiser once on a stand-in parameter, so a wrong value (``optimizer.lr=abc``) stops
    the run at once, in one line, rather than after the data is prepared."""
    try:
        factory(params=[nn.Parameter(torch.zeros(1))])
    except (TypeError, ValueError) as exc:
        name = getattr(getattr(factory, "func", factory), "__name__", "optimizer")
        raise ConfigError(f"optimizer ({name}): {exc}; check the optimizer.* values") from None


class AgeModule(pl.LightningModule):
    def __init__(self, model: nn.Module, head: Head, optimizer: Callable | None, scheduler: Callable | None = None,
                 scheduler_interval: str = "auto", channels_last: bool = False, freeze_epochs: int = 0,
                 loss_weights: str | None = None, skip_nonfinite_loss: bool = False):
        super().__init__()
        if scheduler_interval not in INTERVALS:
            raise ConfigError(f"module.scheduler_interval must be one of {', '.join(INTERVALS)}, got {scheduler_interval!r}")
        if loss_weights not in LOSS_WEIGHTS:
            raise ConfigError(f"module.loss_weights must be null or inverse_frequency, got {loss_weights!r}")
        require_int("module.freeze_epochs", freeze_epochs, 0)
        if optimizer is not None:
            check_optimizer(optimizer)
        self.channels_last = channels_last  # NHWC: faster convolutions on CPU and tensor cores
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.head = head
        self.example_input_array = blank_face(model)  # the summary then shows sizes and FLOPs per face
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.freeze_epochs = freeze_epochs
        self.backbone_frozen = False
        self.loss_weights = loss_weights
        self.register_buffer("weight_table", None, persistent=False)
        self.skip_nonfinite_loss = skip_nonfinite_loss
        self.skipped_batches = dict.fromkeys(STAGES, 0)
        self.first_nonfinite: dict[str, torch.Tensor] = {}  # stage -> (batch index, loss) on the device
        # One metric set per stage (ModuleDict keys can't be "train", so prefix them).
        # The breakdowns by age band, gender and race are logged at test only: train and val skip them;
        # the spread's coverage calibrates on val and is reported at test: training steps skip it.
        self.stage_metrics = nn.ModuleDict({f"m_{stage}": AgeMetrics(breakdowns=stage == "test", spread=stage != "train")
                                            for stage in STAGES})
        # Filled by the test epoch, for figure callbacks and reports.
        self.test_cs_curve: torch.Tensor | None = None
        self.test_confusion: torch.Tensor | None = None
        self.test_results: dict[str, torch.Tensor] = {}

    # ----- inference
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.model(images))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images -> decoded predictions (see Head.decode)."""
        return self.head.decode(self.logits(images))

    # ----- steps
    def _norm_statistics(self) -> list[torch.Tensor]:
        return [buf for m in self.modules() if isinstance(m, _BatchNorm)
                for buf in (m.running_mean, m.running_var, m.num_batches_tracked) if buf is not None]

    def _step(self, batch: dict, batch_idx: int, stage: str) -> torch.Tensor | None:
        # A skipped batch must not leave its NaNs in the BatchNorm running statistics either.
        saved = [buf.clone() for buf in self._norm_statistics()] if self.skip_nonfinite_loss and self.training else None
        logits = self.logits(batch["image"])
        if stage == "train" and self.weight_table is not None:
            batch = {**batch, "weight": self._sample_weights(batch)}
        loss = self.compute_loss(logits, batch, stage)
        if not self.skip_nonfinite_loss:
            self._watch_nonfinite(loss, batch_idx, stage)
        elif not torch.isfinite(loss):  # skipping needs the answer now (a wait for the device each step)
            self.skipped_batches[stage] += 1
            if saved is not None:
                for buf, old in zip(self._norm_statistics(), saved):
                    buf.copy_(old)
            return None
        self.stage_metrics[f"m_{stage}"].update(self.head.decode(logits.detach()), batch)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test",
                 batch_size=len(batch["image"]), sync_dist=True)  # under DDP: over every process's faces
        return loss

    def compute_loss(self, logits: torch.Tensor, batch: dict, stage: str) -> torch.Tensor:
        """The head's loss; subclasses add terms (knowledge distillation adds the teacher's)."""
        return self.head.loss(logits, batch)

    def _watch_nonfinite(self, loss: torch.Tensor, batch_idx: int, stage: str) -> None:
        """Note the first batch of the epoch whose loss is NaN/Inf, on the device, and read the note
        every NONFINITE_CHECK_EVERY batches and at the epoch's end: asking after every batch would make
        the CPU wait for the GPU each step."""
        seen = self.first_nonfinite.get(stage)
        if seen is None:
            seen = torch.full((2,), -1.0, device=loss.device)
        this = torch.stack([torch.full_like(loss.detach().float(), batch_idx), loss.detach().float()])
        self.first_nonfinite[stage] = torch.where((seen[0] < 0) & ~torch.isfinite(loss.detach()), this, seen)
        if (batch_idx + 1) % NONFINITE_CHECK_EVERY == 0:
            self._raise_if_nonfinite(stage)

    def _raise_if_nonfinite(self, stage: str) -> None:
        seen = self.first_nonfinite.pop(stage, None)
        if seen is None:
            return
        batch_idx, value = seen.tolist()
        if batch_idx >= 0:
            raise NonFiniteLossError(
                f"{stage} batch {int(batch_idx)} (epoch {self.current_epoch}): the loss is {value}; lower the "
                f"learning rate or check the inputs, or set module.skip_nonfinite_loss=true to skip such batches")
        self.first_nonfinite[stage] = seen

    def training_step(self, batch, batch_idx):
        return self._step(batch, batch_idx, "train")  # None skips the optimiser step

    def validation_step(self, batch, batch_idx):
        self._step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, batch_idx, "test")

    # ----- epoch ends
    def _log_epoch_metrics(self, stage: str) -> None:
        self._raise_if_nonfinite(stage)
        self.first_nonfinite.pop(stage, None)
        metrics = self.stage_metrics[f"m_{stage}"]
        values = metrics.compute()
        for name in LOGGED_EVERY_EPOCH:
            if name in values:
                self.log(f"{stage}/{name}", values[name], prog_bar=stage == "val" and name in ("mae", "acc"))
        if self.skip_nonfinite_loss:
            self.log(f"{stage}/skipped_batches", float(self.skipped_batches[stage]))
        self.skipped_batches[stage] = 0
        if stage == "val" and "spread_curve" in values and not self.trainer.sanity_checking:
            # Calibrate the spread on this epoch's validation faces: the checkpoint saved after it
            # then says ± one std where 68 % of true ages lie (read once per epoch: one device sync).
            self.head.spread_scale.mul_(spread_multiple(values["spread_curve"].cpu()))
            self.log("val/spread_scale", self.head.spread_scale.float())
        if stage == "test":
            for name, value in values.items():  # the detail (bands, gender, precision...) once, at test
                if value.numel() == 1 and name not in LOGGED_EVERY_EPOCH:
                    self.log(f"test/{name}", value.float())
            self.test_results = {k: v.detach().cpu() for k, v in values.items()}
            self.test_cs_curve = self.test_results.get("cs_curve")
            self.test_confusion = self.test_results.get("confusion")
        metrics.reset()

    def on_train_epoch_end(self):
        self._log_epoch_metrics("train")

    def on_validation_epoch_start(self):
        self._raise_if_nonfinite("train")  # validation runs before the training epoch's end hook

    def on_validation_epoch_end(self):
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self):
        self._log_epoch_metrics("test")

    # ----- transfer learning: a frozen backbone for the first epochs
    def on_train_epoch_start(self):
        if self.freeze_epochs:
            self.set_backbone_frozen(self.current_epoch < self.freeze_epochs)

    def set_backbone_frozen(self, frozen: bool) -> None:
        self.backbone_frozen = frozen
        for param in self.model.parameters():
            param.requires_grad_(not frozen)
        self.train(self.training)  # re-applies the BatchNorm mode below

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and getattr(self, "backbone_frozen", False):
            for module in self.model.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # ----- loss re-weighting
    def setup(self, stage: str) -> None:
        if self.loss_weights and stage == "fit" and self.weight_table is None:
            self.weight_table = self._inverse_frequency_weights()

    def _inverse_frequency_weights(self) -> torch.Tensor:
        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = datamodule.train_dataloader().dataset if datamodule is not None else None
        if self.head.task == "group":
            labels, num_bins = getattr(dataset, "groups", None), NUM_GROUPS
        else:
            labels, num_bins = getattr(dataset, "ages", None), self._max_age() // AGE_WEIGHT_BIN + 1
        if labels is None:
            raise ConfigError("module.loss_weights=inverse_frequency needs a datamodule whose training dataset "
                              "has `ages` and `groups` arrays")
        labels = np.asarray(labels, dtype=np.float64)
        if self.head.task != "group":
            labels = np.where(np.isfinite(labels), np.floor(np.clip(labels, 0, self._max_age()) / AGE_WEIGHT_BIN), -1)
        return inverse_frequency_table(labels.astype(np.int64), num_bins)

    def _max_age(self) -> int:
        return getattr(self.head, "age_head", self.head).max_age  # MultiTaskHead wraps the age head

    def _sample_weights(self, batch: dict) -> torch.Tensor:
        table = self.weight_table
        if self.head.task == "group":
            index = group_targets(batch, batch["image"]).to(table.device)
        else:
            age = torch.as_tensor(batch["age"], device=table.device).float()
            binned = (age.nan_to_num(0).clamp(0, self._max_age()) // AGE_WEIGHT_BIN).long()
            index = torch.where(torch.isfinite(age), binned, -1)
        known = (index >= 0) & (index < len(table))
        return torch.where(known, table[index.clamp(0, len(table) - 1)], torch.ones_like(index, dtype=table.dtype))

    # ----- optimisation
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_factory:  # None or an empty scheduler config
            return optimizer
        interval, kwargs = self.scheduler_interval, {}
        if needs_total_steps(self.scheduler_factory):
            interval = "step" if interval == "auto" else interval
            kwargs["total_steps"] = (int(self.trainer.estimated_stepping_batches) if interval == "step"
                                     else int(self.trainer.max_epochs))
        elif interval == "auto":
            interval = "epoch"
        scheduler = self.scheduler_factory(optimizer=optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
