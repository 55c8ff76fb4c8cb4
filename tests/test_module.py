"""AgeModule: metrics logged per stage, non-finite losses, backbone freezing, loss weights, schedules."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, get_method, instantiate
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from agelab.errors import ConfigError
from agelab.groups import age_to_group
from agelab.heads import DexHead, GroupCEHead
from agelab.models import MODELS
from agelab.module import AgeModule, NonFiniteLossError, inverse_frequency_table, needs_total_steps

from conftest import compose_config

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

NAN = float("nan")


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.out_features, self.input_size = 4, 8

    def forward(self, x):
        return self.body(x)


class Faces(Dataset):
    """Random 8x8 images; ``ages`` / ``groups`` arrays as the real datasets expose them."""

    def __init__(self, n, seed=0, with_ages=True, nan_at=None):
        rng = np.random.default_rng(seed)
        self.images = torch.tensor(rng.normal(size=(n, 3, 8, 8)), dtype=torch.float32)
        if nan_at is not None:
            self.images[nan_at] = NAN
        ages = rng.uniform(0, 70, n).astype(np.float32)
        self.groups = age_to_group(ages).astype(np.int64)
        self.ages = ages if with_ages else np.full(n, np.nan, np.float32)

    def __len__(self):
        return len(self.ages)

    def __getitem__(self, i):
        return {"image": self.images[i], "age": self.ages[i], "group": self.groups[i]}


class Data(pl.LightningDataModule):
    def __init__(self, train, val=None, test=None, batch_size=8):
        super().__init__()
        self.sets, self.batch_size = {"train": train, "val": val or train, "test": test or val or train}, batch_size

    def train_dataloader(self):
        return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self):
        return DataLoader(self.sets["val"], batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.sets["test"], batch_size=self.batch_size)


def make_trainer(epochs=1, callbacks=()):
    return pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=list(callbacks))


def make_module(head=None, **kwargs):
    torch.manual_seed(0)
    model = TinyNet()
    head = head or DexHead(model.out_features, max_age=70)
    return AgeModule(model, head, optimizer=functools.partial(torch.optim.SGD, lr=0.01), **kwargs)


def test_metrics_are_logged_per_stage_and_kept_for_figures():
    module = make_module()
    trainer = make_trainer()
    trainer.fit(module, datamodule=Data(Faces(24), Faces(16, seed=1)))
    logged = trainer.callback_metrics
    for stage in ("train", "val"):
        for name in ("loss", "mae", "cs5", "acc", "one_off", "f1"):
            assert f"{stage}/{name}" in logged, f"{stage}/{name}"
    trainer.test(module, datamodule=Data(Faces(24), Faces(16, seed=1), Faces(12, seed=2)))
    logged = trainer.callback_metrics
    assert {"test/mae", "test/acc", "test/precision", "test/recall", "test/n_age"} <= set(logged)
    assert logged["test/n_age"] == 12
    assert module.test_confusion.shape == (8, 8) and module.test_confusion.sum() == 12
    assert module.test_cs_curve.shape == (16,) and torch.all(module.test_cs_curve.diff() >= 0)
    assert {"mae", "cs_curve", "confusion", "confusion_normalized", "f1"} <= set(module.test_results)
    assert module.test_results["mae"].item() == pytest.approx(logged["test/mae"].item())
    # forward() decodes, logits() does not.
    images = torch.zeros(2, 3, 8, 8)
    assert module(images)["age"].shape == (2,) and module.logits(images).shape == (2, 71)


def test_group_only_data_logs_group_metrics_and_no_mae():
    module = make_module(head=GroupCEHead(4))
    trainer = make_trainer()
    trainer.fit(module, datamodule=Data(Faces(16, with_ages=False)))
    logged = trainer.callback_metrics
    assert "val/acc" in logged and "val/one_off" in logged and "val/mae" not in logged
    assert logged["val/one_off"] >= logged["val/acc"]


def test_a_nonfinite_loss_stops_training_naming_stage_and_batch():
    module = make_module()
    with pytest.raises(NonFiniteLossError, match=r"train batch 1 \(epoch 0\).*skip_nonfinite_loss"):
        make_trainer().fit(module, datamodule=Data(Faces(24, nan_at=9)))


def test_skip_nonfinite_loss_skips_and_counts_the_batch():
    module = make_module(skip_nonfinite_loss=True)
    trainer = make_trainer()
    trainer.fit(module, datamodule=Data(Faces(24, nan_at=9), Faces(16, seed=1)))
    assert trainer.callback_metrics["train/skipped_batches"] == 1
    assert trainer.callback_metrics["val/skipped_batches"] == 0
    assert all(torch.isfinite(p).all() for p in module.parameters())


class Snapshots(pl.Callback):
    """Model/head parameters and requires_grad flags at the end of each training epoch."""

    def __init__(self):
        self.epochs = []

    def on_train_epoch_end(self, trainer, module):
        self.epochs.append({
            "model": [p.detach().clone() for p in module.model.parameters()],
            "bn_mean": module.model.body[1].running_mean.clone(),
            "head": [p.detach().clone() for p in module.head.parameters()],
            "trainable": [p.requires_grad for p in module.model.parameters()],
        })


def test_freeze_epochs_trains_only_the_head_then_unfreezes():
    module = make_module(freeze_epochs=1)
    start_model = [p.detach().clone() for p in module.model.parameters()]
    start_bn = module.model.body[1].running_mean.clone()
    start_head = [p.detach().clone() for p in module.head.parameters()]
    snapshots = Snapshots()
    make_trainer(epochs=2, callbacks=[snapshots]).fit(module, datamodule=Data(Faces(24)))
    frozen, unfrozen = snapshots.epochs
    assert not any(frozen["trainable"]) and all(unfrozen["trainable"])
    assert all(torch.equal(a, b) for a, b in zip(start_model, frozen["model"]))
    assert torch.equal(start_bn, frozen["bn_mean"])  # frozen BatchNorm keeps its statistics
    assert not all(torch.equal(a, b) for a, b in zip(start_head, frozen["head"]))
    assert not all(torch.equal(a, b) for a, b in zip(frozen["model"], unfrozen["model"]))
    assert not torch.equal(frozen["bn_mean"], unfrozen["bn_mean"])


def test_inverse_frequency_table():
    weights = inverse_frequency_table(np.array([0, 0, 0, 1, -1]), 3)
    assert weights.tolist() == pytest.approx([2 / 3, 2.0, 1.0])  # mean 1 over the 4 labelled samples
    capped = inverse_frequency_table(np.array([0] * 100 + [1]), 2)
    assert (capped[1] / capped[0]).item() == pytest.approx(10.0)  # 100x rarer, capped at 10x
    assert (capped * torch.tensor([100.0, 1.0])).sum().item() == pytest.approx(101.0, rel=1e-5)


class RecordingHead(GroupCEHead):
    def __init__(self, in_features):
        super().__init__(in_features)
        self.weights_seen = []

    def loss(self, logits, batch):
        self.weights_seen.append(batch.get("weight"))
        return super().loss(logits, batch)


def test_inverse_frequency_weights_reach_the_head_in_training_only():
    train = Faces(24)
    module = make_module(head=RecordingHead(4), loss_weights="inverse_frequency")
    make_trainer().fit(module, datamodule=Data(train, Faces(8, seed=1)))
    counts = np.bincount(train.groups, minlength=8)
    expected_table = inverse_frequency_table(train.groups, 8)
    assert torch.allclose(module.weight_table, expected_table)
    train_weights, val_weights = module.head.weights_seen[:3], module.head.weights_seen[3:]
    assert torch.allclose(torch.cat(train_weights), expected_table[torch.as_tensor(train.groups)])
    assert all(w is None for w in val_weights)
    # Rarer groups weigh more.
    seen = counts > 0
    assert np.all(np.diff(expected_table.numpy()[seen][np.argsort(counts[seen])]) <= 1e-6)

    with pytest.raises(ConfigError, match="loss_weights"):
        make_module(loss_weights="balanced")


def test_onecycle_gets_its_total_steps_and_steps_per_batch():
    assert needs_total_steps(functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1))
    assert not needs_total_steps(functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=5))
    assert not needs_total_steps(functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=3))
    module = make_module(scheduler=functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1))
    trainer = make_trainer(epochs=2)
    trainer.fit(module, datamodule=Data(Faces(24)))  # 3 batches x 2 epochs; stepping past the end would raise
    config = trainer.lr_scheduler_configs[0]
    assert config.interval == "step" and config.scheduler.total_steps == 6
    module = make_module(scheduler=functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=2))
    trainer = make_trainer(epochs=1)
    trainer.fit(module, datamodule=Data(Faces(8)))
    assert trainer.lr_scheduler_configs[0].interval == "epoch"


def test_bad_module_options_are_config_errors():
    with pytest.raises(ConfigError, match="scheduler_interval"):
        make_module(scheduler_interval="batch")
    with pytest.raises(ConfigError, match="freeze_epochs"):
        make_module(freeze_epochs=-1)


def conf_names(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_every_optimizer_scheduler_head_and_model_config_builds(tmp_path):
    assert {"sgd", "adam", "adamw", "rmsprop"} <= set(conf_names("optimizer"))
    assert {"cosine", "step", "onecycle", "none"} <= set(conf_names("scheduler"))
    params = [nn.Parameter(torch.zeros(2))]
    for name in conf_names("optimizer"):
        cfg = compose_config(tmp_path, [f"optimizer={name}"])
        assert isinstance(instantiate(cfg.optimizer)(params=params), torch.optim.Optimizer)
    for name in conf_names("scheduler"):
        cfg = compose_config(tmp_path, [f"scheduler={name}", "optimizer=sgd"])
        if name == "none":
            assert not cfg.scheduler
            continue
        factory = instantiate(cfg.scheduler)
        extra = {"total_steps": 10} if needs_total_steps(factory) else {}
        factory(optimizer=torch.optim.SGD(params, lr=0.1), **extra)
    for name in conf_names("head"):
        cfg = compose_config(tmp_path, [f"head={name}"])
        head = instantiate(cfg.head, in_features=8)
        assert head.decode(head(torch.randn(2, 8)))["age"].shape == (2,), name
    registered = set(MODELS.values())
    for name in conf_names("model"):
        cfg = compose_config(tmp_path, [f"model={name}"])
        if name == "pretrained":
            assert get_method(cfg.model._target_).__name__ == "pretrained_backbone"
            continue
        cls = get_class(cfg.model._target_)
        assert cls in registered and MODELS[name] is cls, name  # the file name is the registered name
        assert cfg.model.input_size >= 32


@pytest.mark.parametrize("value, words", [("abc", "not supported between"), ("-1.0", "Invalid learning rate")])
def test_a_wrong_optimiser_value_stops_when_the_module_is_built(tmp_path, value, words):
    import re

    from agelab.cli import agelab_cause
    from agelab.training import build_module

    cfg = compose_config(tmp_path, [f"optimizer.lr={value}"])
    with pytest.raises(Exception) as info:  # Hydra wraps it; the entry points print the cause
        build_module(cfg)
    cause = agelab_cause(info.value)
    assert isinstance(cause, ConfigError) and "\n" not in str(cause)
    assert re.match(f"optimizer \\(AdamW\\): .*{words}.*; check the optimizer.\\* values$", str(cause))


def test_the_example_input_matches_the_model_so_the_summary_counts_flops():
    smlf = MODELS["smlf_small"]()
    gray = MODELS["simple_cnn"](input_size=32, in_channels=1)
    assert AgeModule(smlf, DexHead(smlf.out_features), None).example_input_array.shape == (1, 3, 64, 64)
    assert AgeModule(gray, DexHead(gray.out_features), None).example_input_array.shape == (1, 1, 32, 32)

    summary = pl.utilities.model_summary.ModelSummary(AgeModule(smlf, DexHead(smlf.out_features), None))
    with FlopCounterMode(display=False) as counter:
        smlf.eval()(torch.zeros(1, 3, 64, 64))
    assert summary.total_flops >= counter.get_total_flops() > 10_000_000  # model + head, per face
