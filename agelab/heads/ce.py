"""Cross-entropy over the 8 Adience age groups (the Levi–Hassner setup, docs/reference_systems.md §1).

Targets are ``batch["group"]``; where it is unknown (-1) but the age is known, the age's group
is used, so the head also trains on age-labelled data. Decoding gives the group, its
probabilities, and an "age" — the expected group centre (agelab.groups.GROUP_CENTRES) — so MAE
and CS stay defined; "std" is the spread of the centres under the probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agelab.errors import ConfigError
from agelab.groups import GROUP_CENTRES, NUM_GROUPS
from agelab.heads.base import Head, masked_mean, sample_weights
from agelab.metrics import ages_to_groups


def group_targets(batch: dict, like: torch.Tensor) -> torch.Tensor:
    """Group index per sample, from "group" or else from a known "age"; -1 where neither is known."""
    n = like.shape[0]
    group = batch.get("group")
    group = torch.full((n,), -1, dtype=torch.long, device=like.device) if group is None else \
        torch.as_tensor(group, device=like.device).long()
    if batch.get("age") is not None:
        age = torch.as_tensor(batch["age"], device=like.device).float()
        from_age = torch.where(torch.isfinite(age), ages_to_groups(torch.nan_to_num(age, nan=0.0)), -1)
        group = torch.where(group >= 0, group, from_age)
    return group


class GroupCEHead(Head):
    task = "group"

    def __init__(self, in_features: int, label_smoothing: float = 0.0):
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"head.label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(in_features, NUM_GROUPS)
        self.label_smoothing = label_smoothing
        self.register_buffer("centres", torch.tensor(GROUP_CENTRES, dtype=torch.float32), persistent=False)

    def loss(self, logits, batch):
        group = group_targets(batch, logits)
        known = group >= 0
        per_sample = F.cross_entropy(logits.float(), group.clamp_min(0), reduction="none",
                                     label_smoothing=self.label_smoothing)
        return masked_mean(per_sample, known, sample_weights(batch, logits))

    def _decode(self, logits):
        probs = logits.float().softmax(dim=1)
        age = probs @ self.centres
        var = probs @ self.centres.square() - age.square()
        return {"group": probs.argmax(dim=1), "probs": probs, "age": age, "std": var.clamp_min(0).sqrt()}
