"""SMLF-Net, built from the table in docs/reference_systems.md §2.

Inverted bottlenecks (1x1 expand, 3x3 depthwise, 1x1 project) with LeakyReLU, a squeeze-and-
excitation block on every bottleneck's output (reduction 4, before the residual add, as in
SE-ResNet), residuals where the table marks RE, then DW2: a depthwise conv spanning the whole
final map (7x7 at 112x112 input) and a 1x1 conv to 128 features. With the 66-way DEX head this
is 1.36 M parameters (paper: 1.37 M). ``smlf_small`` halves every channel count (64x64 input).
"""

from __future__ import annotations

from torch import nn

from agelab.errors import ConfigError
from agelab.models.registry import register

# (channels, expansion t, residual, stride, repeats) for the bottleneck rows of the table.
BOTTLENECK_ROWS = ((64, 2, False, 2, 2), (64, 2, True, 1, 3), (128, 4, False, 2, 1),
                   (128, 2, True, 1, 4), (256, 4, False, 2, 1), (256, 2, True, 1, 2))
STEM, DW1, DW2 = 32, 32, 128
DOWNSAMPLE = 16  # total stride: stem 2 x three stride-2 rows


def conv_bn(cin, cout, kernel=1, stride=1, groups=1, act=True, padding=None):
    padding = kernel // 2 if padding is None else padding
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x)


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, expansion, stride, residual, se_reduction=4):
        super().__init__()
        hidden = cin * expansion
        self.body = nn.Sequential(conv_bn(cin, hidden), conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                  conv_bn(hidden, cout, act=False), SqueezeExcite(cout, se_reduction))
        self.residual = residual and stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


@register("smlf")
class SMLFNet(nn.Module):
    def __init__(self, input_size: int = 112, width: float = 1.0, se_reduction: int = 4, in_channels: int = 3):
        super().__init__()
        if input_size % DOWNSAMPLE or input_size < DOWNSAMPLE:
            raise ConfigError(f"model.input_size must be a positive multiple of {DOWNSAMPLE}, got {input_size}")
        c = lambda n: max(8, int(round(n * width)))  # noqa: E731
        layers = [conv_bn(in_channels, c(STEM), 3, 2),
                  conv_bn(c(STEM), c(DW1)), conv_bn(c(DW1), c(DW1), 3, groups=c(DW1)), SqueezeExcite(c(DW1), se_reduction)]
        cin = c(DW1)
        for channels, t, residual, stride, repeats in BOTTLENECK_ROWS:
            for i in range(repeats):
                layers.append(Bottleneck(cin, c(channels), t, stride if i == 0 else 1, residual, se_reduction))
                cin = c(channels)
        final = input_size // DOWNSAMPLE
        layers += [conv_bn(cin, cin, final, groups=cin, act=False, padding=0), conv_bn(cin, c(DW2), act=False), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.input_size = input_size
        self.out_features = c(DW2)

    def forward(self, x):
        return self.features(x)


@register("smlf_small")
class SMLFNetSmall(SMLFNet):
    def __init__(self, input_size: int = 64, width: float = 0.5, se_reduction: int = 4, in_channels: int = 3):
        super().__init__(input_size, width, se_reduction, in_channels)
