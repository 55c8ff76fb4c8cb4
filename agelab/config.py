"""OmegaConf resolvers the configs use."""

from __future__ import annotations

from omegaconf import OmegaConf

CROP_FRACTION = 0.875  # eval: resize to size / 0.875, centre-crop size (the margin random crops train on)


def crop_margin(size) -> int:
    return int(round(int(size) / CROP_FRACTION))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("crop_margin"):
        OmegaConf.register_new_resolver("crop_margin", crop_margin)
