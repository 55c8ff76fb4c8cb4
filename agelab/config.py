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
    """Hydra's composition error in one line: "Could not find 'model/nope' (available in 'model': a, b)"."""
    text = hydra_message.split("Config search path")[0].strip()
    head, _, options = text.partition("\n\nAvailable options in ")
    if not options:
        return " ".join(text.split())
    group, _, names = options.partition(":")
    return f"{' '.join(head.split())} (available in {group}: {', '.join(names.split())})"


def compose_config(config_name: str = "train", overrides=(), output_dir: str | Path = "outputs") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` outside ``@hydra.main`` (tools, tests), with the Hydra
    runtime fields the configs interpolate (``hydra:runtime.output_dir``, ``hydra:runtime.choices``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException

    from agelab.errors import ConfigError

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        try:
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        except HydraException as exc:  # e.g. model=nope: Hydra's several lines (options listed) made one
            raise ConfigError(one_line(str(exc))) from exc
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


# Code a config may name in `_target_`: a YAML file must not be able to call os.system & co.
ALLOWED_TARGET_PREFIXES = ("agelab.", "torch.", "torchvision.", "torchmetrics.", "pytorch_lightning.",
                           "albumentations.")


def check_targets(cfg, allowed=ALLOWED_TARGET_PREFIXES) -> None:
    """Raise ConfigError if any ``_target_`` (outside Hydra's own ``hydra`` node) names code outside ``allowed``."""
    from agelab.errors import ConfigError

    def walk(node, where):
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and not str(target).startswith(allowed):
                raise ConfigError(f"{where or 'config'}._target_={target!r} is not allowed "
                                  f"(allowed: {', '.join(p.rstrip('.') for p in allowed)})")
            for key, value in node.items():
                if not (where == "" and key == "hydra"):
                    walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg, "")


def missing_values(node, prefix: str = "") -> list[str]:
    """Keys still ``???`` in a plain (unresolved) config container, e.g. ["data.root"]."""
    if isinstance(node, dict):
        children = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        children = [(f"{prefix}[{i}]", v) for i, v in enumerate(node)]
    else:
        return []
    found = []
    for key, value in children:
        found += [key] if value == "???" else missing_values(value, key)
    return found


def require_values(cfg: DictConfig) -> None:
    """One clear line for a mandatory value left out (``???`` in the config, e.g. data.root)."""
    from agelab.errors import ConfigError

    plain = OmegaConf.to_container(cfg, resolve=False)
    missing = [k for k in missing_values(plain) if not k.startswith("hydra.")]
    if missing:
        value = "<dataset folder>" if missing[0] == "data.root" else "<value>"
        raise ConfigError(f"{missing[0]} is required: pass {missing[0]}={value}")


def require_known_arguments(fn, key: str) -> None:
    """A ``_partial_: true`` target from the config (a reader, a split) with a keyword its function
    does not take (``+data.source.reader.foo=1``): one line naming ``key`` now, not a TypeError later."""
    import inspect

    from agelab.errors import ConfigError

    func, keywords = getattr(fn, "func", None), getattr(fn, "keywords", None) or {}
    if func is None:
        return
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(keywords) - set(params))
    if unknown:
        raise ConfigError(f"{key}: {func.__name__} takes no {', '.join(unknown)} (it takes {', '.join(params)})")
