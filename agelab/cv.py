"""K-fold cross-validation: ``python -m agelab.cv experiment=levi_synth [folds=<k>]``.

One training (agelab.training.train) per fold, ``data.fold = 0..folds-1``. ``folds`` left out (null) runs
every fold the data has: one per subject for leave-one-person-out (FG-NET; the faces are cropped into the
cache first to count them), ``data.folds`` for a dataset's own folds (Adience's 5), 5 for data that deals
as many folds as asked (synth_kfold). More folds than the data has are refused; fewer are run with a
warning (logged and the parent's tag ``cv.warning``). The config is checked, and the model and data
built once, before any run opens, so a config error leaves no run behind.

Each fold is its own MLflow run, nested under a parent run (MLflow tag ``mlflow.parentRunId``) that gets:

* the config as params and the tags of a training run, plus ``cv.folds`` (and ``cv.data_folds`` when
  the data has a fixed number of folds);
* ``<metric>_mean`` and ``<metric>_std`` for every val/ and test/ metric the folds returned
  (std over folds, ddof=0 as numpy and scikit-learn report it), e.g. ``test/mae_mean``; and
  ``<metric>_pooled`` for mae, cs5, acc, one_off and the MAE per age band, gender and race: over all
  the folds' faces at once;
* ``cv/folds.csv``: one row per fold with its run id and metrics;
* when the folds have group labels: the confusion matrix summed over folds (rows = true group) as
  ``cv/confusion_sum.csv`` (labelled with the group names), ``cv/confusion_sum.json`` and
  ``figures/confusion_sum.png`` / ``confusion_sum_normalized.png`` (counts and row-normalised).
* param ``data.fold`` = ``all`` (the folds' runs have their own).

The data config must read ``data.fold`` (adience, fgnet, synth_kfold; see conf/data/split/fold.yaml):
folds of a config that ignores it would all train on the same split, so that is refused. Each fold
writes under ``<output_dir>/fold<k>``. ``main`` returns the fold mean of ``optimized_metric``, so
a sweeper can tune on cross-validated scores.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from agelab.cli import run_main, run_or_exit
from agelab.config import CONF_DIR, hydra_node
from agelab.data.splits import lopo_folds, lopo_split
from agelab.errors import ConfigError, require_int
from agelab.results.pooled import SUFFIX as POOLED
from agelab.results.pooled import count_metric, pooled
from agelab.results.runs import CV_FOLDS_TAG, PARENT_TAG
from agelab.tracking import flatten_config

log = logging.getLogger(__name__)
AGGREGATED_PREFIXES = ("val/", "test/")
CONFUSION_FILE = "test_confusion.npy"
DEFAULT_FOLDS = 5  # for data that deals as many folds as asked (synth_kfold)


class SaveTestConfusion(pl.Callback):
    """Writes the test confusion matrix (``AgeModule.test_confusion``) to ``path`` as .npy."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_test_end(self, trainer, pl_module):
        confusion = getattr(pl_module, "test_confusion", None)
        if confusion is None or not trainer.is_global_zero or confusion.numel() <= 1:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.save(self.path, confusion.cpu().numpy())


def reads_fold(data_cfg: DictConfig) -> bool:
    """Whether anything in the data config interpolates ``data.fold``."""
    text = OmegaConf.to_yaml(data_cfg, resolve=False)
    return "${data.fold}" in text


def fold_config(cfg: DictConfig, fold: int, parent_run_id: str, output_dir: Path, run_name: str) -> DictConfig:
    """The training config of one fold: its test fold, output folder, run name and parent run."""
    fold_cfg = copy.deepcopy(cfg)
    fold_dir = output_dir / f"fold{fold}"
    with open_dict(fold_cfg):
        fold_cfg.data.fold = fold
        fold_cfg.paths.output_dir = str(fold_dir)
        fold_cfg.logger.run_name = f"{run_name}-fold{fold}"
        tags = fold_cfg.logger.get("tags") or {}
        fold_cfg.logger.tags = {**OmegaConf.to_container(OmegaConf.create(tags), resolve=False),
                                PARENT_TAG: parent_run_id, "cv.fold": str(fold)}
        fold_cfg.callbacks.cv_test_confusion = {"_target_": "agelab.cv.SaveTestConfusion",
                                                "path": str(fold_dir / CONFUSION_FILE)}
    return fold_cfg


def data_folds(cfg: DictConfig) -> tuple[int | None, str]:
    """How many folds the data of ``cfg`` has, and why: one per subject for a leave-one-person-out split
    (counted on the cropped faces: the cache is built now and the folds reuse it), ``data.folds`` for a
    dataset's own folds (Adience); None for data that deals as many folds as asked (synth_kfold).
    Building the data also checks its config (data.root, batch sizes...)."""
    source = instantiate(cfg.data).source
    if getattr(getattr(source, "split", None), "func", None) is lopo_split:
        return lopo_folds(source.records), "one per subject: leave one person out"
    return OmegaConf.select(cfg, "data.folds"), "data.folds"


def aggregate(fold_metrics: list[dict[str, float]]) -> dict[str, float]:
    """``<name>_mean`` and ``<name>_std`` over the folds that have it, for every val/ and test/ metric
    (a leave-one-person-out fold has the age bands of one person only), and ``<name>_pooled`` for the
    per-face scores: over all the folds' faces at once (each fold weighted by its faces), as
    leave-one-person-out figures are reported (FG-NET: the MAE over all 1,002 images, where the fold
    mean would be a mean over people)."""
    names = set().union(*fold_metrics) if fold_metrics else set()
    out = {}
    for name in sorted(n for n in names if n.startswith(AGGREGATED_PREFIXES)):
        having = [m for m in fold_metrics if name in m]
        values = np.array([m[name] for m in having], dtype=np.float64)
        out[f"{name}_mean"] = float(values.mean())
        if len(values) > 1:  # one fold has no spread (as the report shows it)
            out[f"{name}_std"] = float(values.std())
        count = count_metric(name)
        if count is not None and all(count in m for m in having):
            out[f"{name}{POOLED}"] = pooled(values, [m[count] for m in having])
    return out


def cross_validate(cfg: DictConfig) -> dict[str, float]:
    """Train every fold under one parent MLflow run; returns the aggregated metrics."""
    from agelab.training import build_module, require_accelerator, require_training_setup, train

    folds = cfg.get("folds")
    require_int("folds", folds, 2, allow_none=True)  # null: all the data's folds
    data_name = OmegaConf.select(hydra_node(cfg), "runtime.choices.data", default="?")
    if not reads_fold(cfg.data):
        raise ConfigError(f"data={data_name} does not read data.fold, so every "
                          "fold would train on the same split; use a data config with folds (adience, fgnet, "
                          "synth_kfold)")
    if cfg.get("ckpt_path"):
        raise ConfigError("ckpt_path: resuming is per fold; run python -m agelab.train data.fold=<k> ckpt_path=...")

    # What train() would refuse up front, checked before the parent run opens: the trainer settings,
    # then the data and model of the first fold.
    require_accelerator(cfg)
    require_training_setup(cfg)
    cfg = copy.deepcopy(cfg)  # the caller's config stays as it is
    with open_dict(cfg):
        cfg.data.fold = 0
        cfg.folds = folds or DEFAULT_FOLDS  # what synth_kfold deals
    available, why = data_folds(cfg)
    if folds is None:
        folds = available or DEFAULT_FOLDS
    elif available is not None and folds > available:
        raise ConfigError(f"folds={folds} but data={data_name} has {available} folds ({why}); "
                          f"use folds=2..{available}, or leave folds out to run all {available}")
    cfg.folds = folds  # the number run (the parent's params show it)
    build_module(cfg)

    output_dir = Path(cfg.paths.output_dir)
    run_name = str(cfg.logger.get("run_name") or "cv")
    tags = OmegaConf.to_container(cfg.logger.get("tags") or OmegaConf.create({}), resolve=True)
    tags[CV_FOLDS_TAG] = str(folds)
    if available is not None:
        tags["cv.data_folds"] = str(available)
    if available is not None and folds < available:
        tags["cv.warning"] = (f"{folds} of the {available} folds of data={data_name} ({why}) run: the fold means "
                              f"are not over all of the data; leave folds out to run all {available}")
        log.warning("%s", tags["cv.warning"])
    parent = instantiate(cfg.logger, run_name=f"{run_name}-cv{folds}", tags=tags)
    client, parent_id = parent.experiment, parent.run_id
    parent.log_hyperparams({**flatten_config(cfg), "data.fold": "all"})  # (0 was only the checks' fold)
    log.info("cross-validation: %d folds under MLflow run %s", folds, parent_id)

    fold_metrics, rows = [], []
    try:
        for fold in range(folds):
            fold_cfg = fold_config(cfg, fold, parent_id, output_dir, run_name)
            metrics = {k: v for k, v in train(fold_cfg).items() if isinstance(v, float)}
            fold_metrics.append(metrics)
            child = client.search_runs([parent.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' "
                                       f"and tags.`cv.fold` = '{fold}'")
            rows.append({"fold": fold, "run_id": child[0].info.run_id if child else "",
                         **{k: v for k, v in metrics.items() if k.startswith(AGGREGATED_PREFIXES)}})
    except BaseException:
        parent.finalize("failed")
        raise

    summary = aggregate(fold_metrics)
    parent.log_metrics(summary)
    client.log_text(parent_id, pd.DataFrame(rows).to_csv(index=False), "cv/folds.csv")
    confusions = [np.load(p) for p in (output_dir / f"fold{k}" / CONFUSION_FILE for k in range(folds)) if p.is_file()]
    if len(confusions) == folds:
        total = np.sum(confusions, axis=0).astype(np.int64)
        from agelab.groups import GROUP_NAMES

        table = pd.DataFrame(total, index=pd.Index(GROUP_NAMES, name="true \\ predicted"), columns=GROUP_NAMES)
        client.log_text(parent_id, table.to_csv(), "cv/confusion_sum.csv")
        from agelab.callbacks.confusion import log_confusion

        log_confusion(client, parent_id, total, "figures/confusion_sum.png", "figures/confusion_sum_normalized.png",
                      "cv/confusion_sum.json", title="Confusion matrix, summed over folds")
    parent.finalize("success")
    shown = {k: round(v, 4) for k, v in summary.items() if k.startswith("test/")}
    log.info("cross-validation over %d folds: %s", folds, shown)
    return summary


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="cv")
def main(cfg: DictConfig) -> float | None:
    summary = run_or_exit(cross_validate, cfg)
    metric = cfg.get("optimized_metric")
    return summary.get(f"{metric}_mean") if metric else None


if __name__ == "__main__":
    run_main(main, "cv")
