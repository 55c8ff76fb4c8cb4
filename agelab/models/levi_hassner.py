"""The Levi–Hassner style CNN for Adience age groups (docs/reference_systems.md §1), without its final FC 8.

Three conv blocks (conv -> ReLU -> maxpool 2 -> BN), then FC 512 -> ReLU -> FC 512 -> ReLU; the
8-way output layer belongs to the head (``head=ce``). The flatten size follows from the input size:
with these strides an input of 816..959 pixels leaves a 6x6x384 map, the reference's 6*6*384 — i.e.
the reference fed the full 816x816 aligned Adience faces. The default here is the paper's 227x227
crop, which leaves 1x1x384; the smallest usable input is 96.
"""

from __future__ import annotations

from torch import nn

from agelab.errors import ConfigError
from agelab.models.registry import register

# (out channels, kernel, stride, padding) of the three conv blocks; each is followed by a 2x2 max pool.
CONV_BLOCKS = ((96, 7, 3, 2), (256, 5, 3, 2), (384, 3, 2, 1))


def feature_map_size(input_size: int) -> int:
    """Side of the last pooled map for a square input (0 if the input is too small)."""
    n = input_size
    for _, kernel, stride, padding in CONV_BLOCKS:
        n = (n + 2 * padding - kernel) // stride + 1
        n = n // 2 if n > 0 else 0
    return max(n, 0)


@register("levi_hassner")
class LeviHassnerNet(nn.Module):
    def __init__(self, input_size: int = 227, hidden: int = 512, dropout: float = 0.5, in_channels: int = 3):
        super().__init__()
        side = feature_map_size(input_size)
        if side < 1:
            raise ConfigError(f"model.input_size={input_size} is too small for levi_hassner (needs >= 96)")
        if not 0 <= dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
        layers, cin = [], in_channels
        for cout, kernel, stride, padding in CONV_BLOCKS:
            layers += [nn.Conv2d(cin, cout, kernel, stride, padding), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                       nn.BatchNorm2d(cout)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.flatten_size = cin * side * side
        self.classifier = nn.Sequential(
            nn.Linear(self.flatten_size, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.input_size = input_size
        self.out_features = hidden

    def forward(self, x):
        return self.classifier(self.features(x))
