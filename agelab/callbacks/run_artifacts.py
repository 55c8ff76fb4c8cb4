"""Run bookkeeping: the run id inside checkpoints, the best checkpoint as an artifact."""

from __future__ import annotations

import pytorch_lightning as pl

from agelab.callbacks.mlflow_utils import mlflow_run
from agelab.tracking import RUN_ID_KEY


class CheckpointRunId(pl.Callback):
    """Stores the MLflow run id in each checkpoint, so ``ckpt_path=...`` resumes the same run."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        _, run_id = mlflow_run(trainer)
        if run_id:
            checkpoint[RUN_ID_KEY] = run_id


class BestCheckpointArtifact(pl.Callback):
    """Logs the best checkpoint (by the ModelCheckpoint monitor) under ``checkpoints/``."""

    def on_fit_end(self, trainer, pl_module):
        client, run_id = mlflow_run(trainer)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if client and best and trainer.is_global_zero:
            client.log_artifact(run_id, best, "checkpoints")
