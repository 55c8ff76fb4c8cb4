"""Do the exported files predict what the PyTorch model predicts? Measured on real batches."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from agelab.exporting.runners import Runner

REFERENCE = "torch"


def largest_difference(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref|; NaN on both sides (a head without a spread) agrees, NaN on one side is inf."""
    both_nan = np.isnan(ours) & np.isnan(ref)
    diff = np.nan_to_num(np.abs(ours.astype(np.float64) - ref), nan=np.inf)
    return float(np.max(np.where(both_nan, 0.0, diff), initial=0.0))


def _numpy(images) -> np.ndarray:
    return images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)


def agreement(runners: dict[str, Runner], batches: Iterable[dict], task: str = "age",
              limit: int | None = None) -> dict[str, float]:
    """Compare every runner with ``runners["torch"]`` over ``batches`` (dicts with "image", "age", "group").

    Returns, for each other runner ``name``: ``{name}_max_abs_diff`` (largest difference of any
    output value) and for every runner its score: ``{name}_mae`` (years, age heads) or
    ``{name}_accuracy`` (group heads), plus ``{name}_mae_delta`` / ``{name}_accuracy_delta``
    against PyTorch, and ``count`` (faces seen). ``limit`` caps the number of faces.
    """
    if REFERENCE not in runners:
        raise ValueError(f"runners need a {REFERENCE!r} reference")
    max_diff = {name: 0.0 for name in runners if name != REFERENCE}
    errors: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    seen = 0
    for batch in batches:
        images = _numpy(batch["image"]).astype(np.float32)
        if limit is not None:
            images = images[:max(0, limit - seen)]
        if len(images) == 0:
            break
        outputs = {name: run(images) for name, run in runners.items()}
        for name in max_diff:
            for ours, ref in zip(outputs[name], outputs[REFERENCE]):
                max_diff[name] = max(max_diff[name], largest_difference(ours, ref))
        if task == "group":
            target = _numpy(batch["group"])[:len(images)]
            for name, out in outputs.items():
                known = target >= 0
                errors[name].append((out[0].argmax(axis=1) == target)[known])
        else:
            target = _numpy(batch["age"])[:len(images)].astype(np.float64)
            known = np.isfinite(target)  # faces labelled with a group only (Adience ranges) have no age
            for name, out in outputs.items():
                errors[name].append(np.abs(out[0].astype(np.float64) - target)[known])
        seen += len(images)
    score = "accuracy" if task == "group" else "mae"
    result: dict[str, float] = {"count": float(seen)}
    for name, values in errors.items():
        scored = np.concatenate(values) if values else np.empty(0)
        result[f"{name}_{score}"] = float(scored.mean()) if len(scored) else float("nan")
    for name, diff in max_diff.items():
        result[f"{name}_max_abs_diff"] = diff
        result[f"{name}_{score}_delta"] = result[f"{name}_{score}"] - result[f"{REFERENCE}_{score}"]
    return result
