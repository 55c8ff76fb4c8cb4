"""Callbacks: side effects of training (artifacts and figures in the MLflow run)."""

from agelab.callbacks.run_artifacts import BestCheckpointArtifact, CheckpointRunId
from agelab.callbacks.figures import CSCurveFigure

__all__ = ["CheckpointRunId", "BestCheckpointArtifact", "CSCurveFigure"]
