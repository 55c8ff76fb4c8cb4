"""Deployable forms of a trained model: ONNX fp32, ONNX int8 (static, QDQ) and TorchScript,
with the checks that they predict what PyTorch predicts, CPU latency and file sizes.

MLflow logging lives in agelab.exporting.mlflow_log (imported on demand: it pulls in mlflow).
"""

from agelab.exporting.checks import agreement
from agelab.exporting.formats import export_onnx, export_torchscript, file_mb
from agelab.exporting.latency import median_ms, onnx_latency_ms, torch_latency_ms
from agelab.exporting.pipeline import (ExportResult, calibration_images, export_checkpoint, export_model,
                                       format_table, eval_batches)
from agelab.exporting.quantize import quantize_int8
from agelab.exporting.runners import ort_runner, ort_session, torch_runner, torchscript_runner
from agelab.exporting.wrapper import ExportableAgeModel

__all__ = [
    "ExportableAgeModel", "export_onnx", "export_torchscript", "quantize_int8", "agreement", "file_mb",
    "median_ms", "torch_latency_ms", "onnx_latency_ms", "ort_runner", "ort_session", "torch_runner",
    "torchscript_runner", "ExportResult", "export_model", "export_checkpoint", "calibration_images",
    "eval_batches", "format_table",
]
