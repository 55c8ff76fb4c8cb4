"""The training step never waits for the GPU: no data-dependent shapes or host reads per batch.

A CPU-side check that holds for CUDA: tensors on PyTorch's "meta" device have shapes but no
values, so any operation that would read values back to the host (boolean indexing, nonzero,
bincount, one_hot, .item(), if tensor:) raises there. On a GPU each such read stalls the CPU until
the device has caught up, and the next batch's work is queued late. The other stall, a blocking copy
from the host (``torch.tensor(values, device=...)``, ``.to(device)`` without ``non_blocking``), is
caught by watching the calls (``no_blocking_copies``).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import pytest
import torch
from hydra.utils import instantiate
from torch.overrides import TorchFunctionMode

from agelab.config import compose_config
from agelab.metrics import AgeMetrics
from agelab.training import build_module

HEADS = ("ce", "coral", "corn", "dex", "dldl", "mean_variance", "multitask", "regression")
META = torch.device("meta")


def meta_batch(n: int, size: int) -> dict:
    return {"image": torch.empty(n, 3, size, size, device=META), "age": torch.empty(n, device=META),
            "group": torch.empty(n, dtype=torch.long, device=META), "gender": torch.empty(n, dtype=torch.long, device=META)}


class BlockingCopies(TorchFunctionMode):
    """Records host -> device copies that would make the CPU wait for a GPU."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        device = kwargs.get("device")
        if name in ("tensor", "as_tensor") and device is not None and torch.device(device).type != "cpu" \
                and not isinstance(args[0], torch.Tensor):
            self.found.append(f"torch.{name}(<host values>, device={device})")
        if name == "to" and isinstance(args[0], torch.Tensor) and args[0].device.type == "cpu" \
                and not kwargs.get("non_blocking", False):
            target = next((a for a in (*args[1:], kwargs.get("device")) if isinstance(a, (str, torch.device))), None)
            if target is not None and torch.device(target).type != "cpu":
                self.found.append(f"Tensor.to({target}) without non_blocking")
        return func(*args, **kwargs)


@contextmanager
def no_blocking_copies():
    with BlockingCopies() as mode:
        yield
    assert not mode.found, mode.found


def test_a_blocking_copy_is_caught():
    with pytest.raises(AssertionError, match="torch.tensor"):
        with no_blocking_copies():
            torch.tensor([1.0, 2.0], device=META)
    with no_blocking_copies():  # the ways that queue without waiting
        torch.ones(2).to(META, non_blocking=True)
        torch.as_tensor(torch.empty(2, device=META), device=META)


def test_a_data_dependent_operation_is_caught_on_the_meta_device():
    mask = torch.empty(4, dtype=torch.bool, device=META)
    with pytest.raises(NotImplementedError):
        torch.empty(4, device=META)[mask]


@pytest.mark.parametrize("head", HEADS)
def test_training_step_forward_loss_metrics_backward_and_optimiser_step(head):
    cfg = compose_config("train", [f"head={head}", "model=smlf_small", "module.loss_weights=inverse_frequency"],
                         output_dir="unused")
    module = build_module(cfg).to(META).train()
    module.weight_table = torch.empty(21, device=META)  # inverse-frequency weights by 5-year bin
    optimizer = instantiate(cfg.optimizer)(params=module.parameters())
    for step in range(2):  # the first step may set up constants on the device; later ones copy nothing
        with no_blocking_copies() if step else nullcontext():
            loss = module.training_step(meta_batch(4, cfg.model.input_size), step)
            loss.backward()
            optimizer.step()
    assert loss.device == META and loss.shape == ()


def test_metric_updates_of_every_kind():
    metrics = AgeMetrics().to(META)
    batch = {**meta_batch(6, 8), "race": torch.empty(6, dtype=torch.long, device=META)}
    for step in range(2):
        with no_blocking_copies() if step else nullcontext():
            metrics.update({"age": torch.empty(6, device=META), "gender": torch.empty(6, dtype=torch.long, device=META)}, batch)
            metrics.update({"group": torch.empty(6, dtype=torch.long, device=META)}, batch)
    assert metrics.confusion.counts.device == META


def test_batch_augmentation_and_cache_gather():
    cfg = compose_config("train", ["model=smlf_small"], output_dir="unused")
    augment = instantiate(cfg.augment.device_train, gray_p=1.0, blur_p=1.0)  # every op of the forward
    cache = torch.empty(100, 72, 72, 3, dtype=torch.uint8, device=META)
    rows = torch.empty(8, dtype=torch.long, device=META)
    with no_blocking_copies():
        images = augment(cache[rows])
        instantiate(cfg.augment.device_eval)(cache[rows])
    assert images.shape == (8, 3, cfg.model.input_size, cfg.model.input_size)
