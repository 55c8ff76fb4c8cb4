"""The size of the trained network in the run: ``model/params``, ``model/size_mb`` and
``model/mflops`` (floating-point operations for one face, in millions: a multiply-add counts 2).

Logged at the start of fitting, so every run has them (the export figures exist only for exported
runs) and run comparisons (``python -m agelab.report``) can put accuracy beside size.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from agelab.callbacks.mlflow_utils import logged_in_run
from agelab.models.summary import count_params, forward_flops

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
    params = count_params(module)
    buffers = sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return {"model/params": float(params), "model/size_mb": (params + buffers) * BYTES_FP32 / 1e6}


class ModelSize(pl.Callback):
    """Logs ``model/params``, ``model/size_mb`` (see ``model_size``) and ``model/mflops`` (see
    ``agelab.models.summary.forward_flops``) to every logger at the start of a new fit."""

    def on_fit_start(self, trainer, pl_module):
        if not trainer.is_global_zero or logged_in_run(trainer, "model/params"):
            return  # (the other processes' loggers write nothing; a resumed run has its sizes)
        sizes = model_size(network(pl_module))
        if isinstance(getattr(pl_module, "model", None), torch.nn.Module) and hasattr(pl_module, "head"):
            flops = forward_flops(pl_module.model, pl_module.head)
            if flops is not None:
                sizes["model/mflops"] = flops / 1e6
        for logger in trainer.loggers:
            logger.log_metrics(sizes, step=0)
