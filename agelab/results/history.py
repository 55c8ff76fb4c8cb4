"""Metric histories of runs as long DataFrames: learning curves by epoch, CS curves by theta."""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from agelab.results.runs import open_store

COLUMNS = ["run_id", "x", "value"]


def epoch_of_step(epoch_history) -> dict[int, int]:
    """step -> epoch from Lightning's ``epoch`` metric; the end of one epoch and the start of the
    next share a step, and epoch-end metrics belong to the earlier one. (Used by the learning-curve
    callback too; it lives here because importing agelab.callbacks switches matplotlib to its
    file-only backend, which would stop a notebook from showing figures.)"""
    epochs: dict[int, int] = {}
    for point in epoch_history:
        epochs[point.step] = min(int(point.value), epochs.get(point.step, int(point.value)))
    return epochs


def metric_history(tracking_uri: str, run_ids: Iterable[str], key: str, by: str = "step") -> pd.DataFrame:
    """Every logged value of ``key`` for each run: columns run_id, x, value, sorted by run and x.

    ``by="step"``: x is the logged step (``test/cs_curve`` is logged with step = theta);
    ``by="epoch"``: x is the training epoch (for per-epoch metrics such as ``val/mae``).
    """
    if by not in ("step", "epoch"):
        raise ValueError(f"by must be 'step' or 'epoch', got {by!r}")
    client = open_store(tracking_uri)
    rows = []
    for run_id in run_ids:
        history = client.get_metric_history(run_id, key)
        if not history:
            continue
        epochs = epoch_of_step(client.get_metric_history(run_id, "epoch")) if by == "epoch" else {}
        for point in sorted(history, key=lambda m: (m.step, m.timestamp)):
            rows.append((run_id, epochs.get(point.step, point.step), point.value))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    # A resumed epoch may be logged twice: keep the last value of each (run, x).
    return frame.drop_duplicates(["run_id", "x"], keep="last").sort_values(["run_id", "x"], ignore_index=True)
