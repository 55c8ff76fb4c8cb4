"""Direct regression of the age, trained on age / max_age (targets in [0, 1] keep the loss scale
independent of the dataset's age range).

``loss``: ``l1`` (MAE), ``mse``, ``huber`` (quadratic within ``huber_delta`` years, linear beyond),
or ``gaussian_nll``, which adds a second output, a log-variance, trained with the Gaussian negative
log-likelihood. Decoded "std" is that learned spread in years for ``gaussian_nll``, and NaN for the
other losses (a point estimate carries no spread).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agelab.errors import ConfigError
from agelab.heads.base import AgeHead, masked_mean, sample_weights

LOSSES = ("l1", "mse", "huber", "gaussian_nll")


class RegressionHead(AgeHead):
    def __init__(self, in_features: int, max_age: int = 100, loss: str = "l1", huber_delta: float = 3.0):
        if loss not in LOSSES:
            raise ConfigError(f"head.loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if huber_delta <= 0:
            raise ConfigError(f"head.huber_delta must be > 0 years, got {huber_delta}")
        super().__init__(in_features, 2 if loss == "gaussian_nll" else 1, max_age)
        self.loss_name, self.huber_delta = loss, huber_delta

    def loss(self, logits, batch):
        age, known = self.age_targets(batch, logits)
        target = age / self.max_age
        logits = logits.float()
        pred = logits[:, 0]
        if self.loss_name == "l1":
            per_sample = (pred - target).abs()
        elif self.loss_name == "mse":
            per_sample = (pred - target).square()
        elif self.loss_name == "huber":
            per_sample = F.huber_loss(pred, target, reduction="none", delta=self.huber_delta / self.max_age)
        else:
            per_sample = F.gaussian_nll_loss(pred, target, logits[:, 1].exp(), reduction="none", eps=1e-6)
        return masked_mean(per_sample, known, sample_weights(batch, logits))

    @property
    def has_spread(self) -> bool:
        return self.loss_name == "gaussian_nll"

    def _decode(self, logits):
        logits = logits.float()
        age = (logits[:, 0] * self.max_age).clamp(0, self.max_age)
        if self.loss_name == "gaussian_nll":
            std = (0.5 * logits[:, 1]).exp().clamp_min(1e-3) * self.max_age
        else:  # a point estimate: no spread to give (NaN, as predict reads "none"; 0 would claim certainty)
            std = torch.full_like(age, float("nan"))
        return {"age": age, "std": std}
