"""Transfer learning: a torchvision backbone from the zoo initialised from a local state-dict file.

Nothing is ever downloaded (the backbones are built with ``weights=None``). ``weights_path`` is a
``.pth`` file holding a state dict of the torchvision model (e.g. ``torchvision.models.resnet18(
weights=...).state_dict()`` saved on a machine with network access), of this zoo's model, or a
Lightning checkpoint of an agelab run. The removed classifier's weights are ignored; any other
missing or unexpected parameter is an error. Freezing the backbone for the first epochs is the
module's ``freeze_epochs`` option.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from agelab.errors import ConfigError
from agelab.models.registry import MODELS
from agelab.models.torchvision_base import TorchvisionBackbone

# Prefixes a saved state dict may carry in front of the torchvision names: a Lightning checkpoint of
# an agelab run ("model.net."), this zoo's wrapper ("net."), DataParallel ("module.").
KNOWN_PREFIXES = ("model.net.", "net.", "module.")


def backbone_names() -> list[str]:
    return sorted(name for name, cls in MODELS.items() if isinstance(cls, type) and issubclass(cls, TorchvisionBackbone))


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means it is not a usable state dict
        raise ConfigError(f"{path}: not a loadable state dict ({type(exc).__name__})") from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ConfigError(f"{path}: expected a state dict (parameter name -> tensor)")
    for prefix in KNOWN_PREFIXES:
        if data and all(k.startswith(prefix) for k in data if not k.startswith("head.")):
            data = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
            break
    return data


def load_backbone_weights(model: TorchvisionBackbone, path: str | Path) -> None:
    path = Path(path)
    state = read_state_dict(path)
    removed = model.removed_layer + "."
    state = {k: v for k, v in state.items() if not k.startswith(removed)}  # the classifier we dropped
    result = model.net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        problems = [f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[:2]})" if result.missing_keys else "",
                    f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:2]})"
                    if result.unexpected_keys else ""]
        raise ConfigError(f"{path}: does not match backbone {type(model).__name__}: "
                          + "; ".join(p for p in problems if p))


def pretrained_backbone(backbone: str, weights_path: str | None, input_size: int = 112) -> TorchvisionBackbone:
    """The zoo model ``backbone`` with the weights read from ``weights_path``."""
    if backbone not in backbone_names():
        raise ConfigError(f"model.backbone '{backbone}' is not a torchvision backbone; choose one of: "
                          f"{', '.join(backbone_names())}")
    if not weights_path:
        raise ConfigError("model.weights_path is required for model=pretrained (a local .pth state dict)")
    if not Path(weights_path).is_file():
        raise ConfigError(f"model.weights_path: no file at {weights_path}")
    model = MODELS[backbone](input_size=input_size)
    load_backbone_weights(model, weights_path)
    return model


def without_pretrained_weights(model_cfg: DictConfig) -> DictConfig:
    """The same architecture without reading ``weights_path`` — for rebuilding a trained model from a
    checkpoint, which holds the trained weights (the original file may not exist on this machine)."""
    if model_cfg.get("_target_") != f"{__name__}.pretrained_backbone":
        return model_cfg
    cls = MODELS[model_cfg.backbone]
    return OmegaConf.create({"_target_": f"{cls.__module__}.{cls.__qualname__}", "input_size": model_cfg.input_size})
