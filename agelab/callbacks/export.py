"""Export at the end of training: ONNX fp32 / int8 and TorchScript of the best checkpoint, logged
to the training run (files under ``export/``, figures as ``export/*`` metrics) and registered.

Runs in ``on_test_end``: agelab.train tests the best checkpoint after fitting, so that is the
model the test metrics describe. Enable with ``callbacks=export``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch

from agelab.callbacks.mlflow_utils import best_checkpoint_path, mlflow_run
from agelab.errors import ConfigError

log = logging.getLogger(__name__)


class ExportCallback(pl.Callback):
    def __init__(self, out_dir: str, calibration_size: int = 256, check_size: int | None = None,
                 latency_runs: int = 50, latency_warmup: int = 10, registered_model_name: str | None = "agelab-age",
                 alias: str = "champion"):
        if calibration_size < 1 or latency_runs < 0 or latency_warmup < 0:
            raise ConfigError("callbacks.export: calibration_size must be >= 1, latency_runs and latency_warmup >= 0")
        self.out_dir = Path(out_dir)
        self.calibration_size, self.check_size = calibration_size, check_size
        self.latency_runs, self.latency_warmup = latency_runs, latency_warmup
        self.registered_model_name, self.alias = registered_model_name, alias
        self.result = None  # the last ExportResult
        self.registered: dict = {}

    @staticmethod
    def trained_module(trainer, pl_module) -> tuple[torch.nn.Module, object]:
        """(the best checkpoint rebuilt on the CPU, as ``python -m agelab.export`` would load it, and
        its config), or a CPU copy of the module in hand and None without a checkpoint with a config."""
        from agelab.checkpoint import load_module

        best = best_checkpoint_path(trainer)
        if best:
            try:
                return load_module(best)
            except ConfigError as exc:
                log.warning("exporting the module in memory: %s", exc)
        model = getattr(pl_module.model, "_orig_mod", pl_module.model)  # unwrap torch.compile
        model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format)
        return torch.nn.ModuleDict({"model": model, "head": copy.deepcopy(pl_module.head).cpu()}).eval(), None

    def on_test_end(self, trainer, pl_module):
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        from agelab.exporting.pipeline import (calibration_images, eval_batches, export_model, format_table, onnx_metadata,
                                              test_set_id)

        module, cfg = self.trained_module(trainer, pl_module)
        datamodule = trainer.datamodule
        input_size = int(module.model.input_size)
        calibration = calibration_images(datamodule, self.calibration_size)
        self.result = export_model(module, self.out_dir, input_size, calibration,
                                   eval_batches(datamodule, datamodule.eval_batch_size), self.check_size,
                                   self.latency_runs, self.latency_warmup,
                                   onnx_metadata(cfg) if cfg is not None else None)
        self.result.test_set = test_set_id(cfg, self.result.metrics.get("export/check_faces"))
        log.info("export:\n%s", format_table(self.result))
        client, run_id = mlflow_run(trainer)
        if client is not None:
            from agelab.exporting.mlflow_log import log_export

            self.registered = log_export(self.result, client.tracking_uri, run_id, input_size,
                                         self.registered_model_name, self.alias,
                                         tags={"export.out_dir": self.out_dir.resolve()})
