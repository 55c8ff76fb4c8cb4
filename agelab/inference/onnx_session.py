"""An ONNX Runtime CPU session, built one way for the export checks, the benchmarks and predict.
Needs onnxruntime only (no torch), so a board that serves int8 models can use it."""

from __future__ import annotations

from pathlib import Path

from agelab.errors import ConfigError

# The input sides a face model may take (the lab's own exports take 64..299): a model declaring more
# would make every face crop, and every batch fed to it, as large as it asks.
SIDES = range(8, 1025)


def image_side(path: str | Path, shape, given: int | None = None) -> int:
    """S of the model's declared (N, 3, S, S) image input (N may be symbolic), or ``given`` where S is
    symbolic; a one-line ConfigError naming the file unless S is square and within SIDES."""
    expected = f"expected (N, 3, S, S) with S from {SIDES.start} to {SIDES.stop - 1}"
    if len(shape) != 4 or shape[1] != 3:
        raise ConfigError(f"{path}: the model's input is {list(shape)}; {expected}")
    height, width = shape[2:]
    if isinstance(height, int) and isinstance(width, int):
        if height != width or height not in SIDES:
            raise ConfigError(f"{path}: the model's input is {list(shape)}; {expected}")
        if given is not None and int(given) != height:
            raise ConfigError(f"input_size={given} but {path} takes {height}x{width} images")
        return height
    if given is None:
        raise ConfigError(f"{path}: the input size is not fixed in the model ({list(shape)}); "
                          f"give input_size=<pixels>, from {SIDES.start} to {SIDES.stop - 1}")
    if int(given) not in SIDES:
        raise ConfigError(f"input_size={given} for {path}: {expected}")
    return int(given)


def ort_session(path: str | Path, threads: int | None = None, input_size: int | None = None,
                profile_prefix: str | None = None):
    """A CPU session; ``threads`` intra-op threads (None or 0: onnxruntime's default, all cores), and
    then one inter-op thread: the graphs are a chain of layers, so a second pool only competes.

    The model's declared input is checked (``image_side``) before anything runs; ``input_size``: S
    where the model leaves it symbolic. A file onnxruntime cannot load is a ConfigError too.
    ``profile_prefix``: onnxruntime's profiler on, its JSON written there by ``end_profiling()``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers etc. are noise here
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"{path}: not a loadable ONNX model ({reason})") from exc
    inputs = session.get_inputs()
    image_side(path, inputs[0].shape if inputs else [], input_size)
    return session
