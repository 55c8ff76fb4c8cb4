"""CPU latency: median wall time of repeated runs after a warm-up, with a chosen thread count."""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
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


def onnx_operator_ms(path: str | Path, input_size: int, runs: int = 50, warmup: int = 10) -> dict[str, float]:
    """ms per call spent in each operator type (onnxruntime's own profiler: one thread, one face, the
    warm-up calls left out), largest first: where a model's time goes."""
    from agelab.inference.onnx_session import ort_session

    with tempfile.TemporaryDirectory() as folder:
        session = ort_session(path, threads=1, profile_prefix=str(Path(folder) / "profile"))
        feed = {session.get_inputs()[0].name: example_input(input_size, 1).numpy()}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                     key=lambda e: e["ts"])
    timed = kernels[len(kernels) // (warmup + runs) * warmup:]  # each call runs every node once
    spent = Counter()
    for event in timed:
        spent[event["args"]["op_name"]] += event["dur"] / 1000 / runs  # microseconds -> ms per call
    return dict(spent.most_common())
