"""Experiments, sweeps and parallel trainings: every experiment composes, the synthetic ones train,
launcher and search configs compose, and many processes share one SQLite MLflow store safely.

The multirun tests (marked slow) start real ``python -m agelab.train -m`` processes:
joblib runs 3 trainings at once, Optuna picks the best of its trials.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.utils import instantiate
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from agelab.config import CONF_DIR
from agelab.store import sqlite_path
from agelab.tracking import RetryingClient, mlflow_logger
from agelab.training import train

from conftest import compose_config

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
ROOT = Path(__file__).resolve().parents[1]

# What each published setup must select: (model, head, data, optimizer, model target suffix).
EXPECTED = {
    "levi_adience": ("levi_hassner", "ce", "adience", "sgd", "LeviHassnerNet"),
    "levi_synth": ("levi_hassner", "ce", "synth_kfold", "sgd", "LeviHassnerNet"),
    "smlf_imdb_morph2": ("smlf", "dex", "imdb_morph2", "adamw", "SMLFNet"),
    "smlf_small_imdb_morph2": ("smlf_small", "dex", "imdb_morph2", "adamw", "SMLFNetSmall"),
    "baselines_morph2": ("shufflenet", "dex", "imdb_morph2", "adamw", "ShuffleNetV2"),
    "smlf_synth": ("smlf", "dex", "synth", "adamw", "SMLFNet"),
    "smlf_small_synth": ("smlf_small", "dex", "synth", "adamw", "SMLFNetSmall"),
    "baselines_synth": ("shufflenet", "dex", "synth", "adamw", "ShuffleNetV2"),
    "utkface": ("smlf_small", "dldl", "utkface", "adamw", "SMLFNetSmall"),
    "utkface_smlf": ("smlf", "dldl", "utkface", "adamw", "SMLFNet"),
}


def client_for(root: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{root.resolve() / 'mlflow.db'}")


def all_runs(root: Path, experiment: str = "agelab"):
    client = client_for(root)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


# ----- experiments

def test_every_experiment_file_is_listed():
    assert sorted(EXPECTED) == EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name, tmp_path):
    cfg = compose_config(tmp_path, [f"experiment={name}"])
    model, head, data, optimizer, target = EXPECTED[name]
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.head, choices.data, choices.optimizer) == (model, head, data, optimizer)
    assert cfg.model._target_.endswith(target)
    assert cfg.logger.tags.experiment == name
    if head == "dex":  # SMLF-Net's 66 classes (ages 0..64 and 65+) on real data; the built-in ages run to 100
        assert cfg.data.max_age == cfg.head.max_age == (100 if data == "synth" else 65)
    if name.startswith("levi"):  # the reference training: random crops and mirroring only
        assert cfg.hydra.runtime.choices.augment == "levi" and cfg.augment.device_train.rotate_p == 0.0
        assert (cfg.optimizer._target_, cfg.optimizer.lr, cfg.optimizer.momentum) == ("torch.optim.SGD", 0.01, 0.9)
        assert cfg.data.batch_size == 16 and cfg.data.fold == 0 and "fold" in str(cfg.data.source)
        assert cfg.callbacks.model_checkpoint.monitor == "val/acc" and cfg.callbacks.model_checkpoint.mode == "max"
    if name == "levi_adience":
        assert cfg.trainer.max_epochs == 25 and cfg.model.input_size == 227
        assert cfg.data.source.split._target_.endswith("fold_split")
    if name.startswith("baselines"):
        assert cfg.hydra.mode.name == "MULTIRUN"
        assert cfg.hydra.sweeper.params == {"model": "shufflenet,inception"}
    if data == "imdb_morph2":
        source = cfg.data.source
        assert source._target_ == "agelab.data.cross.CrossDatasetSource"
        assert source.train.reader._target_.endswith("read_imdb") and source.test.reader._target_.endswith("read_morph2")
        assert source.train.split.test_fraction == 0.0
        assert (source.train.balance.low, source.train.balance.high) == (10000, 12000)  # per-age re-balancing


def test_cross_dataset_experiment_builds_both_sources(tmp_path):
    imdb, morph = tmp_path / "imdb", tmp_path / "morph2"
    imdb.mkdir(), morph.mkdir()
    cfg = compose_config(tmp_path, ["experiment=smlf_imdb_morph2", f"data.root={imdb}", f"data.source.test_root={morph}"])
    datamodule = instantiate(cfg.data)
    source = datamodule.source
    assert type(source).__name__ == "CrossDatasetSource" and source.test_splits == ["train", "val", "test"]
    assert source.train.name == "imdb" and source.test.name == "morph2"
    assert source.train.cropper.output_size == source.test.cropper.output_size == 128  # both cropped for 112


# One batch of 2 faces per stage: enough to run every step of each synthetic experiment once.
TINY_EPOCH = [
    "data.batch_size=2", "data.num_workers=0", "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
    "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1", "~callbacks.rich_progress_bar",
    "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
]


def synth_sizes(prefix: str) -> list[str]:
    return [f"{prefix}.train_size=16", f"{prefix}.val_size=8", f"{prefix}.test_size=8", f"{prefix}.image_size=64"]


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """One MLflow store and one synthetic cache for all the experiments (creating either costs seconds)."""
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.parametrize("name, extra", [
    ("levi_synth", ["model.input_size=96"]),
    ("smlf_synth", []),
    ("smlf_small_synth", []),
    ("baselines_synth", ["model=shufflenet"]),
    ("baselines_synth", ["model=inception"]),
], ids=["levi", "smlf", "smlf_small", "shufflenet", "inception"])
def test_synthetic_experiment_trains_one_tiny_epoch(name, extra, tmp_path, shared_root):
    prefix = "data.source.source" if name == "levi_synth" else "data.source"
    cfg = compose_config(tmp_path, [f"experiment={name}", f"paths.root_dir={shared_root}", *TINY_EPOCH,
                                    *synth_sizes(prefix), *extra])
    metrics = train(cfg)
    assert np.isfinite(metrics["test/loss"]) and 0 <= metrics["test/acc"] <= 1
    model = cfg.hydra.runtime.choices.model
    client = client_for(shared_root)
    runs = client.search_runs([client.get_experiment_by_name("agelab").experiment_id],
                              filter_string=f"tags.experiment = '{name}' and tags.model = '{model}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["model._target_"] == cfg.model._target_
    assert runs[0].data.metrics["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-6)


def test_cli_group_choice_overrides_the_experiment(tmp_path):
    cfg = compose_config(tmp_path, ["experiment=baselines_synth", "model=inception", "optimizer=sgd"])
    assert cfg.model._target_.endswith("GoogLeNet") and cfg.optimizer._target_ == "torch.optim.SGD"


# ----- launchers and search

def hparams_search_override() -> str:
    """``hparams_search=optuna`` once conf/train.yaml lists the group, ``+hparams_search=optuna`` before."""
    return ("" if "hparams_search" in (CONF_DIR / "train.yaml").read_text() else "+") + "hparams_search=optuna"


def test_launcher_and_search_configs_compose(tmp_path):
    cfg = compose_config(tmp_path, ["hydra/launcher=local", "hydra.launcher.n_jobs=3"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 3
    cfg = compose_config(tmp_path, ["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                    "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=30"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 4, 30)
    cfg = compose_config(tmp_path, [hparams_search_override(), "experiment=smlf_small_synth"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert sweeper.storage is None and cfg.optimized_metric == "val/mae" and cfg.hydra.mode.name == "MULTIRUN"
    assert set(sweeper.params) == {"optimizer.lr", "optimizer.weight_decay", "data.batch_size", "head"}
    cfg = compose_config(tmp_path, ["trainer=ddp", "trainer.devices=4"])
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.accelerator) == ("ddp", 4, "gpu")


# ----- one SQLite store, many writers

def test_fresh_store_shared_by_concurrent_loggers_loses_nothing(tmp_path):
    """Threads open loggers on a store that does not exist yet and log at once: every run, param and
    metric point arrives, the file is in WAL mode and passes SQLite's integrity check."""
    n_runs, n_steps, errors = 4, 15, []

    def work(i):
        try:
            logger = mlflow_logger("agelab", root_dir=tmp_path, run_name=f"run{i}", tags={"worker": i})
            logger.log_hyperparams({"worker": i, "lr": 0.1 * i})
            for step in range(n_steps):
                logger.log_metrics({"val/mae": float(step + i), "val/loss": 1.0 / (step + 1)}, step=step)
            logger.finalize("success")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    client, runs = all_runs(tmp_path)
    assert sorted(r.data.tags["worker"] for r in runs) == ["0", "1", "2", "3"]
    for run in runs:
        i = int(run.data.tags["worker"])
        assert run.info.status == "FINISHED" and run.data.params["lr"] == str(0.1 * i)
        history = client.get_metric_history(run.info.run_id, "val/mae")
        assert sorted((m.step, m.value) for m in history) == [(s, float(s + i)) for s in range(n_steps)]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(client.search_experiments()) == 2  # Default + agelab: created once


class FlakyClient:
    """Fails its first ``failures`` calls with ``message``, then succeeds."""

    tracking_uri = "sqlite:///x.db"

    def __init__(self, failures: int, message: str):
        self.failures, self.message, self.calls = failures, message, 0

    def log_metric(self, run_id, key, value):
        self.calls += 1
        if self.calls <= self.failures:
            raise MlflowException(self.message)
        return (run_id, key, value)


def test_retrying_client_retries_a_busy_store_and_nothing_else():
    busy = FlakyClient(3, "(sqlite3.OperationalError) database is locked")
    client = RetryingClient(busy, attempts=5, base_delay=0.001)
    assert client.log_metric("r", "k", 1.0) == ("r", "k", 1.0) and busy.calls == 4
    assert client.tracking_uri == "sqlite:///x.db"  # attributes pass through
    with pytest.raises(MlflowException, match="locked"):
        RetryingClient(FlakyClient(9, "database is locked"), attempts=3, base_delay=0.001).log_metric("r", "k", 1)
    other = FlakyClient(1, "RESOURCE_DOES_NOT_EXIST: run r")
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        RetryingClient(other, attempts=5, base_delay=0.001).log_metric("r", "k", 1)
    assert other.calls == 1  # not retried


def test_sqlite_path_reads_only_sqlite_uris(tmp_path):
    assert sqlite_path(f"sqlite:///{tmp_path}/mlflow.db") == tmp_path / "mlflow.db"
    assert sqlite_path("http://localhost:5000") is None and sqlite_path("sqlite:///:memory:") is None


# ----- real multiruns (separate processes)

SWEEP_TINY = [
    "data.source.train_size=64", "data.source.val_size=16", "data.source.test_size=16", "data.source.image_size=64",
    "data.batch_size=16", "data.num_workers=0", "trainer.max_epochs=2", "~callbacks.rich_progress_bar",
    "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
]


def run_cli(args: list[str], root: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "agelab.train", *args, f"paths.root_dir={root}"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def pregenerate_synth_cache(root: Path) -> None:
    """Parallel jobs must not all write the same synthetic cache at once: build it first."""
    cfg = compose_config(root, SWEEP_TINY)
    instantiate(cfg.data.source).load()


@pytest.mark.slow
def test_joblib_multirun_of_models_and_optimisers_logs_every_run(tmp_path):
    pregenerate_synth_cache(tmp_path)
    result = run_cli(["-m", "hydra/launcher=local", "hydra.launcher.n_jobs=3", "model=smlf_small,simple_cnn",
                      "optimizer=adamw,sgd", *SWEEP_TINY], tmp_path)
    assert "ConfigStore schema" not in result.stdout + result.stderr  # conf extends the plugin's schema explicitly
    client, runs = all_runs(tmp_path)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    combos = sorted((r.data.tags["model"], r.data.params["optimizer._target_"]) for r in runs)
    assert combos == [("simple_cnn", "torch.optim.AdamW"), ("simple_cnn", "torch.optim.SGD"),
                      ("smlf_small", "torch.optim.AdamW"), ("smlf_small", "torch.optim.SGD")]
    for run in runs:
        assert {"train/loss", "val/mae", "test/mae", "test/cs5"} <= set(run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "val/mae")) == 2  # one per epoch
        assert len(client.get_metric_history(run.info.run_id, "test/cs_curve")) == 16
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_plugin_launchers_sweep_from_an_empty_cache(launcher, tmp_path):
    """The plugins' own launchers with their defaults, 3 jobs at once, each drawing the built-in faces
    (more than one chunk: the draw would start a pool) into the same empty cache."""
    run_cli(["-m", f"hydra/launcher={launcher}", "seed=1,2,3", *SWEEP_TINY, "data.source.train_size=1100",
             *(["hydra.launcher.n_jobs=3"] if launcher == "joblib" else ["hydra.launcher.tasks_per_node=1"])],
            tmp_path)
    client, runs = all_runs(tmp_path)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2", "3"]


@pytest.mark.slow
def test_optuna_search_in_parallel_returns_the_best_trial(tmp_path):
    pregenerate_synth_cache(tmp_path)
    run_cli([hparams_search_override(), "hydra/launcher=local", "hydra.launcher.n_jobs=3", "hydra.sweeper.n_jobs=3",
             "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=3", "model=simple_cnn",
             f"hydra.sweep.dir={tmp_path / 'sweep'}", *SWEEP_TINY], tmp_path)
    client, runs = all_runs(tmp_path)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    # train() returned the last epoch's val/mae; the study's best is the smallest of them.
    last_val_mae = [client.get_metric_history(r.info.run_id, "val/mae")[-1].value for r in runs]
    assert results["best_value"] == pytest.approx(min(last_val_mae), rel=1e-5)
    best = runs[int(np.argmin(last_val_mae))].data.params
    assert float(best["optimizer.lr"]) == pytest.approx(results["best_params"]["optimizer.lr"], rel=1e-6)
