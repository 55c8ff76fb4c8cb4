"""Writing the exported files: ONNX fp32 and TorchScript."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.onnx import symbolic_helper

from agelab.exporting.wrapper import INPUT_NAME, ExportableAgeModel, example_input

log = logging.getLogger(__name__)
OPSET = 17


def _wrapped(module: nn.Module) -> ExportableAgeModel:
    wrapper = module if isinstance(module, ExportableAgeModel) else ExportableAgeModel.from_module(module)
    return wrapper.eval()


@symbolic_helper.parse_args("v", "i", "none")
def _cumprod_symbolic(g, x, dim, dtype):
    """aten::cumprod (CORN's decoding), which the exporter lacks: a chain of Muls over the slices
    along ``dim``, exact for any sign (the length along ``dim`` is known at export time)."""
    rank, size = symbolic_helper._get_tensor_rank(x), None
    if rank is not None:
        dim = dim + rank if dim < 0 else dim
        size = symbolic_helper._get_tensor_dim_size(x, dim)
    if size is None:
        return symbolic_helper._unimplemented("cumprod", "the length along dim must be known at export time", x)
    axis = g.op("Constant", value_t=torch.tensor([dim]))
    parts = []
    for k in range(size):
        piece = g.op("Slice", x, g.op("Constant", value_t=torch.tensor([k])),
                     g.op("Constant", value_t=torch.tensor([k + 1])), axis)
        parts.append(piece if k == 0 else g.op("Mul", parts[-1], piece))
    return g.op("Concat", *parts, axis_i=dim)


@contextmanager
def extra_symbolics(opset: int):
    torch.onnx.register_custom_op_symbolic("aten::cumprod", _cumprod_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::cumprod", opset)


def export_onnx(module: nn.Module, path: str | Path, input_size: int, opset: int = OPSET) -> Path:
    """fp32 ONNX with a dynamic batch axis, one self-contained file.

    The TorchScript-based exporter (``dynamo=False``) is used on purpose: the torch.export-based
    one needs onnxscript, which agelab does not depend on, and this one already folds every
    BatchNorm into the preceding Conv in eval mode.
    """
    wrapper, path = _wrapped(module), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *wrapper.output_names)}
    with warnings.catch_warnings(), torch.no_grad(), extra_symbolics(opset):
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation notice
        torch.onnx.export(wrapper, (example_input(input_size),), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=list(wrapper.output_names), dynamic_axes=dynamic,
                          do_constant_folding=True)
    onnx.checker.check_model(str(path))
    return path


def export_torchscript(module: nn.Module, path: str | Path, input_size: int) -> Path:
    """A traced TorchScript module (``torch.jit.load`` runs it without agelab installed)."""
    wrapper, path = _wrapped(module), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        traced = torch.jit.trace(wrapper, example_input(input_size), check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def file_mb(path: str | Path) -> float:
    return Path(path).stat().st_size / 1e6


def write_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    """Set string entries of the ONNX file's ``metadata_props`` (onnxruntime shows them as the
    session's custom metadata map); other entries stay."""
    model = onnx.load(str(path))
    kept = {p.key: p.value for p in model.metadata_props if p.key not in metadata}
    del model.metadata_props[:]
    for key, value in {**kept, **metadata}.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, str(path))
