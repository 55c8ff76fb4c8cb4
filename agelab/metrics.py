"""Metrics shared by training and evaluation: MAE, cumulative score CS(theta), group accuracy."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class CumulativeScore(Metric):
    """CS(theta): share of faces with |predicted - true age| <= theta, for theta = 0..max_theta."""

    full_state_update = False

    def __init__(self, max_theta: int = 15):
        super().__init__()
        self.max_theta = max_theta
        self.add_state("hits", default=torch.zeros(max_theta + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        err = (preds.double() - target.double()).abs()
        thetas = torch.arange(self.max_theta + 1, device=err.device, dtype=err.dtype)
        self.hits += (err[:, None] <= thetas[None, :]).sum(0)
        self.total += err.numel()

    def compute(self) -> torch.Tensor:
        """The whole curve: element theta is CS(theta)."""
        return (self.hits / self.total.clamp_min(1)).float()
