"""One way to run each exported form: ``runner(images) -> tuple of numpy outputs``.

``images`` is a float32 (N, 3, S, S) batch in [-1, 1]; the outputs are the wrapper's,
``(age, std)`` for age heads or ``(probs,)`` for group heads.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from agelab.exporting.wrapper import as_outputs
from agelab.inference.onnx_session import ort_session

Runner = Callable[[np.ndarray], tuple[np.ndarray, ...]]


@contextmanager
def torch_threads(threads: int | None):
    """Run PyTorch with ``threads`` intra-op threads (None: leave as is), restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_runner(module: torch.nn.Module) -> Runner:
    """Eager PyTorch (the wrapper or any module with the same outputs), fp32, inference mode."""
    module = module.eval()

    def run(images):
        with torch.inference_mode():
            return tuple(o.numpy() for o in as_outputs(module(torch.from_numpy(images))))
    return run


def torchscript_runner(path: str | Path) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        return torch_runner(torch.jit.load(str(path), map_location="cpu"))


def ort_runner(path: str | Path, threads: int | None = None) -> Runner:
    session = ort_session(path, threads)
    input_name = session.get_inputs()[0].name

    def run(images):
        return tuple(session.run(None, {input_name: np.ascontiguousarray(images, dtype=np.float32)}))
    return run
