"""Finding the MLflow run behind a Trainer."""

from __future__ import annotations

from pytorch_lightning.loggers import MLFlowLogger


def mlflow_run(trainer):
    """(MlflowClient, run_id) of the trainer's MLFlowLogger, or (None, None) without one."""
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger.experiment, logger.run_id
    return None, None
