"""The test confusion matrix over the 8 Adience groups: counts and row-normalised figures, and the
matrix itself as JSON (for notebooks and for comparing runs without re-running the test)."""

from __future__ import annotations

import pytorch_lightning as pl

from agelab.callbacks.figures import confusion_figure, log_figure
from agelab.callbacks.mlflow_utils import mlflow_run
from agelab.groups import GROUP_NAMES

FIGURE = "figures/confusion_matrix.png"
FIGURE_NORMALIZED = "figures/confusion_matrix_normalized.png"
MATRIX_JSON = "metrics/confusion_matrix.json"


def confusion_record(counts, labels=GROUP_NAMES) -> dict:
    """The JSON form: labels, counts (rows = true group), row-normalised shares, totals."""
    counts = [[int(v) for v in row] for row in counts.tolist()]
    normalized = [[v / max(sum(row), 1) for v in row] for row in counts]
    return {"labels": list(labels), "rows": "true group", "columns": "predicted group",
            "counts": counts, "normalized": normalized, "n": sum(map(sum, counts))}


class ConfusionMatrixFigure(pl.Callback):
    """After testing, where the test data has groups (``pl_module.test_confusion``): both figures
    under ``figures/`` and ``metrics/confusion_matrix.json``. Group heads predict groups; age heads
    have their predicted ages mapped to groups (see agelab.metrics)."""

    def on_test_end(self, trainer, pl_module):
        confusion = getattr(pl_module, "test_confusion", None)
        client, run_id = mlflow_run(trainer)
        if confusion is None or client is None or not trainer.is_global_zero:
            return
        record = confusion_record(confusion.cpu())
        results = getattr(pl_module, "test_results", {}) or {}
        scores = ", ".join(f"{label} {100 * float(results[key]):.1f} %"
                           for key, label in (("acc", "exact"), ("one_off", "one-off")) if key in results)
        suffix = f" — n={record['n']}" + (f", {scores}" if scores else "")
        log_figure(trainer, confusion_figure(record["counts"], GROUP_NAMES, title=f"Confusion matrix{suffix}"), FIGURE)
        log_figure(trainer, confusion_figure(record["normalized"], GROUP_NAMES, normalized=True,
                                             title="Confusion matrix, row-normalised"), FIGURE_NORMALIZED)
        client.log_dict(run_id, record, MATRIX_JSON)
