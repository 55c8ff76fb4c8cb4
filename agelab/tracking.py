"""MLflow set-up: where runs go, which run a resumed training continues, what tags a run gets."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import MLFlowLogger

log = logging.getLogger(__name__)
RUN_ID_KEY = "mlflow_run_id"  # stored in every checkpoint so a resume finds its run
CONFIG_KEY = "agelab_config"  # the resolved config (YAML) the checkpoint was trained with


def git_commit(path: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_id_from_checkpoint(ckpt_path: str | Path | None) -> str | None:
    if not ckpt_path:
        return None
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    return checkpoint.get(RUN_ID_KEY)


def mlflow_logger(experiment_name: str, root_dir: str | Path = ".", run_name: str | None = None,
                  tags: dict | None = None, tracking_uri: str | None = None, resume_from: str | None = None) -> MLFlowLogger:
    """An MLFlowLogger on ``sqlite:///<root_dir>/mlflow.db`` with artifacts in ``<root_dir>/mlruns``.

    ``resume_from`` (a checkpoint path) continues the MLflow run that wrote that checkpoint.
    """
    root = Path(root_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
    run_id = run_id_from_checkpoint(resume_from)
    if run_id:
        log.info("resuming MLflow run %s", run_id)
    tags = {k: str(v) for k, v in (tags or {}).items()}
    tags.setdefault("git_commit", git_commit())
    return MLFlowLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri, tags=tags,
                        artifact_location=(root / "mlruns").as_uri(), run_id=run_id)


def flatten_config(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as {"a.b.c": value} for MLflow params."""
    flat: dict[str, str] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            flat[prefix] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat
