"""Export a trained checkpoint: ``python -m agelab.export ckpt=<path> [key=value ...]``.

ONNX fp32, ONNX int8 and TorchScript files, their agreement with PyTorch on the test split,
single-face CPU latency and sizes; logged to the checkpoint's MLflow run (or a new run) and the
fp32 ONNX model registered in the MLflow model registry. See conf/export.yaml.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from agelab.cli import run_main, run_or_exit
from agelab.config import CONF_DIR
from agelab.errors import ConfigError, require_int, writable_folder
from agelab.exporting.pipeline import ExportResult, export_checkpoint, format_table

log = logging.getLogger(__name__)


def log_to_mlflow(cfg: DictConfig, result: ExportResult, train_cfg: DictConfig) -> dict:
    """Into the checkpoint's own run when the store has it, else a new run; returns the registry answer."""
    from mlflow.tracking import MlflowClient

    from agelab.checkpoint import read_checkpoint
    from agelab.exporting.mlflow_log import existing_run, log_export, new_export_run
    from agelab.store import store_uri
    from agelab.tracking import RUN_ID_KEY

    Path(cfg.mlflow.root_dir).mkdir(parents=True, exist_ok=True)
    uri = store_uri(cfg.mlflow.root_dir, cfg.mlflow.tracking_uri)
    client = MlflowClient(uri)
    run_id = existing_run(client, read_checkpoint(cfg.ckpt).get(RUN_ID_KEY))
    own_run = run_id is None  # a run of its own is ended here; the training run keeps its status
    if own_run:
        run_id = new_export_run(client, cfg.mlflow.experiment_name, cfg.mlflow.root_dir,
                                run_name=f"export-{Path(cfg.ckpt).stem}",
                                tags={"model": train_cfg.model.get("_target_", "?"),
                                      "head": train_cfg.head.get("_target_", "?")})
    try:
        registered = log_export(result, uri, run_id, int(train_cfg.model.input_size), cfg.registered_model_name,
                                cfg.alias, tags={"export.ckpt": Path(cfg.ckpt).resolve(),
                                                 "export.out_dir": result.out_dir.resolve()})
    except BaseException:
        if own_run:
            client.set_terminated(run_id, "FAILED")
        raise
    if own_run:
        client.set_terminated(run_id)
    print(f"MLflow run {run_id} ({uri})")
    if registered:
        print(f"registered {cfg.registered_model_name} version {registered['version']}"
              + (f" -> alias {cfg.alias}" if registered["champion"] else ""))
    return registered


def export(cfg: DictConfig) -> ExportResult:
    if not cfg.get("ckpt"):
        raise ConfigError("ckpt: give the checkpoint to export, e.g. ckpt=logs/train/runs/<time>/checkpoints/last.ckpt")
    for key, low in {"calibration_size": 1, "latency_runs": 0, "latency_warmup": 0}.items():
        require_int(key, cfg[key], low)
    require_int("check_size", cfg.check_size, 1, allow_none=True)
    writable_folder(cfg.out_dir)  # before the model is loaded and converted, not after
    result, train_cfg = export_checkpoint(cfg.ckpt, cfg.out_dir, calibration_size=cfg.calibration_size,
                                          check_limit=cfg.check_size, latency_runs=cfg.latency_runs,
                                          latency_warmup=cfg.latency_warmup)
    print(format_table(result))
    if cfg.mlflow.enabled:
        log_to_mlflow(cfg, result, train_cfg)
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    run_or_exit(export, cfg)


if __name__ == "__main__":
    run_main(main, "export")
