"""A small baseline CNN: three conv -> BN -> ReLU -> max-pool blocks, then a dense layer with dropout."""

from __future__ import annotations

from torch import nn

from agelab.errors import ConfigError
from agelab.models.registry import register


@register("simple_cnn")
class SimpleCNN(nn.Module):
    def __init__(self, input_size: int = 64, channels: tuple[int, ...] = (32, 64, 128), hidden: int = 256,
                 dropout: float = 0.5, in_channels: int = 3):
        super().__init__()
        channels = tuple(channels)
        side = input_size // 2 ** len(channels)
        if side < 1:
            raise ConfigError(f"model.input_size={input_size} is too small for simple_cnn "
                              f"(needs >= {2 ** len(channels)})")
        layers, cin = [], in_channels
        for cout in channels:
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(cin * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.input_size = input_size
        self.out_features = hidden

    def forward(self, x):
        return self.classifier(self.features(x))
