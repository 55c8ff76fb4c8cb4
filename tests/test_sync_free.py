"""The training step never waits for the GPU: no data-dependent shapes or host reads per batch.

A CPU-side check that holds for CUDA: tensors on PyTorch's "meta" device have shapes but no
values, so any operation that would read values back to the host (boolean indexing, nonzero,
bincount, one_hot, .item(), if tensor:) raises there. On a GPU each such read stalls the CPU until
the device has caught up, and the next batch's work is queued late.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from agelab.config import compose_config
from agelab.metrics import AgeMetrics
from agelab.training import build_module

HEADS = ("ce", "coral", "corn", "dex", "dldl", "mean_variance", "multitask", "regression")
META = torch.device("meta")


def meta_batch(n: int, size: int) -> dict:
    return {"image": torch.empty(n, 3, size, size, device=META), "age": torch.empty(n, device=META),
            "group": torch.empty(n, dtype=torch.long, device=META), "gender": torch.empty(n, dtype=torch.long, device=META)}


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
    loss = module.training_step(meta_batch(4, cfg.model.input_size), 0)
    loss.backward()
    optimizer.step()
    assert loss.device == META and loss.shape == ()


def test_metric_updates_of_every_kind():
    metrics = AgeMetrics().to(META)
    batch = {**meta_batch(6, 8), "race": torch.empty(6, dtype=torch.long, device=META)}
    metrics.update({"age": torch.empty(6, device=META), "gender": torch.empty(6, dtype=torch.long, device=META)}, batch)
    metrics.update({"group": torch.empty(6, dtype=torch.long, device=META)}, batch)
    assert metrics.confusion.counts.device == META


def test_batch_augmentation_and_cache_gather():
    cfg = compose_config("train", ["model=smlf_small"], output_dir="unused")
    augment = instantiate(cfg.augment.device_train, seed=None)  # (no random generators on "meta")
    cache = torch.empty(100, 72, 72, 3, dtype=torch.uint8, device=META)
    rows = torch.empty(8, dtype=torch.long, device=META)
    images = augment(cache[rows])
    assert images.shape == (8, 3, cfg.model.input_size, cfg.model.input_size)
