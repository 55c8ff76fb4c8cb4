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

from agelab.config import CONF_DIR, hydra_node
from agelab.errors import ConfigError
from agelab.tracking import CHOICES_KEY, CONFIG_KEY, flatten_config

EXPERIMENT_SECTIONS = ("model", "head", "module", "optimizer", "scheduler", "data", "augment", "compress", "seed")
HOW_TO_RUN = ("data.num_workers", "data.pin_memory", "data.persistent_workers", "data.device_cache",
              "data.augment_on", "data.eval_batch_size", "data.source.workers", "data.source.progress")
WHERE = ("data.root", "data.source.test_root")  # dataset folders: they may move between machines
# data keys that say how faces are batched or augmented, not which faces are drawn or split
NOT_ABOUT_FACES = ("data.batch_size", "data.eval_batch_size", "data.train_transform", "data.eval_transform",
                   "data.device_train_transform", "data.device_eval_transform")
SHOWN = 6  # differences spelled out in the error; the rest are counted
MAX_ROUNDS = 200  # keys put back at most while looking for the overrides that explain every difference
log = logging.getLogger(__name__)


def experiment_keys(cfg: DictConfig) -> dict[str, str]:
    flat = flatten_config(cfg)
    return {k: v for k, v in flat.items() if k.split(".")[0] in EXPERIMENT_SECTIONS
            and not k.startswith(HOW_TO_RUN)}


def chosen_node(choice: str) -> str:
    """Where a config group choice lands: ``model`` -> model, ``data/split@data.source.split`` -> data.source.split."""
    return choice.split("@", 1)[1] if "@" in choice else choice


def group_choices(cfg: DictConfig) -> dict[str, str | None]:
    """The config group choices of the experiment sections ({"head": "dex", "model": "smlf", ...})."""
    choices = OmegaConf.select(hydra_node(cfg), "runtime.choices", default=None) or {}
    return {str(k): v for k, v in OmegaConf.to_container(choices).items()
            if chosen_node(str(k)).split(".")[0] in EXPERIMENT_SECTIONS}


def set_in_group_file(choice: str, option: str, node: str) -> dict[str, str]:
    """The plain values conf/<group>/<option>.yaml sets, as {"head.loss": "l1", ...} under ``node``
    (interpolations, which follow other keys, and the defaults list left out)."""
    path = CONF_DIR / choice.split("@", 1)[0] / f"{option}.yaml"
    if not path.is_file() or "@package" in path.read_text():
        return {}
    values = OmegaConf.load(path)
    values.pop("defaults", None)
    flat = flatten_config(OmegaConf.create({node: values}), resolve=False)
    return {k: v for k, v in flat.items() if "${" not in v}


def compare_setup(cfg: DictConfig, checkpoint: dict) -> tuple[list[str], list[str]]:
    """(the experiment keys where ``cfg`` differs from the config stored in the checkpoint, the
    ``key=value as trained`` overrides that explain them); ([], []) for a checkpoint without one.
    Keys the stored config lacks (added to agelab after it was written) are not compared."""
    if CONFIG_KEY not in checkpoint:
        return [], []  # not written by agelab.train
    stored = OmegaConf.create(checkpoint[CONFIG_KEY])
    # What follows from how long and where it runs (a cosine T_max set from trainer.max_epochs, cache
    # folders under paths, readers under a moved data.root) is compared as it was.
    probe = cfg.copy()
    with open_dict(probe):
        for node in ("trainer", "paths", *WHERE):
            value = OmegaConf.select(stored, node, default=None)
            if value is not None:
                OmegaConf.update(probe, node, value, force_add=True)
    trained = experiment_keys(stored)

    def differing() -> list[str]:
        now = experiment_keys(probe)
        return sorted((k for k in trained if trained[k] != now.get(k)), key=lambda k: (k.count("."), k))

    first = differing()
    # Another group chosen (head=ce for a regression checkpoint): name the group as trained, since its
    # keys may not exist in the group chosen now; then its section is as trained.
    # A group inside a group put back (data/split@data.source.split under data) is named too, unless unset.
    overrides, now, put_back = [], group_choices(cfg), []
    trained_choices = checkpoint.get(CHOICES_KEY) or {}
    for choice in sorted(trained_choices, key=lambda c: chosen_node(c).count(".")) if now else ():
        node, value = chosen_node(choice), trained_choices[choice]
        inside = any(node.startswith(f"{outer}.") for outer in put_back)
        if (choice in now and value != now[choice]) or (choice not in now and inside and value is not None):
            overrides.append(f"{choice}={'null' if value is None else value}")
            if value is not None:  # and where the training set another value than the group's file
                overrides += [f"{k}={trained[k]}" for k, v in set_in_group_file(choice, value, node).items()
                              if k in trained and trained[k] != v]
            if not inside:
                OmegaConf.update(probe, node, OmegaConf.select(stored, node), merge=False, force_add=True)
                put_back.append(node)
    # Put back the stored value of the shallowest differing key, one at a time, until nothing differs:
    # what else then agrees was derived from it (seed -> the augmentation and split seeds), so only
    # the keys to pass on the command line are listed.
    remaining = differing()
    for _ in range(MAX_ROUNDS):
        if not remaining:
            break
        key = remaining[0]
        OmegaConf.update(probe, key, OmegaConf.select(stored, key), force_add=True)
        overrides.append(f"{key}={trained[key]}")
        remaining = differing()
    return first, overrides


def shortened(overrides: list[str]) -> str:
    more = f" and {len(overrides) - SHOWN} more" if len(overrides) > SHOWN else ""
    return " ".join(overrides[:SHOWN]) + more


def check_resume(cfg: DictConfig, checkpoint: dict, ckpt_path: str, start_over: str = "drop ckpt_path") -> None:
    """ConfigError with the overrides to repeat when ``cfg`` is not the setup the checkpoint trained;
    ``start_over``: how this command would start a new run instead."""
    _, overrides = compare_setup(cfg, checkpoint)
    if overrides:
        raise ConfigError(f"{ckpt_path} was trained with another setup; repeat its overrides to resume it "
                          f"({shortened(overrides)}; all of them are in the run's config/config.yaml), "
                          f"or {start_over} to start a new run")


def warn_if_other_data(cfg: DictConfig, checkpoint: dict, ckpt_path: str) -> None:
    """``weights_from``: a base trained on other data (sizes, split, the seed that draws them) is
    scored on test faces it may have trained on; say so (fine-tuning on new data is legitimate)."""
    differ, overrides = compare_setup(cfg, checkpoint)
    if any(is_about_faces(key) for key in differ):
        faces = [o for o in overrides if is_about_faces(o.split("=", 1)[0]) or o.startswith("seed=")]
        log.warning("weights_from=%s was trained on other data (%s): its test figures here may include faces "
                    "it trained on; repeat those overrides to compare like with like", ckpt_path,
                    shortened(faces or overrides))


def is_about_faces(key: str) -> bool:
    """Whether a data key (or data group choice) decides which faces are drawn or split, not how
    many go in a batch."""
    key = chosen_node(key)
    return (key == "data" or key.startswith("data.")) and not key.startswith(NOT_ABOUT_FACES)


def fitted(cfg: DictConfig, checkpoint: dict) -> bool:
    """Whether the checkpoint has trained all of ``trainer.max_epochs`` (a run bounded by
    ``trainer.max_steps`` is left to Lightning: False)."""
    epochs, epochs_done = cfg.trainer.get("max_epochs"), int(checkpoint.get("epoch", -1)) + 1
    return isinstance(epochs, int) and epochs >= 0 and epochs_done >= epochs


def tested_already(client, run_id: str, logged: dict, step: int | None) -> set[str]:
    """The test metrics the run logged for the checkpoint at global step ``step`` (any step when None):
    those whose last entry is at that step, and the CS curve (logged by theta) when it came after them.
    A test of the same checkpoint gives the same figures again; a shorter fit's test, before
    ``trainer.max_epochs`` was raised, gave others."""
    names, first_at_step = set(), None
    for name in sorted(k for k in logged if k.startswith("test/") and k != "test/cs_curve"):
        history = client.get_metric_history(run_id, name)
        last = max(history, key=lambda m: (m.step, m.timestamp), default=None)
        if last is not None and (step is None or last.step == step):
            names.add(name)
            first_at_step = min(first_at_step or last.timestamp, last.timestamp)
    if "test/cs_curve" in logged and first_at_step is not None:
        curve = client.get_metric_history(run_id, "test/cs_curve")
        if curve and max(m.timestamp for m in curve) >= first_at_step:
            names.add("test/cs_curve")
    return names


def finished_run_metrics(cfg: DictConfig, checkpoint: dict) -> dict[str, float] | None:
    """The logged metrics of the run this checkpoint belongs to when there is nothing left to do:
    it has trained ``trainer.max_epochs`` epochs and its MLflow run is complete (tested, with its figures
    and export: tag ``agelab.complete``; a run from before the tag existed: FINISHED with this checkpoint's
    test metrics).
    A sweep or a command started again then returns its result instead of testing and logging it twice."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from agelab.evaluation import tracking_uri_of
    from agelab.results.runs import COMPLETE_TAG
    from agelab.tracking import RUN_ID_KEY

    if not checkpoint.get(RUN_ID_KEY) or not fitted(cfg, checkpoint):
        return None
    client = MlflowClient(tracking_uri_of(cfg))
    try:
        run = client.get_run(checkpoint[RUN_ID_KEY])
    except MlflowException:
        return None
    complete = run.data.tags.get(COMPLETE_TAG)
    if complete is None and run.info.status == "FINISHED":  # a run from before the tag existed
        tested = tested_already(client, run.info.run_id, run.data.metrics, checkpoint.get("global_step"))
        complete = "true" if tested else "false"
    if run.info.status != "FINISHED" or complete == "false":
        return None  # stopped before its test, figures or export were done: go on, they are done again
    states = (checkpoint.get("callbacks") or {}).values()
    best = next((state["best_model_path"] for state in states  # the monitored ModelCheckpoint's
                 if isinstance(state, dict) and state.get("monitor") and "best_model_path" in state), "")
    return {**run.data.metrics, "best_model_path": best}
