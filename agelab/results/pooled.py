"""Scores over the faces of several runs at once: each run's mean weighted by the faces behind it.

Leave-one-person-out figures are reported this way (FG-NET: the MAE over all 1,002 images); the
plain mean over folds would be a mean over people, each counting alike whatever their photos."""

from __future__ import annotations

import math

import numpy as np

# score -> the metric counting the faces it is a mean over
FACE_COUNTS = {"mae": "n_age", "cs5": "n_age", "acc": "n_group", "one_off": "n_group"}
BREAKDOWN = ("mae_age_", "mae_gender_", "mae_race_")
SUFFIX = "_pooled"


def count_metric(metric: str) -> str | None:
    """``test/mae`` -> ``test/n_age``, ``test/mae_age_20-29`` -> ``test/n_age_20-29``; None for a metric
    that is not a mean over faces."""
    stage, _, name = metric.rpartition("/")
    count = FACE_COUNTS.get(name)
    if count is None and name.startswith(BREAKDOWN):  # mae_age_<band>, mae_gender_<f|m>, mae_race_<name>
        count = "n_" + name[len("mae_"):]
    return f"{stage}/{count}" if stage and count else None


def pooled(values, counts) -> float:
    """Sum of value x count over the sum of counts (runs missing either are left out; NaN if none)."""
    values, counts = np.asarray(values, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    known = np.isfinite(values) & np.isfinite(counts) & (counts > 0)
    total = counts[known].sum()
    return float((values[known] * counts[known]).sum() / total) if total > 0 else math.nan
