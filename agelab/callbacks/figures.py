"""Figures logged to the MLflow run."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402

from agelab.callbacks.mlflow_utils import mlflow_run  # noqa: E402


def cs_curve_figure(curve, title: str = "Cumulative score"):
    """CS(theta) for theta = 0..len(curve)-1, in percent."""
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    thetas = list(range(len(curve)))
    ax.plot(thetas, [100 * float(v) for v in curve], marker="o")
    ax.set(xlabel="error level θ (years)", ylabel="CS(θ) %", title=title, ylim=(0, 100), xlim=(0, thetas[-1]))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


class CSCurveFigure(pl.Callback):
    """After testing: the test-set CS curve as ``figures/cs_curve.png`` and metrics test/cs_curve (step = theta)."""

    def on_test_end(self, trainer, pl_module):
        client, run_id = mlflow_run(trainer)
        curve = getattr(pl_module, "test_cs_curve", None)
        if client is None or curve is None or not trainer.is_global_zero:
            return
        fig = cs_curve_figure(curve)
        client.log_figure(run_id, fig, "figures/cs_curve.png")
        plt.close(fig)
        for theta, value in enumerate(curve):
            client.log_metric(run_id, "test/cs_curve", float(value), step=theta)
