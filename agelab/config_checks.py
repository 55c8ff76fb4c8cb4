"""Checks of a composed config before any work: every ``_target_`` names allowed code and only the
arguments that code takes, and no required value (``???``) is left out."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from agelab.config import CONF_DIR


@functools.cache
def allowed_targets() -> frozenset[str]:
    """The code a config may name in ``_target_``: exactly the callables agelab's own configs build
    (every ``_target_`` in conf/, Hydra's own nodes left out). Not package prefixes: under ``torch.``
    alone lie ``torch.load``, ``torch.hub.load`` and ``torch.fx``'s code compiler, and a checkpoint's
    stored config, like a YAML file or the command line, must not be able to run code."""
    found = set()
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        if path.relative_to(CONF_DIR).parts[0] in ("hydra", "hparams_search"):  # Hydra's launchers and sweepers
            continue
        found.update(str(node["_target_"]) for _, node in target_nodes(OmegaConf.to_container(OmegaConf.load(path))))
    return frozenset(found)


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


def check_targets(cfg, arguments: bool = True, where: str = "") -> None:
    """Raise ConfigError if a ``_target_`` (outside Hydra's own ``hydra`` node) names code outside
    ``allowed_targets()`` or, with ``arguments``, has a key its target does not take (``+data.source.foo=1``):
    one line before any work, not a TypeError from deep inside instantiation. ``where``: the key of
    ``cfg`` in the whole config, for the messages."""
    from agelab.errors import ConfigError

    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    for key, node in target_nodes(plain, where):
        target = str(node["_target_"])
        if target not in allowed_targets():
            raise ConfigError(f"{key}._target_={target!r} is not allowed (a config may build only what agelab's "
                              "configs in conf/ name)")
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


def require_values(cfg: DictConfig, where: str = "") -> None:
    """One clear line for a mandatory value left out (``???`` in the config, e.g. data.root);
    ``where``: the key ``cfg`` sits under in the whole config ("data" for cfg.data)."""
    from agelab.errors import ConfigError

    plain = OmegaConf.to_container(cfg, resolve=False)
    missing = [k for k in missing_values(plain, where) if not k.startswith("hydra.")]
    if missing:
        value = "<dataset folder>" if missing[0] == "data.root" else "<value>"
        raise ConfigError(f"{missing[0]} is required: pass {missing[0]}={value}")


SWEEP_SYNTAX = ("(", "[", "$")  # range(...), choice(...), glob(...), lists, interpolations: Hydra's to read


def unknown_group_choice(argv: list[str], conf_dir=CONF_DIR) -> str | None:
    """``model=nope`` (or ``model=smlf,nope`` in a sweep) naming no conf/<group>/<option>.yaml, in
    one line listing the options; None when every group choice exists."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        group = key.split("@", 1)[0]
        if (arg.startswith("-") or not sep or not value or any(c in value for c in SWEEP_SYNTAX)
                or group.startswith("hydra/") or not (conf_dir / group).is_dir()):
            continue  # a flag, a value, Hydra's own groups (its package adds options), sweep syntax
        for option in (v.strip().strip("'\"") for v in value.split(",")):
            if option != "null" and not (conf_dir / group / f"{option}.yaml").is_file():
                known = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
                return f"Could not find '{group}/{option}' (available in '{group}': {', '.join(known)})"
    return None


# Hydra's words for a config it cannot compose from the overrides: a key the config lacks (or adding one
# it has), an option no conf/<group>/ file holds (Hydra's own groups too: hydra/launcher=nope).
COMPOSE_MISTAKES = ("Could not override", "Could not append", "Could not delete", "Could not find")


def check_value(override):
    """The value a sweep override is checked with: its first choice, or an interval's start (the keys
    are the same for every job); None when there is none to take."""
    from hydra.errors import HydraException

    try:
        return next(iter(override.sweep_string_iterator()), None)
    except HydraException:  # interval(...) of the Optuna sweeper: not enumerable
        start = getattr(override.value(), "start", None)
        return None if start is None else str(start)


def run_folder_mistake(cfg: DictConfig, multirun: bool) -> str | None:
    """Why Hydra cannot make the composed run's folder (``hydra.run.dir``; ``hydra.sweep.dir`` with -m),
    in one line: Hydra makes it before the command starts, and fails with a traceback. None when it can."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = Path(str(OmegaConf.select(cfg, key)))
    nearest = next(p for p in (folder, *folder.parents) if os.path.exists(p))  # ("/" or "." at the latest)
    if not nearest.is_dir():
        return f"{key}: cannot make {folder} ({nearest} is not a folder)"
    if not os.access(nearest, os.W_OK | os.X_OK):
        return f"{key}: cannot make {folder} ({nearest} is not writable)"
    return None


def composition_mistake(config_name: str, argv: list[str]) -> str | None:
    """What Hydra could not compose from ``argv`` (``faces.enlargee=2``: a key ``conf/<config_name>.yaml``
    lacks, also in a sweep; ``hydra/launcher=nope``) in one line, a misspelt key with the nearest key of
    its node, or the run folder it could not make (run_folder_mistake); None when all is well. Composes
    the config once (a fraction of a second); Hydra's other errors are left to Hydra."""
    import difflib

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from agelab.config import compose_config
    from agelab.errors import ConfigError

    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return None  # --cfg, --config-name, ...: Hydra's flags change what is composed
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if a not in ("-m", "--multirun")])
    except Exception:  # noqa: BLE001 - a syntax error is Hydra's to tell
        return None
    checked = []  # (override, the line composed for it)
    for o in parsed:
        value = check_value(o) if o.is_sweep_override() else o.input_line
        if value is not None:
            checked.append((o, f"{o.get_key_element()}={value}" if o.is_sweep_override() else value))
    try:
        cfg = compose_config(config_name, [line for _, line in checked])
        return run_folder_mistake(cfg, multirun=any(a in ("-m", "--multirun") for a in argv))
    except ConfigError as exc:
        message = str(exc)
    except ValueError as exc:  # group=null, where the defaults list has no null option
        return f"{exc} (to drop a config group's default, use ~<group>)"
    if not any(phrase in message for phrase in COMPOSE_MISTAKES):
        return None
    bad = next((o for o, _ in checked if f"'{o.key_or_group}'" in message), None)
    if bad is None or not message.startswith("Could not override"):
        return message
    parent, _, leaf = bad.key_or_group.rpartition(".")
    try:
        cfg = compose_config(config_name, [line for o, line in checked if o is not bad])
        node = OmegaConf.select(cfg, parent) if parent else cfg
    except ConfigError:
        node = None
    keys = [str(k) for k in node.keys() if k != "hydra"] if isinstance(node, DictConfig) else []
    near = difflib.get_close_matches(leaf, keys, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{near[0]}?; " if near else ""
    return f"{bad.key_or_group} is not a key of the {config_name} config ({hint}to add a new key: +{bad.input_line})"
