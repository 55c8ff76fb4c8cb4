"""Heads that predict a distribution over integer ages 0..max_age (DEX, mean-variance, DLDL).

Decoding is shared: age = expected value of the softmax, std = its standard deviation.
"""

from __future__ import annotations

import torch

from agelab.heads.base import AgeHead


class AgeDistributionHead(AgeHead):
    """Softmax over classes 0..max_age, the last one meaning "max_age or older"."""

    def __init__(self, in_features: int, max_age: int = 100):
        super().__init__(in_features, max_age + 1, max_age)
        self.register_buffer("ages", torch.arange(max_age + 1, dtype=torch.float32), persistent=False)

    def _decode(self, logits):
        probs = logits.float().softmax(dim=1)
        mean = probs @ self.ages
        var = probs @ self.ages.square() - mean.square()
        return {"age": mean, "std": var.clamp_min(0).sqrt(), "probs": probs}
