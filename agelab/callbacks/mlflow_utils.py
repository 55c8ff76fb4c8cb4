"""Finding the MLflow run and the best checkpoint behind a Trainer."""

from __future__ import annotations

from pytorch_lightning.loggers import MLFlowLogger


def mlflow_run(trainer):
    """(MlflowClient, run_id) of the trainer's MLFlowLogger, or (None, None) without one."""
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger.experiment, logger.run_id
    return None, None


def logged_in_run(trainer, name: str) -> bool:
    """Whether the trainer's MLflow run has metric ``name`` already (a resumed run logged it before)."""
    client, run_id = mlflow_run(trainer)
    return client is not None and name in client.get_run(run_id).data.metrics


def best_checkpoint_path(trainer) -> str:
    """The best checkpoint of the monitored ModelCheckpoint ('' before it saved one). The other,
    unmonitored one only keeps last.ckpt for resuming."""
    callbacks = trainer.checkpoint_callbacks
    monitored = [c for c in callbacks if c.monitor is not None] or callbacks
    return monitored[0].best_model_path if monitored else ""
