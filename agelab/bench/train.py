"""``python -m agelab.bench train [train overrides]``: is the data path keeping the device busy?

Measures, in one process, (a) the model-only ceiling: optimiser steps on batches already on the
device (same model, head, precision, channels_last and compile setting) and (b) the real training
throughput: Lightning fit from the cache through the loader and augmentation to the optimiser
step. Prints img/s for both and their ratio (1.0 = the data path costs nothing), and (c) the data
path alone (loader, transfer, device-side gather and augmentation, no model): when it is far above the
ceiling but the ratio is low, the loss is in overlapping the two, not in the data path's speed.
"""

from __future__ import annotations

import argparse
import itertools
import time

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from agelab.bench import DefaultsHelp
from agelab.config import compose_config
from agelab.config_checks import check_targets, require_values
from agelab.errors import ConfigError
from agelab.training import build_module, require_accelerator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device(cfg) -> torch.device:
    return torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda") else "cpu")


def model_ceiling(cfg, warmup: int, steps: int) -> float:
    """img/s of optimiser steps on synthetic batches already on the device."""
    device = _device(cfg)
    torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark", False))  # as the Trainer will set it
    module = build_module(cfg).to(device).train()
    optimizer = instantiate(cfg.optimizer)(params=module.parameters())  # the same optimiser as training
    size, batch = cfg.model.input_size, cfg.data.batch_size
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    target = {"age": torch.randint(0, 90, (batch,), device=device).float(),
              "group": torch.randint(0, 8, (batch,), device=device)}
    bf16 = str(cfg.trainer.precision).startswith("bf16")

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.head.loss(module.logits(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


class _Throughput(pl.Callback):
    """Times training batches after a warm-up (synchronised, so the device work is counted)."""

    def __init__(self, warmup: int):
        self.warmup, self.images, self.start, self.seconds = warmup, 0, None, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            _sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.images += len(batch["image"])

    def on_train_end(self, trainer, pl_module):
        _sync(pl_module.device)
        self.seconds = time.perf_counter() - self.start if self.start else float("nan")


def end_to_end(cfg, warmup: int, steps: int) -> float:
    """img/s of a real fit: cache -> loader -> augmentation -> optimiser step."""
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    meter = _Throughput(warmup)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[meter], enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, max_steps=warmup + steps,
                          max_epochs=-1, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    return meter.images / meter.seconds


def data_path_only(cfg, warmup: int, steps: int) -> float:
    """img/s of the training batches alone: loader -> device (non-blocking) -> device gather/augment."""
    device = _device(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # epochs back to back
    images, start = 0, time.perf_counter()
    for i, batch in enumerate(itertools.islice(batches, warmup + steps)):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch = datamodule.device_batch(batch, training=True)
        if i >= warmup:
            images += len(batch["image"])
        elif i == warmup - 1:  # the clock starts before the first timed batch is fetched
            _sync(device)
            start = time.perf_counter()
    _sync(device)
    return images / (time.perf_counter() - start)


def bench_train(overrides: list[str], warmup: int = 5, steps: int = 20) -> dict[str, float]:
    if warmup < 0 or steps < 1:
        raise ConfigError(f"--warmup must be >= 0 and --steps >= 1, got {warmup} and {steps}")
    cfg = compose_config("train", overrides, output_dir="logs/bench")
    check_targets(cfg)
    require_values(cfg)
    require_accelerator(cfg)
    instantiate(cfg.data)  # its settings checked (batch size, folder) before anything is timed
    pl.seed_everything(cfg.seed)
    ceiling = model_ceiling(cfg, warmup, steps)
    real = end_to_end(cfg, warmup, steps)
    data = data_path_only(cfg, warmup, steps)
    return {"model_only_img_s": ceiling, "end_to_end_img_s": real, "ratio": real / ceiling,
            "data_only_img_s": data, "data_to_model_ratio": data / ceiling}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m agelab.bench train", description=__doc__.splitlines()[0],
                                     formatter_class=DefaultsHelp)
    parser.add_argument("--warmup", type=int, default=5, help="steps before timing starts")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("overrides", nargs="*", help="train config overrides, e.g. model=smlf trainer=gpu")
    args = parser.parse_intermixed_args(argv)  # options may follow overrides
    result = bench_train(args.overrides, args.warmup, args.steps)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and "gpu" in " ".join(args.overrides) else "cpu"
    print(f"bench train ({' '.join(args.overrides) or 'defaults'}) on {device}")
    print(f"  model only (batches on device): {result['model_only_img_s']:10.1f} img/s")
    print(f"  end to end (cache -> step)    : {result['end_to_end_img_s']:10.1f} img/s")
    print(f"  ratio end-to-end / model-only : {result['ratio']:10.3f}")
    print(f"  data path only (no model)     : {result['data_only_img_s']:10.1f} img/s"
          f"  ({result['data_to_model_ratio']:.2f}x the model-only rate)")
    return result
