"""What every head does: the output layer, the loss, and decoding logits back to ages or groups."""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """Base class. ``task`` is "age" (decode gives ages) or "group" (decode gives group indices).

    ``loss(logits, batch)`` reads the targets it needs from the batch dict ("age", "group");
    ``decode(logits)`` returns a dict with "age" and "std" (age heads) or "group" and "probs".
    """

    task = "age"

    def __init__(self, in_features: int, num_outputs: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError
