"""The size of the trained network in the run: ``model/params`` and ``model/size_mb``.

Logged at the start of fitting, so every run has them (the export figures exist only for exported
runs) and run comparisons (``python -m agelab.report``) can put accuracy beside size.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

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


class ModelSize(pl.Callback):
    """Logs ``model/params`` and ``model/size_mb`` (see ``model_size``) to every logger at fit start."""

    def on_fit_start(self, trainer, pl_module):
        sizes = model_size(network(pl_module))
        for logger in trainer.loggers:
            logger.log_metrics(sizes, step=0)
