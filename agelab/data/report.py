"""What a training run was given: faces kept and dropped (by reason) and the split sizes.

``DataReport`` is a Lightning callback: once the datamodule is set up it prints the counts and
logs them to the run's loggers (MLflow) as ``data/kept``, ``data/dropped/<reason>`` and
``data/split/<train|val|test>`` (the train size after any balancing), and each dropped image (or
label line) with its reason as the MLflow artifact ``data/dropped.csv``. Sources without drop
counts (the built-in synthetic faces) log only the split sizes.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import pytorch_lightning as pl

from agelab.data.prepare_cache import write_drops
from agelab.data.prepared import format_counts

SPLITS = ("train", "val", "test")
TRAINING_RUN_DROPS = 50_000  # rows of dropped.csv a training run logs (the cache's own file has them all)
log = logging.getLogger(__name__)


def log_drops(client, run_id: str, drops, artifact_dir: str, limit: int | None = None) -> None:
    """``drops`` (path, reason) as ``<artifact_dir>/dropped.csv`` of an MLflow run (nothing when none);
    past ``limit`` rows (a big web-scraped set, logged again by every run) only the first ones."""
    if len(drops) == 0:
        return
    if limit is not None and len(drops) > limit:
        log.info("logging the first %d of %d dropped images to the run (all of them: the cache's dropped.csv)",
                 limit, len(drops))
        drops = drops.iloc[:limit]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dropped.csv"
        write_drops(path, drops)
        client.log_artifact(run_id, str(path), artifact_dir)


def metric_name(text: str) -> str:
    """A metric-name-safe form of a reason (MLflow allows letters, digits, _ - . / and space)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", str(text)).strip() or "unknown"


def data_metrics(datamodule) -> dict[str, float]:
    """Counts of the datamodule's source and splits, as metric name -> value."""
    metrics: dict[str, float] = {}
    source = getattr(datamodule, "source", None)
    drops = getattr(source, "drop_counts", None)
    if isinstance(drops, dict) and hasattr(source, "kept"):
        metrics["data/kept"] = float(source.kept)
        for reason, count in drops.items():
            key = f"data/dropped/{metric_name(reason)}"
            metrics[key] = metrics.get(key, 0.0) + float(count)  # two reasons may sanitise alike
    for split, dataset in getattr(datamodule, "datasets", {}).items():
        if split in SPLITS:
            metrics[f"data/split/{split}"] = float(len(dataset))
    return metrics


def counts_text(datamodule) -> str:
    """Console lines: kept/dropped by reason (when the source counts them), then the split sizes."""
    source = getattr(datamodule, "source", None)
    lines = []
    if isinstance(getattr(source, "drop_counts", None), dict) and hasattr(source, "kept"):
        title = getattr(source, "name", "") or "data"
        folder = getattr(source, "folder", None)
        lines.append(format_counts(f"{title} ({folder})" if folder else title, source.kept, source.drop_counts))
    datasets = getattr(datamodule, "datasets", {})
    if datasets:
        lines.append("splits: " + ", ".join(f"{s} {len(datasets[s])}" for s in SPLITS if s in datasets))
    return "\n".join(lines)


class DataReport(pl.Callback):
    """Prints and logs the data counts once per run, right after the datamodule's setup."""

    def __init__(self):
        self.reported = False

    def setup(self, trainer, pl_module, stage):
        datamodule = trainer.datamodule
        if self.reported or datamodule is None:
            return
        metrics = data_metrics(datamodule)
        if not metrics:
            return
        self.reported = True
        if trainer.is_global_zero:
            print(counts_text(datamodule), flush=True)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=0)
        drops = getattr(getattr(datamodule, "source", None), "drops", None)
        if drops is not None and trainer.is_global_zero:
            from agelab.callbacks.mlflow_utils import mlflow_run
            client, run_id = mlflow_run(trainer)
            if client is not None:
                log_drops(client, run_id, drops, "data", limit=TRAINING_RUN_DROPS)
