"""Age (or group) plus gender: any head with an extra 2-way gender output.

``batch["gender"]`` is 0 (female), 1 (male) or -1 (unknown, ignored), or a list of "f"/"m"
strings; batches without it train the age part alone. Loss = age loss + gender_weight x
gender cross-entropy. Decoding adds "gender" (0/1) and "p_male".
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from agelab.errors import ConfigError
from agelab.heads.base import Head, masked_mean, sample_weights
from agelab.metrics import gender_tensor


class MultiTaskHead(Head):
    def __init__(self, in_features: int, age_head: Head | Callable[[int], Head], gender_weight: float = 0.5):
        if gender_weight < 0:
            raise ConfigError(f"head.gender_weight must be >= 0, got {gender_weight}")
        super().__init__(in_features)
        # From a config the age head arrives as a partial (``_partial_: true``) still needing in_features.
        self.age_head = age_head if isinstance(age_head, Head) else age_head(in_features=in_features)
        self.gender_fc = nn.Linear(in_features, 2)
        self.gender_weight = gender_weight
        self.task = self.age_head.task

    @property
    def has_spread(self) -> bool:
        return self.age_head.has_spread

    def forward(self, features):
        return torch.cat([self.age_head(features), self.gender_fc(features)], dim=1)

    def loss(self, logits, batch):
        loss = self.age_head.loss(logits[:, :-2], batch)
        if batch.get("gender") is None or self.gender_weight == 0:
            return loss
        gender = gender_tensor(batch["gender"], logits.device)
        known = gender >= 0
        per_sample = F.cross_entropy(logits[:, -2:].float(), gender.clamp_min(0), reduction="none")
        return loss + self.gender_weight * masked_mean(per_sample, known, sample_weights(batch, logits))

    def _decode(self, logits):
        out = self.age_head.decode(logits[:, :-2])
        p_male = logits[:, -2:].float().softmax(dim=1)[:, 1]
        out.update(gender=(p_male > 0.5).long(), p_male=p_male)
        return out
