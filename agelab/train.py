"""Train a model from the Hydra config: ``python -m agelab.train [overrides]``."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from agelab.callbacks import CheckpointRunId
from agelab.cli import run_or_exit
from agelab.data.report import DataReport
from agelab.errors import ConfigError
from agelab.tracking import flatten_config

log = logging.getLogger(__name__)


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


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
    plain = OmegaConf.to_container(cfg, resolve=False)
    missing = [k for k in missing_values(plain) if not k.startswith("hydra.")]
    if missing:
        value = "<dataset folder>" if missing[0] == "data.root" else "<value>"
        raise ConfigError(f"{missing[0]} is required: pass {missing[0]}={value}")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns every logged metric (train/val/test)."""
    require_values(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.ckpt_path:
        if not Path(cfg.ckpt_path).is_file():
            raise ConfigError(f"ckpt_path: no checkpoint at {cfg.ckpt_path}")
        with open_dict(cfg):  # keep writing checkpoints next to the one we resume from
            cfg.callbacks.model_checkpoint.dirpath = str(Path(cfg.ckpt_path).parent)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    head = instantiate(cfg.head, in_features=model.out_features)
    module = instantiate(cfg.module, model=model, head=head)
    if cfg.get("compile"):
        module.model = torch.compile(module.model)
    logger = instantiate(cfg.logger, resume_from=cfg.ckpt_path)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    callbacks.append(DataReport())  # faces kept/dropped and split sizes, printed and logged to the run
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    for callback in callbacks:
        if isinstance(callback, CheckpointRunId):
            callback.config_yaml = config_yaml
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)

    if not cfg.ckpt_path:  # a resumed run already has its params (MLflow refuses to change them)
        logger.log_hyperparams(flatten_config(cfg))
        logger.experiment.log_text(logger.run_id, config_yaml, "config/config.yaml")
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = _scalars(trainer.callback_metrics)
    trainer.test(module, datamodule=datamodule, ckpt_path="best" if trainer.checkpoint_callback else None)
    metrics.update(_scalars(trainer.callback_metrics))
    metrics["best_model_path"] = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    log.info("test metrics: %s", {k: round(v, 4) for k, v in metrics.items() if k.startswith("test/")})
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_or_exit(train, cfg)
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
