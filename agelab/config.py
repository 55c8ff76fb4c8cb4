"""Where the configs are and how they are read: CONF_DIR (packaged or beside the checkout), the
OmegaConf resolvers they use, ``compose_config`` for tools and tests outside ``@hydra.main``.
What a config may contain is checked in agelab.config_checks."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

PACKAGE_DIR = Path(__file__).resolve().parent
# The Hydra configs: inside the package when installed from a wheel, beside it in a checkout.
CONF_DIR = next((d for d in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf") if d.is_dir()), PACKAGE_DIR.parent / "conf")

CROP_FRACTION = 0.875  # eval: resize to size / 0.875, centre-crop size (the margin random crops train on)


def crop_margin(size) -> int:
    return int(round(int(size) / CROP_FRACTION))


def crop_area(size) -> float:
    """The share of the stored face's area an unscaled ``size`` crop takes (0.765625 at 112 of 128 px)."""
    return (int(size) / crop_margin(size)) ** 2


def register_resolvers() -> None:
    for name, resolver in (("crop_margin", crop_margin), ("crop_area", crop_area)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def hydra_node(cfg: DictConfig) -> DictConfig:
    """Hydra's own config (``hydra.overrides.task``, ``hydra.runtime.choices``...): a config composed by
    ``compose_config`` carries it, while ``@hydra.main`` strips it from the job's config and keeps it
    in HydraConfig."""
    node = OmegaConf.select(cfg, "hydra", default=None)
    if node is None:
        from hydra.core.hydra_config import HydraConfig

        node = HydraConfig.get() if HydraConfig.initialized() else OmegaConf.create({})
    return node


def one_line(hydra_message: str) -> str:
    """Hydra's composition error in one line (its config search path left out)."""
    return " ".join(hydra_message.split("Config search path")[0].split())


def compose_config(config_name: str = "train", overrides=(), output_dir: str | Path = "outputs") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` outside ``@hydra.main`` (tools, tests), with the Hydra
    runtime fields the configs interpolate (``hydra:runtime.output_dir``, ``hydra:runtime.choices``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException

    from agelab.config_checks import unknown_group_choice
    from agelab.errors import ConfigError

    mistake = unknown_group_choice(list(overrides))  # the same line the entry points give, options listed
    if mistake:
        raise ConfigError(mistake)
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        try:
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        except HydraException as exc:  # e.g. an override of a key that is not there: Hydra's lines made one
            raise ConfigError(one_line(str(exc))) from exc
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg
