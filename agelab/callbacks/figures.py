"""Figures logged to the MLflow run: the drawing functions (pure: data in, matplotlib figure out)
and ``CSCurveFigure``. The other figure callbacks live beside this file and draw with these."""

from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
import pytorch_lightning as pl  # noqa: E402

from agelab.callbacks.mlflow_utils import mlflow_run  # noqa: E402
from agelab.metrics import SPREAD_MULTIPLES, expected_coverage  # noqa: E402


PANEL_TITLES = {"loss": "loss", "mae": "MAE (years)", "cs5": "CS(5)", "acc": "exact group accuracy",
                "one_off": "one-off group accuracy", "f1": "macro F1 (groups)"}


def log_figure(trainer, fig, artifact_file: str) -> bool:
    """Log ``fig`` as ``artifact_file`` (e.g. "figures/x.png") to the trainer's MLflow run, from
    rank zero only; the figure is closed either way. Returns whether it was logged."""
    try:
        client, run_id = mlflow_run(trainer)
        if client is None or not trainer.is_global_zero:
            return False
        client.log_figure(run_id, fig, artifact_file)
        return True
    finally:
        plt.close(fig)


def cs_curve_figure(curve, title: str = "Cumulative score"):
    """CS(theta) for theta = 0..len(curve)-1, in percent."""
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    thetas = list(range(len(curve)))
    ax.plot(thetas, [100 * float(v) for v in curve], marker="o")
    ax.set(xlabel="error level θ (years)", ylabel="CS(θ) %", title=title, ylim=(0, 100), xlim=(0, thetas[-1]))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def spread_reliability_figure(curve, title: str = "Spread reliability"):
    """Observed share of true ages within ± k predicted std against the share a normal error promises."""
    ks = np.asarray(SPREAD_MULTIPLES)
    expected = [100 * expected_coverage(k) for k in ks]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    ax.plot(expected, expected, color="grey", linestyle="--", label="calibrated")
    ax.plot(expected, [100 * float(v) for v in curve], marker=".", label="observed")
    ax.set(xlabel="expected coverage % (± k std, normal error)", ylabel="observed coverage %", title=title,
           xlim=(0, 100), ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(counts, labels: Sequence[str], normalized: bool = False, title: str | None = None):
    """A confusion matrix (rows = true class, columns = predicted) with every cell written in: the
    counts, or with ``normalized`` each true class's row divided by its count (rows sum to 1)."""
    matrix = np.asarray(counts, dtype=np.float64)
    if normalized:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=100)
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalized else max(matrix.max(), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set(xlabel="predicted group", ylabel="true group",
           title=title or ("Confusion matrix (row-normalised)" if normalized else "Confusion matrix (counts)"))
    threshold = (1 if normalized else max(matrix.max(), 1)) / 2  # white text on dark cells
    for (row, col), value in np.ndenumerate(matrix):
        text = f"{value:.2f}" if normalized else f"{int(round(value))}"
        ax.text(col, row, text, ha="center", va="center", fontsize=8,
                color="white" if value > threshold else "black")
    fig.tight_layout()
    return fig


def bar_figure(values: Mapping[str, float], xlabel: str, ylabel: str = "MAE (years)", title: str = "",
               reference: float | None = None, reference_label: str = "overall"):
    """One bar per category with its value written on top; ``reference`` as a dashed line."""
    names, heights = list(values), [float(v) for v in values.values()]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.75 * len(names) + 2), 3.6), dpi=100)
    bars = ax.bar(names, heights, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{h:.1f}" for h in heights], fontsize=8, padding=2)
    if reference is not None:
        ax.axhline(reference, color="#c44e52", linestyle="--", linewidth=1, label=f"{reference_label} {reference:.2f}")
        ax.legend(loc="upper left", fontsize=8)
    top = max(heights + [reference or 0.0, 1e-6])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(0, top * 1.18))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def learning_curves_figure(curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]], title: str = ""):
    """One panel per quantity: ``curves[quantity][stage] = [(epoch, value), ...]``, e.g.
    ``curves["loss"]["val"]``; stages share a panel (train solid, val dashed)."""
    names = list(curves)
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=100, squeeze=False)
    styles = {"train": dict(linestyle="-", marker="o"), "val": dict(linestyle="--", marker="s")}
    for ax, name in zip(axes.flat, names):
        for stage, points in curves[name].items():
            if points:
                x, y = zip(*points)
                ax.plot(x, y, label=stage, markersize=4, **styles.get(stage, {}))
        ax.set(title=PANEL_TITLES.get(name, name), xlabel="epoch")
        epochs = {x for points in curves[name].values() for x, _ in points}
        if len(epochs) == 1:  # one epoch: whole-number ticks around it, not +-0.05
            ax.set_xlim(min(epochs) - 1, min(epochs) + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_grid_figure(images: Sequence[np.ndarray], captions: Sequence[str], cols: int = 4, title: str = ""):
    """Images (H x W x 3 uint8 RGB) in a grid, each with its caption above it."""
    count = len(images)
    cols = max(1, min(cols, count))
    rows = max(1, math.ceil(count / cols))
    title_inches = 0.4 if title else 0.0
    height = 2.1 * rows + title_inches
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, height), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image, interpolation="nearest")  # the pixels the model saw
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - title_inches / height))  # the title keeps its own strip on top
    return fig


class SpreadReliabilityFigure(pl.Callback):
    """After testing: ``figures/spread_reliability.png``, the test faces' observed coverage of ± k
    predicted std against the expected one (a head without a spread draws nothing)."""

    def on_test_end(self, trainer, pl_module):
        curve = getattr(pl_module, "test_results", {}).get("spread_curve")
        if mlflow_run(trainer)[0] is not None and curve is not None and trainer.is_global_zero:
            log_figure(trainer, spread_reliability_figure(curve), "figures/spread_reliability.png")


class CSCurveFigure(pl.Callback):
    """After testing: the test-set CS curve as ``figures/cs_curve.png`` and metrics test/cs_curve (step = theta)."""

    def on_test_end(self, trainer, pl_module):
        client, run_id = mlflow_run(trainer)
        curve = getattr(pl_module, "test_cs_curve", None)
        if client is None or curve is None or not trainer.is_global_zero:
            return
        log_figure(trainer, cs_curve_figure(curve), "figures/cs_curve.png")
        if any("test/cs_curve" in getattr(logger, "logged_already", ()) for logger in trainer.loggers):
            return  # a resumed run tested again: the same curve is in the run already
        now = int(time.time() * 1000)  # one write: a run stopped in between never keeps half a curve
        client.log_batch(run_id, metrics=[Metric("test/cs_curve", float(value), now, theta)
                                          for theta, value in enumerate(curve)])
