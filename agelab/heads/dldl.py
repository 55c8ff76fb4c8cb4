"""DLDL, deep label distribution learning (Gao et al., 2017): the target is a discretised Gaussian
around the true age (``sigma`` years), the loss is KL(target || softmax) over ages 0..max_age."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agelab.errors import ConfigError
from agelab.heads.base import masked_mean, sample_weights
from agelab.heads.distribution import AgeDistributionHead


class DLDLHead(AgeDistributionHead):
    def __init__(self, in_features: int, max_age: int = 100, sigma: float = 2.0):
        if not sigma > 0:
            raise ConfigError(f"head.sigma must be > 0, got {sigma}")
        super().__init__(in_features, max_age)
        self.sigma = float(sigma)

    def target_distribution(self, age: torch.Tensor) -> torch.Tensor:
        """(N, max_age+1): a Gaussian around each age over the age classes, each row summing to 1."""
        log_density = -(self.ages[None, :] - age[:, None]).square() / (2 * self.sigma ** 2)
        return log_density.softmax(dim=1)

    def loss(self, logits, batch):
        age, known = self.age_targets(batch, logits)
        target = self.target_distribution(age)
        per_sample = F.kl_div(logits.float().log_softmax(dim=1), target, reduction="none").sum(1)
        return masked_mean(per_sample, known, sample_weights(batch, logits))
