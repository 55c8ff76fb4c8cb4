"""Run bookkeeping: the run id inside checkpoints, the best checkpoint as an artifact."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from agelab.callbacks.mlflow_utils import best_checkpoint_path, mlflow_run
from agelab.tracking import CHOICES_KEY, CONFIG_KEY, RUN_ID_KEY


class CheckpointRunId(pl.Callback):
    """Stores the MLflow run id (so ``ckpt_path=...`` resumes the same run) and the resolved config
    (so eval/export/predict rebuild the model from the checkpoint alone) in each checkpoint."""

    def __init__(self):
        self.config_yaml: str | None = None  # set by train()
        self.choices: dict[str, str | None] = {}  # the config group choices, set by train()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        _, run_id = mlflow_run(trainer)
        if run_id:
            checkpoint[RUN_ID_KEY] = run_id
        if self.config_yaml:
            checkpoint[CONFIG_KEY] = self.config_yaml
        if self.choices:
            checkpoint[CHOICES_KEY] = dict(self.choices)


class BestCheckpointArtifact(pl.Callback):
    """Logs the best checkpoint (by the ModelCheckpoint monitor) under ``checkpoints/``; a run
    resumed to train longer replaces the best of its earlier fit there, so one best stays."""

    def on_fit_end(self, trainer, pl_module):
        client, run_id = mlflow_run(trainer)
        best = best_checkpoint_path(trainer)
        if not (client and best and trainer.is_global_zero):
            return
        stale = [a.path for a in client.list_artifacts(run_id, "checkpoints") if a.path != f"checkpoints/{Path(best).name}"]
        if stale:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            repository = get_artifact_repository(client.get_run(run_id).info.artifact_uri)
            for path in stale:
                try:
                    repository.delete_artifacts(path)
                except NotImplementedError:  # a store that cannot delete keeps both
                    break
        client.log_artifact(run_id, best, "checkpoints")
