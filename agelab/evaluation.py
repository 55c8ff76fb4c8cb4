"""Evaluating a trained checkpoint on one split of a dataset (the library behind ``python -m agelab.eval``).

The model and head come from the checkpoint alone (agelab.checkpoint.load_module). The data is, by
default, the checkpoint's own data config (resolved when it was trained, so the same cache and the
same split); ``data.<key>=<value>`` overrides on the command line apply on top of it. Choosing
``data=<name>`` evaluates on another dataset, composed as agelab.train composes it, with the
checkpoint's model size and eval transform. The run goes to MLflow as a new run in the training
run's experiment, tagged with the training run's id (``agelab.trained_run_id``) and the split
(``eval.split``), with the same figures as a training run's test.

Whatever the split, the module logs its metrics under ``test/`` (it evaluates through the test
loop); the ``eval.split`` tag says which faces they describe.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from agelab.config import CONF_DIR
from agelab.data.faces import FRAMING, require_framing
from agelab.errors import ConfigError
from agelab.results.runs import EVAL_SPLIT_TAG

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "all")  # all: every face of the data (a dataset used whole as a test)
TRAINED_RUN_TAG = "agelab.trained_run_id"
RUN_URI_PREFIX = "runs:/"
# Table order: headline figures first, then the breakdowns.
HEADLINE = ("loss", "mae", "cs5", "acc", "one_off", "precision", "recall", "f1", "gender_acc", "n_age", "n_group")


@dataclass
class EvalResult:
    metrics: dict[str, float]          # every scalar AgeMetrics figure of the split, plus "loss"
    split: str
    ckpt: Path
    run_id: str | None = None          # the new MLflow run
    trained_run_id: str | None = None  # the run that trained the checkpoint (None: unknown)
    trained_run_in_store: bool = False  # whether that run is in this store (or in another one)
    experiment_name: str | None = None
    tracking_uri: str | None = None
    data_from_checkpoint: bool = True
    artifacts: list[str] = field(default_factory=list)


def tracking_uri_of(cfg: DictConfig) -> str:
    """The store agelab.tracking.mlflow_logger would use for ``cfg.logger``."""
    from agelab.store import store_uri

    return store_uri(str(cfg.logger.get("root_dir", ".")), cfg.logger.get("tracking_uri"))


def resolve_checkpoint(ckpt, tracking_uri: str, download_dir: str | Path) -> Path:
    """A local checkpoint path; ``runs:/<run id>/<artifact path>`` is downloaded from the store first."""
    if not ckpt:
        raise ConfigError("ckpt: give the checkpoint to evaluate, e.g. ckpt=logs/train/runs/<time>/checkpoints/last.ckpt "
                          "or ckpt=runs:/<run id>/checkpoints/<file>.ckpt")
    ckpt = str(ckpt)
    if not ckpt.startswith(RUN_URI_PREFIX):
        if not Path(ckpt).is_file():  # before torch and Lightning are even imported
            raise ConfigError(f"no checkpoint at {ckpt}")
        return Path(ckpt)
    from agelab.inference.model_lookup import download_artifact, run_artifact_path
    from agelab.store import store_path

    run_artifact_path(ckpt)  # a path leaving the run's artifacts is refused before anything is downloaded
    store = store_path(tracking_uri)
    if store is not None and not store.exists():  # (MLflow would create an empty one and then not find the run)
        raise ConfigError(f"ckpt {ckpt}: no MLflow store at {store} (run from the folder that holds the training's "
                          "mlflow.db, or give logger.root_dir=<that folder>)")
    return download_artifact(ckpt, tracking_uri, download_dir, named=f"ckpt {ckpt}")


def command_line_overrides(cfg: DictConfig) -> list:
    """The command line's overrides (Hydra's ``hydra.overrides.task``), parsed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from agelab.config import hydra_node

    task = OmegaConf.select(hydra_node(cfg), "overrides.task", default=None) or []
    return OverridesParser.create().parse_overrides([str(o) for o in task])


def data_from_checkpoint(cfg: DictConfig, overrides: list) -> bool:
    """``data_from_checkpoint``: true / false, or auto = unless the command line chose ``data=<name>``."""
    choice = cfg.get("data_from_checkpoint", "auto")
    if isinstance(choice, bool):
        return choice
    if choice != "auto":
        raise ConfigError(f"data_from_checkpoint must be auto, true or false, got {choice!r}")
    chose_data = any(o.key_or_group == "data" and not o.is_delete() for o in overrides)
    nested = [o.input_line for o in overrides if str(o.key_or_group).startswith("data/")]
    if nested and not chose_data:
        raise ConfigError(f"{nested[0]}: a group choice inside data needs data=<name> too "
                          "(the checkpoint's data config is already composed)")
    return not chose_data


def checkpoint_data_config(train_cfg: DictConfig, overrides: list) -> DictConfig:
    """The checkpoint's data config with the command line's ``data.<key>`` overrides applied."""
    data = copy.deepcopy(train_cfg.data)
    for override in overrides:
        key = str(override.key_or_group)
        if not key.startswith("data."):
            continue
        key = key[len("data."):]
        with open_dict(data):
            if override.is_delete():
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(data, parent) if parent else data
                if node is not None and leaf in node:
                    node.pop(leaf)
            else:
                OmegaConf.update(data, key, override.value(), merge=False, force_add=True)
    return data


def face_croppers(node) -> list:
    """The FaceCropper nodes of a data config (``source.cropper``; ``source.train/test.cropper``)."""
    if not isinstance(node, DictConfig):
        return []
    own = [node] if str(node.get("_target_", "")).endswith(".FaceCropper") else []
    return own + [c for key in node for c in face_croppers(node.get(key))]


def composed_data_config(cfg: DictConfig, train_cfg: DictConfig, overrides=()) -> DictConfig:
    """``cfg.data`` (chosen on the command line) resolved with the checkpoint's model, eval
    transform and seed in place of the eval config's own, and the framing its faces were cut with
    (``eye_distance``, ``eye_line``) unless the command line's ``overrides`` choose one, so crops fit
    the trained model."""
    from agelab.config_checks import require_values

    require_values(cfg.data, where="data")
    context = copy.deepcopy(cfg)
    with open_dict(context):
        for key in ("model", "augment", "seed"):
            if key in train_cfg:
                context[key] = copy.deepcopy(train_cfg[key])
    data = OmegaConf.create(OmegaConf.to_container(context.data, resolve=True))
    for trained in face_croppers(train_cfg.get("data"))[:1]:
        require_framing(trained)
        for key in FRAMING:
            if not any(o.key_or_group == "faces" or o.key_or_group.endswith(f".{key}") for o in overrides):
                for cropper in face_croppers(data):
                    cropper[key] = trained[key]
    return data


def whole_as_test(data_cfg: DictConfig) -> None:
    """``split=all``: every face of the data is test data (conf/data/split/all.yaml), e.g. a whole
    dataset testing a model trained on another."""
    if OmegaConf.select(data_cfg, "source.split") is None:
        raise ConfigError("split=all needs a dataset read from files with a split (data=<name> data.root=<folder>)")
    data_cfg.source.split = OmegaConf.load(CONF_DIR / "data" / "split" / "all.yaml")
    data_cfg.source.balance = None  # nothing is trained on


def serve_split_as_test(datamodule, split: str) -> None:
    """Make ``split`` the datamodule's test set, read with the deterministic eval transform."""
    if split in ("test", "all"):
        return
    datamodule.prepare_data()
    datamodule.setup("fit")
    dataset = copy.copy(datamodule.datasets[split])
    dataset.transform = datamodule.eval_transform  # the train split would otherwise be augmented
    datamodule.datasets["test"] = dataset


def find_trained_run(client, run_id: str | None):
    """The training run in this store, or None (unknown id, or a checkpoint from another store)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException:
        log.warning("training run %s is not in %s; the eval run only records its id", run_id, client.tracking_uri)
        return None


def scalar_metrics(results: dict, callback_metrics: dict, task: str = "age") -> dict[str, float]:
    """The split's scalar figures, plus the loss when the split had targets for the head's ``task``
    ("age" or "group"): with none (an age head on group-only labels) the loss is a meaningless 0."""
    out = {k: float(v) for k, v in results.items() if getattr(v, "numel", lambda: 1)() == 1}
    if "test/loss" in callback_metrics and out.get(f"n_{task}", 0) > 0:
        out["loss"] = float(callback_metrics["test/loss"])
    return out


def ordered(metrics: dict[str, float]) -> list[tuple[str, float]]:
    head = [(k, metrics[k]) for k in HEADLINE if k in metrics]
    return head + sorted((k, v) for k, v in metrics.items() if k not in HEADLINE)


def metrics_table(result: EvalResult):
    """A rich Table of the metrics (accuracies in %, MAE in years, counts as integers)."""
    from rich.table import Table

    table = Table(title=f"{result.split} split — {result.ckpt.name}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    percent = {"cs5", "acc", "one_off", "precision", "recall", "f1", "gender_acc"}
    for name, value in ordered(result.metrics):
        if name.startswith("n_"):
            text = f"{int(value)}"
        elif name in percent:
            text = f"{100 * value:.2f} %"
        else:
            text = f"{value:.4f}"
        table.add_row(name, text)
    return table


def open_eval_run(cfg: DictConfig, client, trained_run, trained_run_id: str | None, ckpt: Path,
                  train_cfg: DictConfig, data_cfg: DictConfig, from_checkpoint: bool):
    """(the eval's MLflow logger, its experiment's name): a new run in the training run's experiment (or logger.experiment_name),
    linked to it by tag, with the model/head/data tags a training run has and ``config/eval.yaml``."""
    from agelab.config import hydra_node
    from agelab.tracking import mlflow_logger

    experiment_name = (client.get_experiment(trained_run.info.experiment_id).name if trained_run
                       else str(cfg.logger.experiment_name))
    trained_tags = trained_run.data.tags if trained_run else {}
    data_name = "checkpoint" if from_checkpoint else OmegaConf.select(hydra_node(cfg), "runtime.choices.data",
                                                                         default="?")
    tags = {
        EVAL_SPLIT_TAG: cfg.split,
        "eval.ckpt": str(Path(ckpt).resolve()),
        "eval.data": data_name,
        "model": trained_tags.get("model", train_cfg.model.get("_target_", "?")),
        "head": trained_tags.get("head", train_cfg.head.get("_target_", "?")),
        "data": trained_tags.get("data", "?") if from_checkpoint else data_name,
    }
    if trained_run_id:
        tags[TRAINED_RUN_TAG] = trained_run_id
    run_name = f"eval-{trained_run.info.run_name if trained_run else Path(ckpt).stem}-{data_name}-{cfg.split}"
    logger = mlflow_logger(experiment_name, root_dir=cfg.logger.get("root_dir", "."), run_name=run_name, tags=tags,
                           tracking_uri=cfg.logger.get("tracking_uri"))
    eval_yaml = OmegaConf.to_yaml(OmegaConf.create({"ckpt": str(ckpt), "split": cfg.split, "data": data_cfg}))
    logger.experiment.log_text(logger.run_id, eval_yaml, "config/eval.yaml")
    return logger, experiment_name


def evaluate(cfg: DictConfig) -> EvalResult:
    """Test the checkpoint ``cfg.ckpt`` on ``cfg.split``; log a linked MLflow run; return the metrics."""
    if cfg.get("split") not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {cfg.get('split')!r}")
    if cfg.get("onnx"):
        raise ConfigError("onnx: eval tests the .ckpt a training wrote (ckpt=); agelab.export scores its ONNX "
                          "models against it on the test split, and predict runs them (onnx=)")
    uri = tracking_uri_of(cfg)
    ckpt = resolve_checkpoint(cfg.get("ckpt"), uri, Path(str(cfg.paths.output_dir)) / "checkpoint")

    # The heavy imports only once the checkpoint is there (a typo fails in a second).
    import pytorch_lightning as pl
    from mlflow.tracking import MlflowClient

    from agelab.checkpoint import load_module, read_checkpoint, stored_config
    from agelab.config_checks import check_targets
    from agelab.tracking import RUN_ID_KEY
    from agelab.training import require_accelerator

    require_accelerator(cfg)
    stored = read_checkpoint(ckpt)
    train_cfg = stored_config(stored, ckpt)
    trained_run_id = stored.get(RUN_ID_KEY)

    overrides = command_line_overrides(cfg)
    from_checkpoint = data_from_checkpoint(cfg, overrides)
    data_cfg = checkpoint_data_config(train_cfg, overrides) if from_checkpoint else composed_data_config(
        cfg, train_cfg, overrides)
    if cfg.split == "all":
        whole_as_test(data_cfg)
    check_targets(data_cfg)
    check_targets(cfg)  # the keys of what eval builds itself (trainer, callbacks), now the checkpoint is found
    pl.seed_everything(cfg.get("seed", 0), workers=True, verbose=False)
    module, _ = load_module(ckpt, stored)
    del stored
    datamodule = instantiate(data_cfg)
    serve_split_as_test(datamodule, cfg.split)

    client = MlflowClient(uri)
    trained_run = find_trained_run(client, trained_run_id)
    logger, experiment_name = open_eval_run(cfg, client, trained_run, trained_run_id, ckpt, train_cfg, data_cfg, from_checkpoint)

    try:
        callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
        trainer.test(module, datamodule=datamodule, verbose=False)
    except BaseException:
        logger.finalize("failed")  # not left RUNNING in the store
        raise

    run_id = logger.run_id
    artifacts = [a.path for folder in ("figures", "metrics") for a in client.list_artifacts(run_id, folder)]
    metrics = scalar_metrics(module.test_results, trainer.callback_metrics, module.head.task)
    return EvalResult(metrics=metrics, split=cfg.split,
                      ckpt=Path(ckpt), run_id=run_id, trained_run_id=trained_run_id,
                      trained_run_in_store=trained_run is not None, experiment_name=experiment_name,
                      tracking_uri=uri, data_from_checkpoint=from_checkpoint, artifacts=artifacts)
