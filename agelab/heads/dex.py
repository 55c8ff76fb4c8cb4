"""DEX: softmax over integer ages, prediction = expected value (Rothe et al.; SMLF-Net's head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agelab.errors import ConfigError
from agelab.heads.base import Head


class DexHead(Head):
    """Classes 0..max_age, the last one meaning "max_age or older" (max_age=65: SMLF-Net's 66 classes)."""

    def __init__(self, in_features: int, max_age: int = 65):
        if max_age < 1:
            raise ConfigError(f"head.max_age must be >= 1, got {max_age}")
        super().__init__(in_features, max_age + 1)
        self.max_age = max_age
        self.register_buffer("ages", torch.arange(max_age + 1, dtype=torch.float32), persistent=False)

    def loss(self, logits, batch):
        target = batch["age"].round().clamp(0, self.max_age).long()
        return F.cross_entropy(logits, target)

    def decode(self, logits):
        probs = logits.float().softmax(dim=1)
        mean = probs @ self.ages
        var = probs @ self.ages.square() - mean.square()
        return {"age": mean, "std": var.clamp_min(0).sqrt(), "probs": probs}
