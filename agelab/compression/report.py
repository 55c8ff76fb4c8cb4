"""The compressed model against the uncompressed one, in the compressed model's MLflow run.

After the final test, ``CompressionReport`` evaluates the base checkpoint (the model before pruning,
or the distillation teacher) on the same test faces, each model through its own eval transform, and
logs side by side (metrics under ``compress/``):

- ``base_test_<metric>`` and ``test_<metric>_delta`` (compressed minus base) for MAE, CS(5) or
  group accuracy;
- parameters (``params``, ``nonzero_params``, ``sparsity``), fp32 size (``size_mb``, parameters and
  BatchNorm statistics, as ``model/size_mb``), the size of
  the gzip-compressed weights (``size_mb_gzip``: what unstructured zeros save on disk), and the
  single-face CPU latency on 1 thread (``latency_ms``), each also as ``base_*``;
- tags ``compress.base_ckpt`` and ``compress.base_run_id`` (the base's own MLflow run, when its
  checkpoint names one), plus a small ``compress/report.txt`` table.
"""

from __future__ import annotations

import gzip
import io
import logging
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from agelab.callbacks.mlflow_utils import best_checkpoint_path, mlflow_run
from agelab.callbacks.model_size import model_size, network
from agelab.errors import ConfigError
from agelab.metrics import AgeMetrics

log = logging.getLogger(__name__)
PREFIX = "compress/"
COMPARED = ("mae", "cs5", "acc")  # the test metrics set side by side, where the task has them


def weight_figures(module: torch.nn.Module) -> dict[str, float]:
    """Parameter counts, zeros and sizes of the model + head: ``params`` and ``size_mb`` as every run
    logs them (``model/params``, ``model/size_mb``), plus the zeros and the gzip-compressed size."""
    net = network(module)
    sizes = model_size(net)
    total = sizes["model/params"]
    nonzero = sum(int(torch.count_nonzero(p)) for p in net.parameters())
    raw = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, raw)
    return {"params": total, "nonzero_params": float(nonzero), "sparsity": 1.0 - nonzero / max(total, 1),
            "size_mb": sizes["model/size_mb"], "size_mb_gzip": len(gzip.compress(raw.getvalue(), 6)) / 1e6}


def test_metrics(module, dataset, batch_size: int = 64) -> dict[str, float]:
    """``COMPARED`` metrics of ``module`` (CPU, eval mode) on ``dataset`` (EvalFaces)."""
    metrics = AgeMetrics()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    module = module.cpu().eval()
    with torch.no_grad():
        for batch in loader:
            metrics.update(module.head.decode(module.logits(batch["image"].float())), batch)
    values = metrics.compute()
    return {name: float(values[name]) for name in COMPARED if name in values}


class CompressionReport(pl.Callback):
    def __init__(self, base_ckpt: str | None, method: str, base_key: str = "weights_from", latency_runs: int = 30,
                 latency_warmup: int = 5):
        if not base_ckpt:
            raise ConfigError(f"{base_key} is required with compress={method}: pass {base_key}=<checkpoint of the "
                              "uncompressed model>")
        self.base_ckpt, self.method = str(base_ckpt), method
        self.latency_runs, self.latency_warmup = latency_runs, latency_warmup
        self.figures: dict[str, float] = {}

    def on_test_end(self, trainer, pl_module):
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        from agelab.checkpoint import eval_transform, load_module, read_checkpoint
        from agelab.exporting.latency import torch_latency_ms
        from agelab.exporting.pipeline import EvalFaces
        from agelab.exporting.wrapper import ExportableAgeModel
        from agelab.tracking import RUN_ID_KEY

        base_checkpoint = read_checkpoint(self.base_ckpt)
        base, base_cfg = load_module(self.base_ckpt, base_checkpoint)
        best = best_checkpoint_path(trainer)
        compressed = load_module(best)[0] if best else pl_module
        datamodule = trainer.datamodule
        datamodule.setup("test")
        faces = datamodule.datasets["test"]
        sides = {"": (compressed, datamodule.eval_transform), "base_": (base, eval_transform(base_cfg))}
        figures = {}
        for prefix, (module, transform) in sides.items():
            scores = test_metrics(module, EvalFaces(faces, transform), datamodule.eval_batch_size)
            figures.update({f"{prefix}test_{k}": v for k, v in scores.items()})
            figures.update({f"{prefix}{k}": v for k, v in weight_figures(module).items()})
            if self.latency_runs > 0:
                size = int(module.model.input_size)
                figures[f"{prefix}latency_ms"] = torch_latency_ms(ExportableAgeModel.from_module(module), size,
                                                                  runs=self.latency_runs,
                                                                  warmup=self.latency_warmup)
        for name in COMPARED:
            if f"test_{name}" in figures and f"base_test_{name}" in figures:
                figures[f"test_{name}_delta"] = figures[f"test_{name}"] - figures[f"base_test_{name}"]
        self.figures = figures
        log.info("%s against the uncompressed model:\n%s", self.method, self.table())
        client, run_id = mlflow_run(trainer)
        if client is None:
            return
        from mlflow.entities import Metric

        now = int(1000 * time.time())
        client.log_batch(run_id, metrics=[Metric(PREFIX + k, float(v), now, 0) for k, v in figures.items()
                                          if np.isfinite(v)])
        client.set_tag(run_id, "compress.method", self.method)
        client.set_tag(run_id, "compress.base_ckpt", str(Path(self.base_ckpt).resolve()))  # as eval.ckpt
        base_run = base_checkpoint.get(RUN_ID_KEY)
        if base_run:
            client.set_tag(run_id, "compress.base_run_id", base_run)
        client.log_text(run_id, self.table() + "\n", "compress/report.txt")

    def table(self) -> str:
        """Base and compressed side by side, one figure a line."""
        names = sorted({k[len("base_"):] for k in self.figures if k.startswith("base_")})
        lines = [f"{'':<16}{'uncompressed':>14}{self.method:>14}"]
        for name in names:
            base, compressed = self.figures["base_" + name], self.figures.get(name, float("nan"))
            lines.append(f"{name:<16}{_figure(base):>14}{_figure(compressed):>14}")
        return "\n".join(lines)


def _figure(value: float) -> str:
    """Counts as counts (356,465), everything else to 4 significant digits."""
    if np.isfinite(value) and float(value).is_integer() and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"
