"""Torchvision classifiers as feature extractors: built with ``weights=None`` (never a download),
their last Linear layer replaced by Identity, so they output the features that layer would read.

Anything before that layer stays (dropout, MobileNetV3's hidden 1024/1280 layer), which keeps the
parameter names of a torchvision state dict: ``agelab.models.pretrained`` loads one into ``net``.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from agelab.errors import ConfigError


def replace_last_linear(net: nn.Module) -> tuple[str, int]:
    """Swap the module's last nn.Linear for Identity; returns (its dotted name, its in_features)."""
    name, last = None, None
    for child_name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            name, last = child_name, module
    if last is None:
        raise ValueError(f"{type(net).__name__} has no Linear layer to remove")
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return name, last.in_features


class TorchvisionBackbone(nn.Module):
    """Subclasses set ``build`` (a torchvision constructor), ``build_kwargs`` and ``min_input``."""

    build: Callable[..., nn.Module]
    build_kwargs: dict = {}
    min_input = 32  # total stride 32: the last map is 1x1

    def __init__(self, input_size: int = 112):
        super().__init__()
        if input_size < self.min_input:
            raise ConfigError(f"model.input_size={input_size} is too small for {type(self).__name__} "
                              f"(needs >= {self.min_input})")
        self.net = type(self).build(weights=None, **self.build_kwargs)
        self.removed_layer, self.out_features = replace_last_linear(self.net)
        self.input_size = input_size

    def forward(self, x):
        return self.net(x)
