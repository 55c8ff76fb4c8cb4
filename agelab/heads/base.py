"""What every head does: the output layer, the loss, and decoding logits back to ages or groups.

Targets come from the batch dict: "age" (float years, NaN = unknown) and "group" (Adience group
index, -1 = unknown). Losses ignore unknown targets, and weight samples by ``batch["weight"]``
when present (the module's ``loss_weights`` option). A batch without a single usable target
gives a zero loss that still depends on the logits (so backward works).
"""

from __future__ import annotations

import torch
from torch import nn

from agelab.errors import require_int


class Head(nn.Module):
    """Base class. ``task`` is "age" (decode gives "age" and "std") or "group" (decode gives
    "group" and "probs", plus an "age" standing in for the group so MAE stays defined).

    Subclasses build their output layer (``self.fc`` unless they need another shape), and define
    ``loss(logits, batch)`` and ``_decode(logits)``. ``decode`` gives the spread ("std") calibrated:
    times ``spread_scale``, which training sets from each validation epoch (agelab.module) so that the
    true age lies within one std of the predicted age for 68 % of faces, as for a normal error.
    """

    task = "age"
    has_spread = True  # decode's "std" is a spread to calibrate (a point estimate's NaN is not)

    def __init__(self, in_features: int, num_outputs: int | None = None):
        super().__init__()
        self.in_features = in_features
        if num_outputs is not None:
            self.fc = nn.Linear(in_features, num_outputs)
        self.register_buffer("spread_scale", torch.ones(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self._decode(logits)
        if self.has_spread and "std" in out:
            out["std"] = out["std"] * self.spread_scale
        return out

    def _decode(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class AgeHead(Head):
    """An age head: ages in 0..max_age (older labels are clamped to max_age)."""

    def __init__(self, in_features: int, num_outputs: int | None, max_age: int):
        require_int("head.max_age", max_age, 1)
        super().__init__(in_features, num_outputs)
        self.max_age = max_age

    def age_targets(self, batch: dict, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ages clamped to 0..max_age with unknown ones set to 0, mask of known ages)."""
        age = torch.as_tensor(batch["age"], device=like.device).float()
        known = torch.isfinite(age)
        return torch.where(known, age, torch.zeros_like(age)).clamp(0, self.max_age), known

    def whole_age_targets(self, batch: dict, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``age_targets`` rounded to the nearest whole year, halves up (24.5 -> 25 as 25.5 -> 26;
        torch.round would send halves to the even year), as long integers."""
        age, known = self.age_targets(batch, like)
        return torch.floor(age + 0.5).long(), known


def sample_weights(batch: dict, like: torch.Tensor) -> torch.Tensor | None:
    weight = batch.get("weight")
    return None if weight is None else torch.as_tensor(weight, device=like.device).float()


def masked_mean(per_sample: torch.Tensor, known: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean of per-sample losses over the known samples (0 if there are none).

    Unknown samples are zeroed with ``where`` rather than multiplied, so a NaN there cannot leak in.
    """
    w = known.float() if weight is None else known.float() * weight
    per_sample = torch.where(known, per_sample, torch.zeros_like(per_sample))
    return (per_sample * w).sum() / w.sum().clamp_min(1e-12)
