"""Resuming a training from its checkpoint: the command must describe the training it continues.

A checkpoint carries the resolved config it was trained with. Resuming with another model, head,
data or optimiser would either crash on the weights or quietly train something else into the same
MLflow run, so every difference in the keys that define the experiment stops the command before
the run is touched, with the overrides that bring the command back in line. Keys that only say how
to run (trainer, loader workers, compile, paths, logging) may change: a run started on a CPU can
go on on a GPU, and ``trainer.max_epochs`` can be raised to train longer.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf, open_dict

from agelab.errors import ConfigError
from agelab.tracking import CONFIG_KEY, flatten_config

EXPERIMENT_SECTIONS = ("model", "head", "module", "optimizer", "scheduler", "data", "augment", "compress", "seed")
HOW_TO_RUN = ("data.num_workers", "data.pin_memory", "data.persistent_workers", "data.device_cache",
              "data.augment_on", "data.eval_batch_size", "data.source.workers", "data.source.progress",
              "data.root", "data.source.test_root")  # (a dataset folder may move between machines)
SHOWN = 6  # differences spelled out in the error; the rest are counted
MAX_ROUNDS = 200  # keys put back at most while looking for the overrides that explain every difference
log = logging.getLogger(__name__)


def experiment_keys(cfg: DictConfig) -> dict[str, str]:
    flat = flatten_config(cfg)
    return {k: v for k, v in flat.items() if k.split(".")[0] in EXPERIMENT_SECTIONS
            and not k.startswith(HOW_TO_RUN)}


def setup_differences(cfg: DictConfig, checkpoint: dict, sections=EXPERIMENT_SECTIONS) -> list[str]:
    """``key=value as trained`` (``~key`` where only ``cfg`` has it) for every experiment key of
    ``sections`` where ``cfg`` differs from the config stored in the checkpoint ([] without one)."""
    if CONFIG_KEY not in checkpoint:
        return []  # not written by agelab.train
    stored = OmegaConf.create(checkpoint[CONFIG_KEY])
    # What follows from how long and where it runs (a cosine T_max set from trainer.max_epochs, cache
    # folders under paths) is compared as it was: the schedule's own state comes from the checkpoint.
    probe = cfg.copy()
    with open_dict(probe):
        for node in ("trainer", "paths"):
            if node in stored:
                probe[node] = stored[node]
    trained = experiment_keys(stored)
    # Put back the stored value of the shallowest differing key, one at a time, until nothing differs:
    # what else then agrees was derived from it (seed -> the augmentation seeds), so only the keys
    # to pass on the command line are listed.
    overrides: list[str] = []
    for _ in range(MAX_ROUNDS):
        now = experiment_keys(probe)
        differ = sorted((k for k in trained.keys() | now.keys() if trained.get(k) != now.get(k)),
                        key=lambda k: (k.count("."), k))
        settable = [k for k in differ if k in trained]
        if not settable:
            overrides += [f"~{k}" for k in differ]
            break
        OmegaConf.update(probe, settable[0], OmegaConf.select(stored, settable[0]), force_add=True)
        overrides.append(f"{settable[0]}={trained[settable[0]]}")
    return [o for o in overrides if o.lstrip("~").split(".")[0].split("=")[0] in sections]


def shortened(differences: list[str]) -> str:
    more = f" and {len(differences) - SHOWN} more" if len(differences) > SHOWN else ""
    return " ".join(differences[:SHOWN]) + more


def check_resume(cfg: DictConfig, checkpoint: dict, ckpt_path: str) -> None:
    """ConfigError listing the experiment keys where ``cfg`` differs from the checkpoint's config."""
    differences = setup_differences(cfg, checkpoint)
    if differences:
        raise ConfigError(f"{ckpt_path} was trained with another setup; repeat its overrides to resume it "
                          f"({shortened(differences)}; all of them are in the run's config/config.yaml), "
                          "or drop ckpt_path to start a new run")


def warn_if_other_data(cfg: DictConfig, checkpoint: dict, ckpt_path: str) -> None:
    """``weights_from``: a base trained on other data (sizes, split, seed of the faces) is scored on
    test faces it may have trained on; say so (fine-tuning on new data is legitimate, so no error)."""
    differences = setup_differences(cfg, checkpoint, sections=("data",))
    if differences:
        log.warning("weights_from=%s was trained on other data (%s): its test figures here may include faces "
                    "it trained on; repeat its data overrides to compare like with like", ckpt_path,
                    shortened(differences))


def finished_run_metrics(cfg: DictConfig, checkpoint: dict) -> dict[str, float] | None:
    """The logged metrics of the run this checkpoint belongs to when there is nothing left to do:
    it has trained ``trainer.max_epochs`` epochs and its MLflow run FINISHED (tested too). A sweep or
    a command started again then returns its result instead of testing and logging it twice."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from agelab.evaluation import tracking_uri_of
    from agelab.tracking import RUN_ID_KEY

    epochs_done = int(checkpoint.get("epoch", -1)) + 1
    if not checkpoint.get(RUN_ID_KEY) or epochs_done < int(cfg.trainer.max_epochs) or cfg.trainer.max_epochs < 0:
        return None
    try:
        run = MlflowClient(tracking_uri_of(cfg)).get_run(checkpoint[RUN_ID_KEY])
    except MlflowException:
        return None
    if run.info.status != "FINISHED":
        return None  # fitted but not tested (it stopped in between): go on, Lightning tests it
    states = checkpoint.get("callbacks") or {}
    best = next((state.get("best_model_path", "") for name, state in states.items()
                 if str(name).startswith("ModelCheckpoint") and isinstance(state, dict)), "")
    return {**run.data.metrics, "best_model_path": best}
