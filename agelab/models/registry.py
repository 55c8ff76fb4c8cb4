"""A name -> model-class registry, so tools can list and build every architecture."""

from __future__ import annotations

from typing import Callable

from torch import nn

from agelab.errors import ConfigError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Class decorator: make a model buildable as ``build_model(name, ...)``."""

    def add(cls):
        MODELS[name] = cls
        return cls

    return add


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
