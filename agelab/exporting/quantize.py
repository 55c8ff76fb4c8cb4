"""Static int8 quantization of an fp32 ONNX file with onnxruntime (QDQ, per-channel weights).

What gets quantized: the whole backbone and the head's output layer (uint8 activations, int8
per-output-channel weights), so onnxruntime runs it as one int8 chain — QLinearConv,
QLinearLeakyRelu, QLinearGlobalAveragePool, QLinearSigmoid/QLinearMul for the SE gates,
QLinearAdd for the residuals — with no float round trip between layers. Quantizing only the
convolutions was slower than fp32 on small inputs: every SE gate and activation then costs a
Dequantize/Quantize pair. The logits stay float (the head layer outputs fp32) and the decoding
(softmax, expected age over 0..max_age) runs in fp32: 8-bit steps there would move the
predicted age by tenths of a year.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from agelab.errors import ConfigError

log = logging.getLogger(__name__)
# Node-name scopes the exporter gives the wrapper's backbone and head (decoding has no scope).
MODEL_SCOPE, HEAD_SCOPE = "/model/", "/head/"
HEAD_OP_TYPES = ("Gemm",)  # the head's output layers (nn.Linear)
# Without those scopes (a graph from elsewhere), quantize only the layers that carry weights.
FALLBACK_OP_TYPES = ("Conv", "Gemm", "MatMul")
CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                       "entropy": CalibrationMethod.Entropy}


class ImageBatches(CalibrationDataReader):
    """Feeds calibration batches (N, 3, S, S) float32 to the calibrator."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self.input_name = input_name
        self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        self._iter = iter(self.batches)

    def get_next(self):
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self):
        self._iter = iter(self.batches)


@contextmanager
def quiet_logger(name: str, level: int = logging.WARNING):
    """onnxruntime's quantization tools log every step at INFO; keep that out of our logs."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def trunk_nodes(model: onnx.ModelProto) -> list[str]:
    """The backbone's nodes and the head's output layers: everything before the decoding."""
    return [node.name for node in model.graph.node if node.name.startswith(MODEL_SCOPE)
            or (node.name.startswith(HEAD_SCOPE) and node.op_type in HEAD_OP_TYPES)]


def compact_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Short tensor names, no node names or value_info: the quantizer's long generated names
    (``/model/features/.../Conv_output_0_zero_point``) are a third of a small int8 file."""
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]
    return model


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, calibration_images: np.ndarray,
                  per_channel: bool = True, calibration_batch: int = 32, method: str = "minmax") -> Path:
    """int8 weights (per output channel) and uint8 activations, calibrated on ``calibration_images``.

    ``calibration_images`` is (N, 3, S, S) in the model's input range (a few hundred training
    faces). The fp32 graph first goes through onnxruntime's pre-processing (shape inference and
    graph optimisation), which the quantizer needs to see every tensor's shape.
    """
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    images = np.asarray(calibration_images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ConfigError(f"calibration images must be a non-empty (N, 3, S, S) array, got shape {images.shape}")
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method must be one of {sorted(CALIBRATION_METHODS)}, got {method!r}")
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, quiet_logger("onnxruntime.quantization"):
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "quantized.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        graph = onnx.load(str(prepared))
        input_name, nodes = graph.graph.input[0].name, trunk_nodes(graph)
        batches = [images[i:i + calibration_batch] for i in range(0, len(images), calibration_batch)]
        quantize_static(str(prepared), str(quantized), ImageBatches(input_name, batches),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        nodes_to_quantize=nodes or None, op_types_to_quantize=None if nodes else list(FALLBACK_OP_TYPES),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CALIBRATION_METHODS[method],
                        extra_options={"OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"]})
        onnx.save(compact_names(onnx.load(str(quantized))), str(int8_path))
    return int8_path
