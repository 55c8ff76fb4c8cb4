"""CPU latency: median wall time of repeated runs after a warm-up, with a chosen thread count."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from agelab.exporting.runners import ort_runner, torch_runner, torch_threads
from agelab.exporting.wrapper import example_input


def median_ms(fn: Callable[[], object], runs: int = 50, warmup: int = 10) -> float:
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def torch_latency_ms(module: torch.nn.Module, input_size: int, batch: int = 1, threads: int | None = 1,
                     runs: int = 50, warmup: int = 10) -> float:
    """Median ms per call of eager PyTorch on a (batch, 3, S, S) input."""
    run, images = torch_runner(module), example_input(input_size, batch).numpy()
    with torch_threads(threads):
        return median_ms(lambda: run(images), runs, warmup)


def onnx_latency_ms(path: str | Path, input_size: int, batch: int = 1, threads: int | None = 1,
                    runs: int = 50, warmup: int = 10) -> float:
    """Median ms per call of onnxruntime (CPU, ``threads`` intra-op threads; None: all cores)."""
    run, images = ort_runner(path, threads), example_input(input_size, batch).numpy()
    return median_ms(lambda: run(images), runs, warmup)
