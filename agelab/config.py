"""OmegaConf resolvers the configs use."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

CROP_FRACTION = 0.875  # eval: resize to size / 0.875, centre-crop size (the margin random crops train on)


def crop_margin(size) -> int:
    return int(round(int(size) / CROP_FRACTION))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("crop_margin"):
        OmegaConf.register_new_resolver("crop_margin", crop_margin)


def compose_config(config_name: str = "train", overrides=(), output_dir: str | Path = "outputs") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` outside ``@hydra.main`` (tools, tests), with the Hydra
    runtime fields the configs interpolate (``hydra:runtime.output_dir``, ``hydra:runtime.choices``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg
