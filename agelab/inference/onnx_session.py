"""An ONNX Runtime CPU session, built one way for the export checks, the benchmarks and predict.
Needs onnxruntime only (no torch), so a board that serves int8 models can use it."""

from __future__ import annotations

from pathlib import Path


def ort_session(path: str | Path, threads: int | None = None):
    """A CPU session; ``threads`` intra-op threads (None or 0: onnxruntime's default, all cores), and
    then one inter-op thread: the graphs are a chain of layers, so a second pool only competes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers etc. are noise here
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
