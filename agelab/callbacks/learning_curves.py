"""Train / val loss and metric curves, drawn at the end of fitting from the run's own metric history
in MLflow — so a resumed training draws every epoch, including those of the earlier process."""

from __future__ import annotations

import pytorch_lightning as pl

from agelab.callbacks.figures import learning_curves_figure, log_figure
from agelab.callbacks.mlflow_utils import mlflow_run
from agelab.results.history import epoch_of_step

FIGURE = "figures/learning_curves.png"
STAGES = ("train", "val")
QUANTITIES = ("loss", "mae", "cs5", "acc", "one_off", "f1")  # what AgeModule logs every epoch, in panel order


def run_curves(client, run_id: str, quantities=QUANTITIES, stages=STAGES) -> dict[str, dict[str, list]]:
    """{quantity: {stage: [(epoch, value), ...]}} for the ``<stage>/<quantity>`` metrics the run has."""
    logged = client.get_run(run_id).data.metrics
    epochs = epoch_of_step(client.get_metric_history(run_id, "epoch")) if "epoch" in logged else {}
    curves: dict[str, dict[str, list]] = {}
    for quantity in quantities:
        for stage in stages:
            key = f"{stage}/{quantity}"
            if key in logged:
                history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
                curves.setdefault(quantity, {})[stage] = [(epochs.get(m.step, m.step), m.value) for m in history]
    return curves


class LearningCurvesFigure(pl.Callback):
    """At the end of fitting: ``figures/learning_curves.png``, one panel per quantity (loss, MAE,
    CS(5), accuracy, one-off, F1 — those the run logged), train and val together."""

    def on_fit_end(self, trainer, pl_module):
        client, run_id = mlflow_run(trainer)
        if client is None or not trainer.is_global_zero:
            return
        curves = run_curves(client, run_id)
        if curves:
            log_figure(trainer, learning_curves_figure(curves, title="Learning curves"), FIGURE)
