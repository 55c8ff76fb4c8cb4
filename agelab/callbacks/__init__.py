"""Callbacks: side effects of training (artifacts and figures in the MLflow run)."""

from agelab.callbacks.run_artifacts import BestCheckpointArtifact, CheckpointRunId
from agelab.callbacks.figures import CSCurveFigure

__all__ = ["CheckpointRunId", "BestCheckpointArtifact", "CSCurveFigure"]
from agelab.callbacks.confusion import ConfusionMatrixFigure  # noqa: E402
from agelab.callbacks.error_breakdown import MAEBreakdownFigure  # noqa: E402
from agelab.callbacks.learning_curves import LearningCurvesFigure  # noqa: E402
from agelab.callbacks.model_size import ModelSize  # noqa: E402
from agelab.callbacks.worst_predictions import WorstPredictionsFigure  # noqa: E402

__all__ += ["ConfusionMatrixFigure", "MAEBreakdownFigure", "LearningCurvesFigure", "WorstPredictionsFigure",
            "ModelSize"]
