"""MLflow set-up: where runs go, which run a resumed training continues, what tags a run gets.

Several trainings may share one SQLite store (joblib sweeps, k-fold folds, a DDP job beside a
sweep). Two things keep that safe:

* ``prepare_sqlite_store`` creates the database, its tables and the experiment under an exclusive
  file lock (``mlflow.db.lock``): MLflow builds its schema on first use, and two processes doing that
  at once break each other's migration and lose their runs. It also switches the file to WAL
  journal mode (persistent), so readers no longer block the writer.
* ``RetryingClient`` wraps the logger's MlflowClient: a call that still meets "database is locked"
  (SQLite refuses a read-to-write upgrade immediately, without waiting) is retried with backoff.

SQLite over a network file system (NFS, Lustre) is not safe for concurrent writers whatever the
journal mode: cluster jobs should log to a tracking server (``logger.tracking_uri=http://...``).
"""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
import subprocess
import time
from pathlib import Path

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import MLFlowLogger

from agelab.errors import ConfigError, writable_folder
from agelab.store import artifact_root, require_writable_store, sqlite_path, store_uri

log = logging.getLogger(__name__)
RUN_ID_KEY = "mlflow_run_id"  # stored in every checkpoint so a resume finds its run
CONFIG_KEY = "agelab_config"  # the resolved config (YAML) the checkpoint was trained with
CHOICES_KEY = "agelab_choices"  # its config group choices (model=smlf, data/split@data.source.split=...)
# Messages of SQLite errors that pass once the other writer is done.
TRANSIENT_DB_ERRORS = ("database is locked", "database table is locked", "database is busy")
LOCK_TIMEOUT_S = 300  # the store's first set-up (schema migration) takes a few seconds at most


def git_commit(path: str | Path | None = None) -> str:
    """The commit of the agelab code that runs (its checkout, not the folder the command runs in)."""
    path = Path(__file__).parent if path is None else path
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def is_transient_db_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(message in text for message in TRANSIENT_DB_ERRORS)


def prepare_sqlite_store(tracking_uri: str, experiment_name: str, artifact_location: str | None = None) -> str | None:
    """Create the SQLite store (WAL mode, MLflow tables) and the experiment once, under a file lock.

    Returns the experiment id (None for stores that are not SQLite files, left to MLflow).
    """
    from mlflow.tracking import MlflowClient

    path = sqlite_path(tracking_uri)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
        try:
            with sqlite3.connect(path, timeout=60) as connection:
                connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:  # a writer outside agelab holds it: stay in its mode
            log.warning("could not switch %s to WAL journal mode: %s", path, exc)
        return _get_or_create(RetryingClient(MlflowClient(tracking_uri=tracking_uri)), experiment_name,
                              artifact_location)


def _get_or_create(client, experiment_name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(experiment_name, artifact_location=artifact_location)


def experiment_id(client, experiment_name: str, root_dir: str | Path = ".") -> str:
    """The id of ``experiment_name`` in the client's store, created with its artifacts under
    ``<root_dir>/mlruns`` when missing (a new SQLite store is set up as ``prepare_sqlite_store`` does)."""
    location = artifact_root(root_dir)
    return (prepare_sqlite_store(client.tracking_uri, experiment_name, location)
            or _get_or_create(client, experiment_name, location))


class RetryingClient:
    """An MlflowClient whose calls are retried (exponential backoff with jitter) on a busy SQLite store.

    Everything else is forwarded unchanged, so it stands in wherever an MlflowClient is used.
    """

    def __init__(self, client, attempts: int = 8, base_delay: float = 0.1):
        self._client, self._attempts, self._base_delay = client, attempts, base_delay

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_client", "_attempts", "_base_delay"):
            raise AttributeError(name)  # unpickling looks these up before __init__ ran
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            for attempt in range(self._attempts):
                try:
                    return attr(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - re-raised unless SQLite was only busy
                    if attempt == self._attempts - 1 or not is_transient_db_error(exc):
                        raise
                    delay = self._base_delay * 2 ** attempt * (1 + random.random())
                    log.warning("MLflow %s: %s; retrying in %.1f s", name, str(exc).splitlines()[0], delay)
                    time.sleep(delay)

        return call


class AgelabMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger (rank-zero only) with a RetryingClient underneath. ``logged_already``:
    metric names it leaves out (a resumed run tested again logs the same test figures only once)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._mlflow_client = RetryingClient(self._mlflow_client)
        self.logged_already: set[str] = set()

    def log_metrics(self, metrics, step=None):
        super().log_metrics({k: v for k, v in metrics.items() if k not in self.logged_already}, step)


def mlflow_logger(experiment_name: str, root_dir: str | Path = ".", run_name: str | None = None,
                  tags: dict | None = None, tracking_uri: str | None = None, run_id: str | None = None) -> MLFlowLogger:
    """An MLFlowLogger on ``sqlite:///<root_dir>/mlflow.db`` with artifacts in ``<root_dir>/mlruns``.

    ``run_id`` (stored in a checkpoint being resumed) continues that MLflow run. A store that cannot
    be written or opened is a ConfigError naming the setting, before any work.
    """
    from mlflow.exceptions import MlflowException

    writable_folder(root_dir, "logger.root_dir")
    tracking_uri = store_uri(root_dir, tracking_uri)
    require_writable_store(tracking_uri)
    if run_id:
        log.info("resuming MLflow run %s", run_id)
    tags = {k: str(v) for k, v in (tags or {}).items()}
    tags.setdefault("git_commit", git_commit())
    artifact_location = artifact_root(root_dir)
    prepare_sqlite_store(tracking_uri, experiment_name, artifact_location)
    try:  # (the client opens the store)
        return AgelabMLFlowLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri,
                                  tags=tags, artifact_location=artifact_location, run_id=run_id)
    except MlflowException as exc:
        raise ConfigError(f"logger.tracking_uri: MLflow cannot open {tracking_uri} ({str(exc).splitlines()[0]})") from exc


def flatten_config(cfg: DictConfig, resolve: bool = True) -> dict[str, str]:
    """The resolved config as {"a.b.c": value} for MLflow params (Hydra's own ``hydra`` node left out)."""
    flat: dict[str, str] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            flat[prefix] = str(node)

    walk({k: v for k, v in OmegaConf.to_container(cfg, resolve=resolve).items() if k != "hydra"}, "")
    return flat
