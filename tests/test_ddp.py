"""DDP with two CPU processes (gloo): one MLflow run, written by rank 0 only, with every metric."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
TINY_DDP = [
    "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
    "trainer.sync_batchnorm=false", "trainer.max_epochs=2", "model=simple_cnn",
    "data.source.train_size=64", "data.source.val_size=33", "data.source.test_size=33", "data.source.image_size=64",
    "data.batch_size=8", "data.num_workers=0", "~callbacks.rich_progress_bar", "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_two_process_ddp_logs_one_run_from_rank_zero(tmp_path, augment_on):
    # Both ranks read the synthetic cache: build it once first, as agelab.prepare does for real data.
    instantiate(compose_config(tmp_path, TINY_DDP).data.source).load()
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "agelab.train", *TINY_DDP, f"data.augment_on={augment_on}",
                             f"paths.root_dir={tmp_path}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("agelab").experiment_id])
    assert len(runs) == 1  # rank 1 created no run of its own
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.params["trainer.strategy"] == "ddp"
    assert {"train/loss", "val/mae", "test/mae", "test/cs5", "data/split/train"} <= set(run.data.metrics)
    # Each epoch logged once (by rank 0), not once per process.
    assert len(client.get_metric_history(run.info.run_id, "val/mae")) == 2
    assert len(client.get_metric_history(run.info.run_id, "test/cs_curve")) == 16
    assert run.data.metrics["data/split/train"] == 64
    # The 33 test faces were each scored once over both processes (17 + 16), none repeated.
    assert run.data.metrics["test/n_age"] == 33
    assert len(client.list_artifacts(run.info.run_id, "checkpoints")) == 1
    # The distributed sampler gave each process half of the 64 faces: 4 steps of 8 per epoch, not 8.
    last = list(tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt"))
    assert len(last) == 1 and torch.load(last[0], weights_only=True)["global_step"] == 2 * 4


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_each_process_scores_its_own_val_faces_and_none_twice(tmp_path, augment_on):
    from types import SimpleNamespace

    from agelab.errors import ConfigError

    cfg = compose_config(tmp_path, [f"paths.root_dir={tmp_path}", "data.source.train_size=16", "data.source.val_size=7",
                                    "data.source.test_size=2", "data.source.image_size=64", "+data.eval_batch_size=2",
                                    f"data.augment_on={augment_on}"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    seen = []
    for rank in range(3):
        datamodule.trainer = SimpleNamespace(world_size=3, global_rank=rank)
        rows = list(datamodule.val_dataloader().sampler)
        seen.append([r for batch in rows for r in batch] if augment_on == "device" else rows)
    assert sorted(r for share in seen for r in share) == list(range(7)) and [len(s) for s in seen] == [3, 2, 2]
    with pytest.raises(ConfigError, match="the test split has 2 face"):
        datamodule.test_dataloader()  # 2 faces for 3 processes: one would have none
