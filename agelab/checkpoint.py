"""Rebuilding a trained model from its checkpoint alone (safe loading: tensors and plain types only)."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from agelab.config_checks import check_targets
from agelab.errors import ConfigError
from agelab.models.pretrained import without_pretrained_weights
from agelab.module import AgeModule
from agelab.tracking import CONFIG_KEY


def is_torchscript(path: Path) -> bool:
    """A torch.jit.save archive (agelab.export's model.ts): a zip holding the scripted code."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def check_archive(path: Path) -> None:
    """A ConfigError unless ``path`` is a whole zip archive that unpacks to no more than its own size.

    torch.save stores its members uncompressed, so a checkpoint's members add up to less than the file;
    torch.load allocates each member at the size the archive claims for it, so an archive claiming more
    (a compressed zip bomb, or a stored member whose stated size is a lie) is refused before it loads.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{path}: the checkpoint is truncated or damaged (its zip directory cannot be read: "
                          f"{exc})") from exc
    size = path.stat().st_size
    if unpacked > size:
        raise ConfigError(f"{path}: not a checkpoint as torch.save writes it (its zip members unpack to "
                          f"{unpacked} bytes, more than the file's {size})")


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}")
    if path.suffix.lower() == ".onnx":
        raise ConfigError(f"{path}: an ONNX model, not a checkpoint (predict takes it as onnx=; eval and export "
                          "need the .ckpt written by agelab.train)")
    with path.open("rb") as file:
        magic = file.read(2)
    if not magic.startswith((b"PK", b"\x80")):  # torch.save writes a zip (or, long ago, a pickle)
        raise ConfigError(f"{path}: not a PyTorch checkpoint")
    if magic == b"PK":
        check_archive(path)
    if is_torchscript(path):
        raise ConfigError(f"{path}: a TorchScript model, not a checkpoint (for torch.jit.load; predict takes the "
                          "exported .onnx as onnx=; eval and export need the .ckpt written by agelab.train)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch.load raises, the file is not a safe checkpoint
        # (not PyTorch's own message: it suggests weights_only=False, which would run code from the file)
        raise ConfigError(f"{path}: not a loadable agelab checkpoint (it is not made of tensors and plain values "
                          f"only, and agelab unpickles nothing else; {type(exc).__name__})") from exc


def stored_config(checkpoint: dict, path: str | Path) -> DictConfig:
    """The config a checkpoint was trained with, its ``_target_``s checked against the allow-list
    (a stored config names code too, like the command line)."""
    if CONFIG_KEY not in checkpoint:
        raise ConfigError(f"{path}: checkpoint has no stored config (was it written by agelab.train?)")
    cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    check_targets(cfg, arguments=False)
    return cfg


def load_module(path: str | Path, checkpoint: dict | None = None) -> tuple[AgeModule, DictConfig]:
    """(AgeModule in eval mode with the trained weights, the config it was trained with).
    ``checkpoint``: the file's contents when the caller has read it already."""
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    cfg = stored_config(checkpoint, path)
    model = instantiate(without_pretrained_weights(cfg.model))  # the checkpoint holds the trained weights
    head = instantiate(cfg.head, in_features=model.out_features)
    module = AgeModule(model=model, head=head, optimizer=None, channels_last=False)
    module.load_state_dict(trained_state(checkpoint, path))
    return module.eval(), cfg


def trained_state(checkpoint: dict, path: str | Path) -> dict:
    """The checkpoint's state dict under plain names (a model trained with ``compile=true`` saves
    its weights under ``model._orig_mod.``)."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: checkpoint has no state_dict")
    state = {k.replace("model._orig_mod.", "model.", 1): v for k, v in state.items()}
    state.setdefault("head.spread_scale", torch.ones(()))  # trained before the spread was calibrated
    return state


def eval_transform(cfg: DictConfig):
    """The deterministic eval transform a checkpoint's model was tested with (its stored config)."""
    return instantiate(OmegaConf.select(cfg, "data.eval_transform") or cfg.augment.eval)


def load_weights(module: torch.nn.Module, path: str | Path, checkpoint: dict | None = None) -> None:
    """Start ``module`` (an AgeModule) from the weights of an agelab checkpoint: same model and head
    (a fresh optimiser, schedule and MLflow run: fine-tuning, pruning). Mismatches name the layers.
    ``checkpoint``: the file's contents when the caller has read it already."""
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    state = trained_state(checkpoint, path)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        details = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for label, keys in
                   (("missing", missing), ("unexpected", unexpected), ("different shape", wrong_shape)) if keys]
        raise ConfigError(f"{path}: weights do not fit this model and head ({'; '.join(details)}); "
                          f"use the model=, head= and data= it was trained with{trained_with(checkpoint)}")
    module.load_state_dict(state)


def trained_with(checkpoint: dict) -> str:
    """The hint ``(<model class>, <head class>, data.max_age=<n>)`` from the checkpoint's stored
    config, or "" when it has none."""
    try:
        cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
        names = [str(OmegaConf.select(cfg, f"{key}._target_")).rsplit(".", 1)[-1] for key in ("model", "head")]
        max_age = OmegaConf.select(cfg, "data.max_age")
    except Exception:  # noqa: BLE001 - only a hint: a checkpoint without a readable config gives none
        return ""
    return f" ({', '.join(names)}{f', data.max_age={max_age}' if max_age is not None else ''})"
