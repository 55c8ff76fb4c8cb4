"""Ordinal regression heads: CORAL (Cao et al., 2020) and CORN (Shi et al., 2021).

Both turn the age y in 0..max_age into max_age binary questions "is y > k?" and predict the age
as the number of "yes" answers (probability > 0.5), as in the papers. They are written here
rather than taken from coral-pytorch: each loss is a few lines, and these versions also skip
unknown ages and take per-sample weights (coral-pytorch's ``corn_loss`` does neither). The tests
check them against coral-pytorch's documented values.

Decoding also gives "std", the spread of the age distribution implied by P(y > k), and
"probs" = P(y > k) for k = 0..max_age-1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agelab.errors import ConfigError
from agelab.heads.base import AgeHead, masked_mean, sample_weights

PREDICTIONS = ("threshold", "expected")


def binary_cross_entropy_terms(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Element-wise -[y log s(z) + (1 - y) log(1 - s(z))], with log(1 - s(z)) = log s(z) - z."""
    log_p = F.logsigmoid(logits)
    return -(log_p * labels + (log_p - logits) * (1 - labels))


def decode_exceedance(p_greater: torch.Tensor, prediction: str) -> dict[str, torch.Tensor]:
    """Ages from P(y > k), k = 0..K-2: the count of P > 0.5 ("threshold") or the sum of P ("expected")."""
    ones = torch.ones_like(p_greater[:, :1])
    zeros = torch.zeros_like(p_greater[:, :1])
    # P(y = k) = P(y > k-1) - P(y > k); clamped, since CORAL's probabilities need not be monotone mid-training.
    dist = (torch.cat([ones, p_greater], 1) - torch.cat([p_greater, zeros], 1)).clamp_min(0)
    dist = dist / dist.sum(1, keepdim=True).clamp_min(1e-12)
    ages = torch.arange(dist.shape[1], device=dist.device, dtype=dist.dtype)
    mean = dist @ ages
    std = (dist @ ages.square() - mean.square()).clamp_min(0).sqrt()
    age = (p_greater > 0.5).sum(1).to(p_greater.dtype) if prediction == "threshold" else p_greater.sum(1)
    return {"age": age, "std": std, "probs": p_greater}


class _OrdinalHead(AgeHead):
    def __init__(self, in_features: int, max_age: int, prediction: str):
        if prediction not in PREDICTIONS:
            raise ConfigError(f"head.prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        super().__init__(in_features, None, max_age)
        self.prediction = prediction
        self.register_buffer("thresholds", torch.arange(max_age, dtype=torch.float32), persistent=False)

    def levels(self, batch, like):
        """(binary labels y > k as floats (N, max_age), the rounded ages, mask of known ages)."""
        age, known = self.whole_age_targets(batch, like)
        age = age.float()
        return (age[:, None] > self.thresholds[None, :]).float(), age, known


class CoralHead(_OrdinalHead):
    """CORAL: one weight vector shared by all questions plus one bias per question, which makes the
    answers rank-consistent; loss = sum of the binary cross-entropies over the questions."""

    def __init__(self, in_features: int, max_age: int = 100, prediction: str = "threshold"):
        super().__init__(in_features, max_age, prediction)
        self.fc = nn.Linear(in_features, 1, bias=False)
        # Descending initial biases (as coral-pytorch): training starts with P(y > k) falling with k.
        self.bias = nn.Parameter(torch.arange(max_age, 0, -1, dtype=torch.float32) / max_age)

    def forward(self, features):
        return self.fc(features) + self.bias

    def loss(self, logits, batch):
        labels, _, known = self.levels(batch, logits)
        per_sample = binary_cross_entropy_terms(logits.float(), labels).sum(1)
        return masked_mean(per_sample, known, sample_weights(batch, logits))

    def _decode(self, logits):
        return decode_exceedance(logits.float().sigmoid(), self.prediction)


class CornHead(_OrdinalHead):
    """CORN: independent outputs for the conditional questions P(y > k | y > k-1); question k is
    trained only on samples with y >= k, and the loss averages over all (sample, question) pairs
    used. P(y > k) is the running product, so the answers are rank-consistent by construction."""

    def __init__(self, in_features: int, max_age: int = 100, prediction: str = "threshold"):
        super().__init__(in_features, max_age, prediction)
        self.fc = nn.Linear(in_features, max_age)

    def loss(self, logits, batch):
        labels, age, known = self.levels(batch, logits)
        asked = (age[:, None] >= self.thresholds[None, :]).float()  # question k is asked when y > k-1
        terms = binary_cross_entropy_terms(logits.float(), labels) * asked
        weight = known.float()
        extra = sample_weights(batch, logits)
        if extra is not None:
            weight = weight * extra
        per_sample = torch.where(known, terms.sum(1), torch.zeros_like(weight))
        return (per_sample * weight).sum() / (asked.sum(1) * weight).sum().clamp_min(1e-12)

    def _decode(self, logits):
        return decode_exceedance(logits.float().sigmoid().cumprod(dim=1), self.prediction)
