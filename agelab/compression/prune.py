"""Magnitude pruning with fine-tuning: zero the smallest weights, then train the rest to recover.

``MagnitudePruning`` is a Callback for a training that starts from trained weights
(``weights_from=<ckpt>``, set by ``compress=prune``). At the start of each of the first
``ramp_epochs`` epochs it raises the sparsity along the cubic schedule of Zhu & Gupta (2017, "To
prune, or not to prune"), reaching ``amount`` at the last of them; the masks keep the largest
|weights| over all prunable layers at once (``scope=global``) or layer by layer. After every
optimiser step the pruned weights are set back to zero, so the weights keep their plain names:
checkpoints, eval, export and predict need nothing special, and a resumed training finds its masks
again in the zeros of the restored weights.

Unstructured zeros shrink the model on disk once compressed (see ``compress/*size_mb_gzip``), not
its dense compute time: for a faster model, distil into a smaller one (``compress=distill``).
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from torch import nn

from agelab.errors import ConfigError, require_int

log = logging.getLogger(__name__)
SCOPES = ("global", "layer")
PRUNABLE = (nn.Conv2d, nn.Linear)


def prunable_weights(module: nn.Module, include_head: bool = True) -> list[nn.Parameter]:
    """The weight of every convolution and linear layer; the head's too unless excluded."""
    roots = [module.model, module.head] if include_head else [module.model]
    return [layer.weight for root in roots for layer in root.modules() if isinstance(layer, PRUNABLE)]


def cubic_sparsity(amount: float, epoch: int, ramp_epochs: int) -> float:
    """Target sparsity at the start of ``epoch`` (0-based): rises as 1 - (1 - t)^3 to ``amount``."""
    if ramp_epochs <= 0:
        return amount
    done = min(epoch + 1, ramp_epochs) / ramp_epochs
    return amount * (1.0 - (1.0 - done) ** 3)


def smallest_zeroed(weights: list[torch.Tensor], amount: float) -> list[torch.Tensor]:
    """Keep-masks (1 = kept) over ``weights`` together that drop the ``round(amount * n)`` smallest |w|."""
    scores = torch.cat([w.detach().abs().reshape(-1) for w in weights])  # reshape: channels_last weights too
    keep = torch.zeros_like(scores)
    keep[torch.topk(scores, len(scores) - round(amount * len(scores)), sorted=False).indices] = 1.0
    sizes = [w.numel() for w in weights]
    return [part.reshape(w.shape) for part, w in zip(keep.split(sizes), weights)]


def magnitude_masks(weights: list[nn.Parameter], amount: float, scope: str) -> list[torch.Tensor]:
    """Zero the ``amount`` fraction of smallest |weights| (over all layers, or in each) and return the
    keep-masks. Already-zero weights are the smallest, so raising ``amount`` only adds to earlier zeros.
    """
    if scope == "global":
        masks = smallest_zeroed(weights, amount)
    else:
        masks = [smallest_zeroed([w], amount)[0] for w in weights]
    with torch.no_grad():
        for weight, mask in zip(weights, masks):
            weight.mul_(mask)
    return masks


def sparsity_of(weights: list[nn.Parameter]) -> float:
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(total, 1)


def forget_ramp_checkpoints(trainer) -> None:
    """Make the monitored checkpoint callbacks start over: a checkpoint from the ramp, at a lower
    sparsity than ``amount``, must not remain "best" (tested, exported and reported as the pruned model).
    Its file stays on disk."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) and getattr(callback, "best_k_models", None):
            callback.best_k_models = {}
            callback.best_model_score, callback.best_model_path, callback.kth_best_model_path = None, "", ""
            callback.kth_value = torch.tensor(float("inf") if callback.mode == "min" else float("-inf"))
            log.info("prune: full sparsity from this epoch; earlier checkpoints no longer compete for best")


class MagnitudePruning(pl.Callback):
    def __init__(self, amount: float = 0.5, ramp_epochs: int = 1, scope: str = "global", include_head: bool = True):
        if not 0.0 < amount < 1.0:
            raise ConfigError(f"prune.amount is the fraction of weights to zero, in (0, 1); got {amount!r}")
        require_int("prune.ramp_epochs", ramp_epochs, 0)
        if scope not in SCOPES:
            raise ConfigError(f"prune.scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        self.amount, self.ramp_epochs, self.scope, self.include_head = amount, ramp_epochs, scope, include_head
        self.weights: list[nn.Parameter] = []
        self.masks: list[torch.Tensor] = []

    def on_fit_start(self, trainer, pl_module):
        model = getattr(pl_module.model, "_orig_mod", pl_module.model)  # torch.compile keeps the layers
        self.weights = prunable_weights(nn.ModuleDict({"model": model, "head": pl_module.head}), self.include_head)
        if trainer.max_epochs is not None and trainer.max_epochs < self.ramp_epochs:
            reached = cubic_sparsity(self.amount, trainer.max_epochs - 1, self.ramp_epochs)
            log.warning("prune: %d epochs end the %d-epoch ramp early: %.1f %% zero weights instead of "
                        "amount=%.1f %%, and no fine-tuning", trainer.max_epochs, self.ramp_epochs,
                        100 * reached, 100 * self.amount)
        elif trainer.max_epochs is not None and trainer.max_epochs == self.ramp_epochs:
            log.warning("prune: %d epochs leave no fine-tuning after the %d-epoch ramp", trainer.max_epochs,
                        self.ramp_epochs)

    def on_train_epoch_start(self, trainer, pl_module):
        target = cubic_sparsity(self.amount, trainer.current_epoch, self.ramp_epochs)
        if not self.masks or target > sparsity_of(self.weights) + 1e-6:
            self.masks = magnitude_masks(self.weights, target, self.scope)
        if trainer.current_epoch > 0 and trainer.current_epoch == self.ramp_epochs - 1:
            forget_ramp_checkpoints(trainer)  # the best checkpoint must be at the full sparsity
        sparsity = sparsity_of(self.weights)
        pl_module.log("prune/sparsity", sparsity)
        log.info("prune: epoch %d at %.1f %% zero weights", trainer.current_epoch, 100 * sparsity)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with torch.no_grad():  # the step may have moved pruned weights: back to zero
            torch._foreach_mul_(self.weights, self.masks)  # one fused launch for all layers (same devices)
