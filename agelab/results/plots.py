"""Comparison figures drawn from ``load_runs`` / ``metric_history`` / ``summarize`` frames.

Plain pyplot figures (returned, not saved), so a notebook shows them inline.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from agelab.results.table import as_list, group_column, group_text, with_cv_column


def labels(frame: pd.DataFrame, keys) -> pd.Series:
    """A short label per row: the values of the ``keys`` that differ between rows, joined by ' / '
    (all of them when none differs). Fold runs of different cross-validations are told apart (``cv``)."""
    frame = with_cv_column(frame)
    keys = as_list(keys)
    if "cv" not in keys and "cv" in frame and frame["cv"].notna().any():
        keys.append("cv")
    columns = [key if key in frame.columns else group_column(frame, key) for key in keys]
    text = frame[columns].apply(group_text)
    varying = [c for c in columns if text[c].nunique() > 1] or columns
    return text[varying].agg(" / ".join, axis=1)


def colours(names) -> dict[str, tuple]:
    palette = plt.get_cmap("tab10")
    return {name: palette(i % 10) for i, name in enumerate(dict.fromkeys(names))}


def learning_curves(history: pd.DataFrame, runs: pd.DataFrame, group_by, metric: str = "val/mae"):
    """One line per run (``history`` by epoch), coloured by its group."""
    group = labels(runs.set_index("run_id"), group_by)
    colour = colours(sorted(group.unique()))
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    shown = set()
    for run_id, points in history.groupby("run_id", sort=False):
        name = group.get(run_id)
        if name is None:
            continue
        ax.plot(points["x"], points["value"], marker="o", color=colour[name], alpha=0.8,
                label=None if name in shown else name)
        shown.add(name)
    ax.set(xlabel="epoch", ylabel=metric, title=f"Learning curves: {metric} (one line per run)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cs_curves(history: pd.DataFrame, runs: pd.DataFrame, group_by):
    """CS(theta) in percent per group: the mean over its runs, the band one std either side."""
    group = labels(runs.set_index("run_id"), group_by)
    frame = history.assign(group=history["run_id"].map(group)).dropna(subset=["group"])
    colour = colours(sorted(frame["group"].unique()))
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    for name, points in frame.groupby("group"):
        stats = points.groupby("x")["value"].agg(["mean", lambda v: np.std(v.to_numpy())]) * 100
        stats.columns = ["mean", "std"]
        ax.plot(stats.index, stats["mean"], marker="o", color=colour[name], label=name)
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                        color=colour[name], alpha=0.2)
    ax.set(xlabel="error level θ (years)", ylabel="CS(θ) %", ylim=(0, 100), title="Cumulative score (test)")
    ax.grid(alpha=0.3)
    if not frame.empty:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(summary: pd.DataFrame, metric: str = "test/mae"):
    """One bar per group: the mean of ``metric`` with its std as the error bar."""
    names = labels(summary, summary.attrs["group_by"])
    means, stds = summary[f"{metric}_mean"].to_numpy(), summary[f"{metric}_std"].fillna(0).to_numpy()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(summary) + 2), 4.2), dpi=100)
    bars = ax.bar(names, means, yerr=stds, capsize=4, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{m:.2f}\n(n={n})" for m, n in zip(means, summary["n"])], fontsize=8, padding=2)
    top = np.nanmax(means + stds) if np.isfinite(means).any() else 1.0
    ax.set(ylabel=f"{metric} (mean ± std over runs)", title=f"{metric} by group", ylim=(0, top * 1.25))
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
