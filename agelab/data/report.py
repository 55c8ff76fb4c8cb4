"""What a training run was given: faces kept and dropped (by reason) and the split sizes.

``DataReport`` is a Lightning callback: once the datamodule is set up it prints the counts and
logs them to the run's loggers (MLflow) as ``data/kept``, ``data/dropped/<reason>`` and
``data/split/<train|val|test>`` (the train size after any balancing), and each dropped image (or
label line) with its reason as the MLflow artifact ``data/dropped.csv``. Sources without drop
counts (the built-in synthetic faces) log only the split sizes. A per-age balanced train split also
logs what the balancing did: ``data/balance/<capped|resampled|empty>_ages``, ``data/balance/copies``
(faces repeated), ``data/balance/left_out`` (faces over the cap) and the table of every age
(``data/balance_per_age.csv``: age, before, after, action).
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
PREPARE_EXPERIMENT = "agelab-prepare"  # where python -m agelab.prepare logs its counts
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
    report = balance_report(datamodule)
    if report is not None:
        metrics.update(balance_metrics(report))
    return metrics


def balance_report(datamodule):
    """The per-age balancing table of the training source (None when its train split is not balanced)."""
    source = getattr(datamodule, "source", None)
    for candidate in (source, getattr(source, "train", None)):  # a cross-dataset source balances its train part
        report = getattr(candidate, "balance_report", None)
        if report is not None:
            return report
    return None


def balance_metrics(report) -> dict[str, float]:
    """What the balancing did, as metric name -> value."""
    change = report["after"] - report["before"]
    metrics = {f"data/balance/{action}_ages": float((report["action"] == action).sum())
               for action in ("capped", "resampled", "empty")}
    metrics["data/balance/copies"] = float(change.clip(lower=0).sum())
    metrics["data/balance/left_out"] = float((-change).clip(lower=0).sum())
    return metrics


def balance_text(metrics: dict[str, float]) -> str:
    """The console line of ``data_metrics``' balancing figures."""
    m = {k.rsplit("/", 1)[1]: int(v) for k, v in metrics.items() if k.startswith("data/balance/")}
    return (f"train split balanced per age: ages capped {m['capped_ages']} (faces left out {m['left_out']}), "
            f"resampled {m['resampled_ages']} (copies added {m['copies']}), without faces {m['empty_ages']}")


def counts_text(datamodule, metrics: dict[str, float]) -> str:
    """Console lines: kept/dropped by reason (when the source counts them), the split sizes, then what
    the per-age balancing did (from ``metrics``, ``data_metrics(datamodule)``)."""
    source = getattr(datamodule, "source", None)
    lines = []
    if isinstance(getattr(source, "drop_counts", None), dict) and hasattr(source, "kept"):
        title = getattr(source, "name", "") or "data"
        folder = getattr(source, "folder", None)
        lines.append(format_counts(f"{title} ({folder})" if folder else title, source.kept, source.drop_counts))
    datasets = getattr(datamodule, "datasets", {})
    if datasets:
        lines.append("splits: " + ", ".join(f"{s} {len(datasets[s])}" for s in SPLITS if s in datasets))
    if "data/balance/copies" in metrics:
        lines.append(balance_text(metrics))
    return "\n".join(lines)


class DataReport(pl.Callback):
    """Prints the data counts right after the datamodule's setup, and logs them once per run."""

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
        if not trainer.is_global_zero:
            return  # (the other processes' loggers write nothing)
        text = counts_text(datamodule, metrics)
        print(text, flush=True)
        write_to_log_files(log, text)
        from agelab.callbacks.mlflow_utils import logged_in_run, mlflow_run

        if logged_in_run(trainer, "data/split/train"):
            return  # a resumed run: its counts, files dropped and balancing are logged already
        client, run_id = mlflow_run(trainer)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=0)
        if client is None:
            return
        drops = getattr(getattr(datamodule, "source", None), "drops", None)
        if drops is not None:
            log_drops(client, run_id, drops, "data", limit=TRAINING_RUN_DROPS)
        report = balance_report(datamodule)
        if report is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "balance_per_age.csv"
                report.to_csv(path, index=False)
                client.log_artifact(run_id, str(path), "data")


def write_to_log_files(logger: logging.Logger, text: str) -> None:
    """``text`` at INFO into the log files the logger writes to (the run's ``<task>.log``), not to the
    console, which shows it already (printed, or as a table)."""
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, text, None, None)
    current = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)
        current = current.parent if current.propagate else None


# ------------------------------------------------------------ python -m agelab.prepare's report


def counts_table(name: str, kept: int, dropped: dict[str, int]):
    """A rich table: kept, each drop reason (largest first) and the total, with their shares."""
    from rich.table import Table

    total = kept + sum(dropped.values())
    table = Table(title=f"{name}: faces kept and dropped")
    table.add_column("outcome")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    for label, n in [("kept", kept), *sorted(((f"dropped: {r}", n) for r, n in dropped.items()), key=lambda x: -x[1])]:
        table.add_row(label, str(n), f"{n / total:.1%}" if total else "-")
    table.add_row("total", str(total), "")
    return table


def log_prepare_run(cfg, name: str, kept: int, dropped: dict[str, int], params: dict, drops=None) -> str:
    """Log the counts as metrics of a new run in experiment agelab-prepare, and ``drops`` (a
    DataFrame path, reason) as ``prepare/dropped.csv``; returns the run id."""
    from mlflow.tracking import MlflowClient

    from agelab.store import store_uri
    from agelab.tracking import experiment_id, git_commit

    root = Path(cfg.paths.root_dir)
    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = cfg.logger.get("tracking_uri") if "logger" in cfg and cfg.logger else None
    client = MlflowClient(tracking_uri=store_uri(root, tracking_uri))
    run_id = client.create_run(experiment_id(client, PREPARE_EXPERIMENT, root), run_name=f"prepare-{name}",
                               tags={"data": name, "git_commit": git_commit()}).info.run_id
    client.log_batch(run_id, params=[_param(k, v) for k, v in params.items()])
    client.log_metric(run_id, "prepare/kept", kept)
    for reason, n in dropped.items():
        client.log_metric(run_id, f"prepare/dropped/{metric_name(reason)}", n)
    client.log_dict(run_id, {"kept": kept, "dropped": dropped}, "prepare/counts.json")
    if drops is not None:
        log_drops(client, run_id, drops, "prepare")
    client.set_terminated(run_id)
    return run_id


def _param(key, value):
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])
