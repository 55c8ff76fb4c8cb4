"""A training killed mid-epoch (SIGKILL) and restarted with the same command finishes the same MLflow run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.source.train_size=256", "data.source.val_size=64", "data.source.test_size=64", "data.source.image_size=72",
        "data.batch_size=16", "data.num_workers=0", "trainer.max_epochs=4", "trainer.deterministic=true",
        "~callbacks.rich_progress_bar"]


def command(root: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "agelab.train", f"paths.root_dir={root}", f"hydra.run.dir={run_dir}", *TINY]


def history(root: Path, key: str) -> list[tuple[int, float]]:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("agelab").experiment_id])
    assert len(runs) == 1
    return runs[0].info.run_id, sorted((m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, key))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_resumes_the_same_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Uninterrupted reference with the same seed.
    ref_root = tmp_path / "reference"
    subprocess.run(command(ref_root, ref_root / "run"), cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    _, ref_val = history(ref_root, "val/mae")

    root, run_dir = tmp_path / "crash", tmp_path / "crash" / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(command(root, run_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill once epoch 1 is saved, i.e. during epoch 2
        if last.is_file() and torch.load(last, weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.2)
    # Early in epoch 2: a kill in the few milliseconds between an epoch's val metrics reaching MLflow
    # and its last.ckpt being written would re-run that epoch and log its step twice.
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id, partial = history(root, "val/mae")
    assert 2 <= len(partial) < 4

    # The same command again: it finds last.ckpt in its run folder and continues.
    subprocess.run(command(root, run_dir), cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    same_id, resumed = history(root, "val/mae")
    assert same_id == run_id
    steps = [s for s, _ in resumed]
    assert len(steps) == 4 and len(set(steps)) == 4  # no epoch lost or logged twice
    assert [s for s, _ in ref_val] == steps
    for (_, a), (_, b) in zip(ref_val, resumed):
        assert abs(a - b) < 0.05 * a  # deterministic mode + restored RNG states: the same curve
