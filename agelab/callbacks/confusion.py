"""The test confusion matrix over the 8 Adience groups: counts and row-normalised figures, and the
matrix itself as JSON (for notebooks and for comparing runs without re-running the test)."""

from __future__ import annotations

import pytorch_lightning as pl

from agelab.callbacks.figures import confusion_figure
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


def log_confusion(client, run_id: str, counts, figure: str = FIGURE, figure_normalized: str = FIGURE_NORMALIZED,
                  matrix_json: str = MATRIX_JSON, title: str = "Confusion matrix", scores: str = "") -> None:
    """Both figures and the JSON record of ``counts`` (rows = true group) into an MLflow run."""
    from agelab.callbacks.figures import plt

    record = confusion_record(counts)
    suffix = f" — n={record['n']}" + (f", {scores}" if scores else "")
    for path, normalized, name in ((figure, False, title + suffix), (figure_normalized, True, f"{title}, row-normalised")):
        fig = confusion_figure(record["counts"], GROUP_NAMES, normalized=normalized, title=name)
        try:
            client.log_figure(run_id, fig, path)
        finally:
            plt.close(fig)
    client.log_dict(run_id, record, matrix_json)


class ConfusionMatrixFigure(pl.Callback):
    """After testing, where the test data has groups (``pl_module.test_confusion``): both figures
    under ``figures/`` and ``metrics/confusion_matrix.json``. Group heads predict groups; age heads
    have their predicted ages mapped to groups (see agelab.metrics)."""

    def on_test_end(self, trainer, pl_module):
        confusion = getattr(pl_module, "test_confusion", None)
        client, run_id = mlflow_run(trainer)
        if confusion is None or client is None or not trainer.is_global_zero:
            return
        results = getattr(pl_module, "test_results", {}) or {}
        scores = ", ".join(f"{label} {100 * float(results[key]):.1f} %"
                           for key, label in (("acc", "exact"), ("one_off", "one-off")) if key in results)
        log_confusion(client, run_id, confusion.cpu(), scores=scores)
