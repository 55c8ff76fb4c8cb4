"""Training from a resolved config: fit, test the best checkpoint, and everything it needs first
(the checks that stop a bad command before any work, resuming, the module). ``python -m agelab.train``
is its command line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from agelab.callbacks import CheckpointRunId
from agelab.callbacks.label_check import LabelCheck
from agelab.callbacks.mlflow_utils import best_checkpoint_path
from agelab.checkpoint import load_weights, read_checkpoint
from agelab.data.report import DataReport
from agelab.errors import ConfigError
from agelab.results.runs import COMPLETE_TAG
from agelab.resume import (check_resume, finished_run_metrics, fitted, group_choices, tested_already,
                           warn_if_other_data)
from agelab.run_folder import (end_stranded_run, lock_checkpoint_folder, release_checkpoint_folder,
                               set_aside_old_checkpoints)
from agelab.tracking import RUN_ID_KEY, flatten_config

log = logging.getLogger(__name__)


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def build_module(cfg: DictConfig):
    """The LightningModule of ``cfg``: model -> head sized to the model's features, compiled if asked."""
    model = instantiate(cfg.model)
    head = instantiate(cfg.head, in_features=model.out_features)
    module = instantiate(cfg.module, model=model, head=head)
    if cfg.get("weights_from"):  # start from trained weights (fine-tuning, pruning); a new run
        base = read_checkpoint(cfg.weights_from)
        load_weights(module, cfg.weights_from, base)
        warn_if_other_data(cfg, base, cfg.weights_from)
    if cfg.get("compile"):
        module.model = torch.compile(module.model)
        module.example_input_array = None  # a batch-of-one summary pass would compile a second graph
    return module


def auto_resume_checkpoint(cfg: DictConfig) -> str | None:
    """``last.ckpt`` already in this run's checkpoint folder (a restarted command with a fixed
    ``hydra.run.dir``), so a crashed training picks up where it stopped; None otherwise."""
    if not cfg.get("auto_resume", True) or "model_checkpoint" not in cfg.callbacks:
        return None
    last = Path(cfg.callbacks.model_checkpoint.dirpath) / "last.ckpt"
    if last.is_file():
        log.info("resuming from %s", last)
        return str(last)
    return None


# Checkpoints a new run starts from (fine-tuning, pruning, distillation), read at build time and at test.
STARTING_CHECKPOINTS = ("weights_from", "teacher_ckpt")


def require_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine whose torch sees no CUDA device: one line, before any data is read."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} needs a CUDA GPU and torch sees none; "
                          "use trainer=cpu (or trainer.accelerator=cpu)")


def require_training_setup(cfg: DictConfig) -> None:
    """Values Lightning would only trip over after the run is opened: one line now instead."""
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    steps = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    by_steps = isinstance(steps, int) and steps > 0
    if (epochs is None or epochs == -1) and by_steps:
        pass  # as long as trainer.max_steps says
    elif not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
        raise ConfigError(f"trainer.max_epochs must be a positive integer (or -1 / null with trainer.max_steps > 0), "
                          f"got {epochs!r}")
    if OmegaConf.select(cfg, "callbacks.model_checkpoint") is None:
        raise ConfigError("training needs callbacks.model_checkpoint (callbacks=default or callbacks=export; "
                          "callbacks=figures is the set agelab.eval uses)")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint; returns every logged metric (train/val/test)."""
    require_accelerator(cfg)
    require_training_setup(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # (the seed is a run param; no line before an error)
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path: no checkpoint at {cfg.ckpt_path}")
    folder = Path(cfg.ckpt_path).parent if cfg.ckpt_path else Path(cfg.callbacks.model_checkpoint.dirpath)
    # A new run's data settings are checked before its folder is made (a resumed run's after the
    # checkpoint is compared: the checkpoint names what to repeat).
    datamodule = None if cfg.ckpt_path or (folder / "last.ckpt").is_file() else instantiate(cfg.data)
    lock = lock_checkpoint_folder(folder)  # before any checkpoint in the folder is looked for or read
    try:
        return _train_in_locked_folder(cfg, datamodule)
    finally:
        release_checkpoint_folder(lock, folder)


def _train_in_locked_folder(cfg: DictConfig, datamodule) -> dict[str, float]:
    ckpt_path = cfg.ckpt_path or auto_resume_checkpoint(cfg)
    run_id, checkpoint = None, None
    if ckpt_path:
        checkpoint = read_checkpoint(ckpt_path)
        run_id = checkpoint.get(RUN_ID_KEY)  # the MLflow run the training goes on in
        check_resume(cfg, checkpoint, ckpt_path,  # before the run is reopened
                     "drop ckpt_path" if cfg.ckpt_path else "add auto_resume=false (or another hydra.run.dir)")
        done = finished_run_metrics(cfg, checkpoint)
        if done is not None:
            log.info("%s: already trained %d epochs and tested; nothing to do (raise trainer.max_epochs to "
                     "train longer)", ckpt_path, cfg.trainer.max_epochs)
            return done
        with open_dict(cfg):  # keep writing checkpoints next to the one we resume from
            cfg.callbacks.model_checkpoint.dirpath = str(Path(ckpt_path).parent)

    if datamodule is None:  # (its settings checked before any file is moved)
        datamodule = instantiate(cfg.data)
    if not ckpt_path:
        moved = set_aside_old_checkpoints(Path(cfg.callbacks.model_checkpoint.dirpath))
        for key in STARTING_CHECKPOINTS:  # a base or teacher among them is read from where it went
            value = OmegaConf.select(cfg, key)
            if value and Path(str(value)).resolve() in moved:
                cfg[key] = str(moved[Path(str(value)).resolve()])
    module = build_module(cfg)
    logger = instantiate(cfg.logger, run_id=run_id)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    callbacks.append(DataReport())  # faces kept/dropped and split sizes, printed and logged to the run
    label_check = LabelCheck(OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor", default=None))
    callbacks.append(label_check)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    for callback in callbacks:
        if isinstance(callback, CheckpointRunId):
            callback.config_yaml, callback.choices = config_yaml, group_choices(cfg)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    if trainer.world_size == 1:  # one process: the labels are checked before the MLflow run opens (under
        datamodule.prepare_data()  # DDP the callback checks them after Lightning's one-process prepare)
        datamodule.setup("fit")
        label_check.check(module, datamodule)

    earlier: dict[str, float] = {}  # what the run logged before, when its fit has nothing left to do
    if not run_id:  # a resumed run already has its params (MLflow refuses to change them)
        logger.log_hyperparams(flatten_config(cfg))
        logger.experiment.log_text(logger.run_id, config_yaml, "config/config.yaml")
    elif trainer.is_global_zero and fitted(cfg, checkpoint):  # stopped during its final test, figures or export
        earlier = logger.experiment.get_run(logger.run_id).data.metrics
        logger.logged_already = tested_already(logger.experiment, logger.run_id, earlier,
                                               checkpoint.get("global_step"))
    if trainer.is_global_zero:
        end_stranded_run(Path(cfg.callbacks.model_checkpoint.dirpath), logger.experiment, logger.run_id)
        logger.experiment.set_tag(logger.run_id, COMPLETE_TAG, "false")  # until tested and exported
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: v for k, v in earlier.items() if not k.startswith("test/")}
    metrics.update(_scalars(trainer.callback_metrics))
    best = best_checkpoint_path(trainer)
    trainer.test(module, datamodule=datamodule, ckpt_path=best or None)  # None: no epoch was validated
    if trainer.is_global_zero:  # tested, figures drawn, exported: a command started again has nothing to do
        logger.experiment.set_tag(logger.run_id, COMPLETE_TAG, "true")
    metrics.update(_scalars(trainer.callback_metrics))
    metrics["best_model_path"] = best
    log.info("test metrics: %s", {k: round(v, 4) for k, v in metrics.items() if k.startswith("test/")})
    return metrics
