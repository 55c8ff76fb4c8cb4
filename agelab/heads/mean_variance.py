"""Mean-variance loss (Pan et al., CVPR 2018): softmax cross-entropy over ages plus a penalty on the
distance of the distribution's mean from the true age and on its variance.

    L = CE + lambda_mean * (m - y)^2 / 2 + lambda_variance * sum_j p_j (j - m)^2

with m = sum_j p_j j, in years as in the paper (lambda_mean 0.2, lambda_variance 0.05).
"""

from __future__ import annotations

import torch.nn.functional as F

from agelab.errors import ConfigError
from agelab.heads.base import masked_mean, sample_weights
from agelab.heads.distribution import AgeDistributionHead


class MeanVarianceHead(AgeDistributionHead):
    def __init__(self, in_features: int, max_age: int = 100, lambda_mean: float = 0.2, lambda_variance: float = 0.05):
        if lambda_mean < 0 or lambda_variance < 0:
            raise ConfigError(f"head.lambda_mean and head.lambda_variance must be >= 0, got {lambda_mean}, {lambda_variance}")
        super().__init__(in_features, max_age)
        self.lambda_mean, self.lambda_variance = lambda_mean, lambda_variance

    def loss(self, logits, batch):
        age, known = self.age_targets(batch, logits)
        logits = logits.float()
        probs = logits.softmax(dim=1)
        mean = probs @ self.ages
        variance = (probs * (self.ages[None, :] - mean[:, None]).square()).sum(1)
        per_sample = (F.cross_entropy(logits, self.whole_age_targets(batch, logits)[0], reduction="none")
                      + self.lambda_mean * 0.5 * (mean - age).square() + self.lambda_variance * variance)
        return masked_mean(per_sample, known, sample_weights(batch, logits))
