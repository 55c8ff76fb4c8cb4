"""DEX: softmax over integer ages, prediction = expected value (Rothe et al.; SMLF-Net's head)."""

from __future__ import annotations

import torch.nn.functional as F

from agelab.heads.base import masked_mean, sample_weights
from agelab.heads.distribution import AgeDistributionHead


class DexHead(AgeDistributionHead):
    """Classes 0..max_age, the last one meaning "max_age or older" (max_age=65: SMLF-Net's 66 classes)."""

    def __init__(self, in_features: int, max_age: int = 65):
        super().__init__(in_features, max_age)

    def loss(self, logits, batch):
        target, known = self.whole_age_targets(batch, logits)
        per_sample = F.cross_entropy(logits.float(), target, reduction="none")
        return masked_mean(per_sample, known, sample_weights(batch, logits))
