"""The size of the trained network in the run: ``model/params``, ``model/size_mb`` and
``model/mflops`` (floating-point operations for one face, in millions: a multiply-add counts 2).

Logged at the start of fitting, so every run has them (the export figures exist only for exported
runs) and run comparisons (``python -m agelab.report``) can put accuracy beside size.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

BYTES_FP32 = 4


def network(pl_module: torch.nn.Module) -> torch.nn.Module:
    """The deployed network: the module's ``model`` and ``head`` (not a teacher or loss state the
    LightningModule may also hold), or the whole module when it has no such parts."""
    parts = [getattr(pl_module, name, None) for name in ("model", "head")]
    parts = [part for part in parts if isinstance(part, torch.nn.Module)]
    return torch.nn.ModuleList(parts) if parts else pl_module


def model_size(module: torch.nn.Module) -> dict[str, float]:
    """Parameter count, and the fp32 weights in MB (10^6 bytes, as the export sizes): parameters
    plus floating-point buffers such as BatchNorm statistics, i.e. what a saved fp32 model holds."""
    params = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return {"model/params": float(params), "model/size_mb": (params + buffers) * BYTES_FP32 / 1e6}


@torch.no_grad()
def mflops_per_face(model: torch.nn.Module, head: torch.nn.Module) -> float | None:
    """Millions of FLOPs of model + head on one blank face of the model's input size (eval mode),
    or None when the model does not say its input size."""
    from agelab.module import example_input

    model = getattr(model, "_orig_mod", model)  # count the plain network, not a torch.compile wrapper
    face = example_input(model)
    if face is None:
        return None
    modes = [(m, m.training) for m in (model, head)]
    parameter = next(model.parameters())
    try:
        model.eval(), head.eval()
        with FlopCounterMode(display=False) as counter:
            head(model(face.to(parameter.device, parameter.dtype)))
    finally:
        for module, training in modes:
            module.train(training)
    return counter.get_total_flops() / 1e6


class ModelSize(pl.Callback):
    """Logs ``model/params``, ``model/size_mb`` (see ``model_size``) and ``model/mflops`` (see
    ``mflops_per_face``) to every logger at fit start."""

    def on_fit_start(self, trainer, pl_module):
        sizes = model_size(network(pl_module))
        if isinstance(getattr(pl_module, "model", None), torch.nn.Module) and hasattr(pl_module, "head"):
            mflops = mflops_per_face(pl_module.model, pl_module.head)
            if mflops is not None:
                sizes["model/mflops"] = mflops
        for logger in trainer.loggers:
            logger.log_metrics(sizes, step=0)
