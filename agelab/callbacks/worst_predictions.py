"""A grid of the test faces the model got most wrong, each with its true and predicted age (or group).

The predictions are read off the head's output during the test step (a forward hook), so nothing
runs twice; only the K worst faces of each batch leave the device. Under DDP each process keeps its
own share of the test set and rank zero draws its own.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch

from agelab.callbacks.figures import image_grid_figure, log_figure
from agelab.errors import require_int
from agelab.groups import GROUP_NAMES

FIGURE = "figures/worst_predictions.png"


def to_uint8_images(images: torch.Tensor, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """Normalised N x 3 x H x W float images (x - mean) / std, [-1, 1] by default -> N x H x W x 3 uint8."""
    pixels = (images.float() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous()


def prediction_errors(decoded: dict, batch: dict, task: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ranking key, truth, prediction) per face; the key is -inf where the truth is unknown.

    Age heads: the absolute age error. Group heads: the distance in groups, plus (1 - probability
    of the true group) so that among equally wrong faces the confidently wrong come first.
    """
    if task == "group" and "group" in decoded and batch.get("group") is not None:
        pred = decoded["group"].detach().long()
        truth = torch.as_tensor(batch["group"], device=pred.device).long()
        known = (truth >= 0) & (truth < len(GROUP_NAMES))
        key = (pred - truth).abs().double()
        if "probs" in decoded:
            p_true = decoded["probs"].detach().double().gather(1, truth.clamp(0, len(GROUP_NAMES) - 1)[:, None])[:, 0]
            key = key + (1 - p_true)
        return torch.where(known, key, torch.full_like(key, -np.inf)), truth.double(), pred.double()
    if "age" not in decoded or batch.get("age") is None:
        empty = torch.empty(0)
        return empty, empty, empty
    pred = decoded["age"].detach().double()
    truth = torch.as_tensor(batch["age"], device=pred.device).double()
    known = torch.isfinite(truth)
    key = (pred - torch.where(known, truth, torch.zeros_like(truth))).abs()
    return torch.where(known, key, torch.full_like(key, -np.inf)), truth, pred


class WorstPredictionsFigure(pl.Callback):
    """After testing: ``figures/worst_predictions.png``, the ``k`` worst test faces (largest age
    error; group heads: furthest group), de-normalised with the eval transform's ``mean``/``std``."""

    def __init__(self, k: int = 16, cols: int = 4, mean: float = 0.5, std: float = 0.5):
        require_int("callbacks.worst_predictions.k", k, 1)
        require_int("callbacks.worst_predictions.cols", cols, 1)
        self.k, self.cols, self.mean, self.std = k, cols, mean, std
        self._hook = None
        self._logits: torch.Tensor | None = None
        self.reset()

    def reset(self) -> None:
        self.keys = torch.empty(0, dtype=torch.float64)
        self.truth = torch.empty(0, dtype=torch.float64)
        self.pred = torch.empty(0, dtype=torch.float64)
        self.images = torch.empty(0, dtype=torch.uint8)

    # ----- capture the head's output of each test step
    def _capture(self, module, inputs, output):
        self._logits = output.detach() if isinstance(output, torch.Tensor) else None

    def on_test_start(self, trainer, pl_module):
        self.reset()
        head = getattr(pl_module, "head", None)
        if isinstance(head, torch.nn.Module):
            self._hook = head.register_forward_hook(self._capture)

    def _decoded(self, pl_module, batch) -> dict:
        logits, self._logits = self._logits, None
        if logits is not None and len(logits) == len(batch["image"]):
            return pl_module.head.decode(logits)
        with torch.no_grad():  # no head output seen (a module without ``head``): predict again
            return pl_module(batch["image"])

    @torch.no_grad()
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not isinstance(batch, dict) or "image" not in batch:
            return
        task = getattr(getattr(pl_module, "head", None), "task", "age")
        keys, truth, pred = prediction_errors(self._decoded(pl_module, batch), batch, task)
        if keys.numel() == 0:
            return
        top = torch.topk(keys, min(self.k, keys.numel())).indices
        top = top[torch.isfinite(keys[top])]
        if top.numel() == 0:
            return
        images = to_uint8_images(batch["image"][top], self.mean, self.std).cpu()
        # Merge with the worst so far and keep k.
        self.keys = torch.cat([self.keys, keys[top].cpu()])
        self.truth = torch.cat([self.truth, truth[top].cpu()])
        self.pred = torch.cat([self.pred, pred[top].cpu()])
        self.images = torch.cat([self.images, images]) if len(self.images) else images
        keep = torch.topk(self.keys, min(self.k, self.keys.numel())).indices
        self.keys, self.truth, self.pred, self.images = (t[keep] for t in (self.keys, self.truth, self.pred, self.images))

    def captions(self, task: str) -> list[str]:
        if task == "group":
            return [f"true {GROUP_NAMES[int(t)]}\npred {GROUP_NAMES[int(p)]}" for t, p in zip(self.truth, self.pred)]
        return [f"true {t:.1f}, pred {p:.1f}\nerror {p - t:+.1f}" for t, p in zip(self.truth.tolist(), self.pred.tolist())]

    def on_test_end(self, trainer, pl_module):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if not len(self.keys) or not trainer.is_global_zero:
            return
        task = getattr(getattr(pl_module, "head", None), "task", "age")
        what = "group error" if task == "group" else "absolute age error"
        fig = image_grid_figure(list(self.images.numpy()), self.captions(task), cols=self.cols,
                                title=f"Worst {len(self.keys)} test predictions by {what}")
        log_figure(trainer, fig, FIGURE)
