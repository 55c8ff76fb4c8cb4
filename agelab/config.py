"""OmegaConf resolvers the configs use."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

PACKAGE_DIR = Path(__file__).resolve().parent
# The Hydra configs: inside the package when installed from a wheel, beside it in a checkout.
CONF_DIR = next((d for d in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf") if d.is_dir()), PACKAGE_DIR.parent / "conf")

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


def target_nodes(node, where: str = ""):
    """(key, node) for every dict with a ``_target_`` in a plain config container, Hydra's own node left out."""
    if isinstance(node, dict):
        if node.get("_target_") is not None:
            yield where or "config", node
        for key, value in node.items():
            if not (where == "" and key == "hydra"):
                yield from target_nodes(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from target_nodes(value, f"{where}[{i}]")


# Keys Hydra reads itself; every other key of a node is an argument of its target.
HYDRA_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}


def unknown_arguments(target: str, node: dict) -> str | None:
    """"SynthSource takes no foo (did you mean ...)" when ``node`` has keys its target does not take;
    None when they all fit or the target cannot be looked at (it takes ``**kwargs``, it is built in)."""
    import difflib
    import inspect

    from hydra.utils import get_object

    if "${" in target:
        return None
    try:
        params = inspect.signature(get_object(target)).parameters
    except (ImportError, ValueError, TypeError):  # a wrong name is Hydra's error to tell, at instantiation
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    unknown = [k for k in node if k not in HYDRA_KEYS and k not in params]
    if not unknown:
        return None
    near = difflib.get_close_matches(unknown[0], list(params), n=1)
    hint = f"did you mean {near[0]}?" if near else f"it takes {', '.join(params)}"
    return f"{target.rsplit('.', 1)[-1]} takes no {', '.join(unknown)} ({hint})"


def check_targets(cfg, allowed=ALLOWED_TARGET_PREFIXES, arguments: bool = True, where: str = "") -> None:
    """Raise ConfigError if a ``_target_`` (outside Hydra's own ``hydra`` node) names code outside
    ``allowed`` or, with ``arguments``, has a key its target does not take (``+data.source.foo=1``):
    one line before any work, not a TypeError from deep inside instantiation. ``where``: the key of
    ``cfg`` in the whole config, for the messages."""
    from agelab.errors import ConfigError

    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    for key, node in target_nodes(plain, where):
        target = str(node["_target_"])
        if not target.startswith(allowed):
            raise ConfigError(f"{key}._target_={target!r} is not allowed "
                              f"(allowed: {', '.join(p.rstrip('.') for p in allowed)})")
        mistake = arguments and unknown_arguments(target, node)
        if mistake:
            raise ConfigError(f"{key}: {mistake}")


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
