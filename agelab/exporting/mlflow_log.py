"""Exports in MLflow: files and figures in a run, the fp32 ONNX model in the model registry.

Everything goes through the given tracking URI (by default the project's sqlite store), never
the network: the registered model's pip requirements are given, not inferred, and its
signature is written from the known input and output shapes.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from agelab.exporting.pipeline import ExportResult, format_table
from agelab.tracking import experiment_id, git_commit

log = logging.getLogger(__name__)
ARTIFACT_DIR = "export"
EXPORT_EXPERIMENT = "agelab-export"
CHAMPION = "champion"


def new_export_run(client: MlflowClient, experiment_name: str = EXPORT_EXPERIMENT, root_dir: str | Path = ".",
                   run_name: str | None = None, tags: dict | None = None) -> str:
    """A fresh run in ``experiment_name`` (created with artifacts under ``<root_dir>/mlruns``)."""
    run_tags = {"git_commit": git_commit(), **{k: str(v) for k, v in (tags or {}).items()}}
    return client.create_run(experiment_id(client, experiment_name, root_dir), run_name=run_name, tags=run_tags).info.run_id


def existing_run(client: MlflowClient, run_id: str | None) -> str | None:
    """``run_id`` if the store has it (a checkpoint may come from another machine's store)."""
    if not run_id:
        return None
    try:
        client.get_run(run_id)
        return run_id
    except MlflowException:
        log.warning("run %s is not in %s; logging the export to a new run", run_id, client.tracking_uri)
        return None


def log_to_run(client: MlflowClient, run_id: str, result: ExportResult, tags: dict | None = None) -> None:
    """The three files and a report under ``export/``, every figure as a metric, ``tags`` as tags
    (not params: a training run's params are write-once, and a run may be exported again)."""
    for path in result.files.values():
        client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    client.log_text(run_id, format_table(result) + "\n", f"{ARTIFACT_DIR}/report.txt")
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in result.metrics.items()])
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value))


@contextmanager
def fluent_run(tracking_uri: str, run_id: str):
    """``mlflow.start_run`` on an existing run through ``tracking_uri``, leaving the global
    tracking URI and the run's status as they were (a training run may still be running)."""
    before_uri = mlflow.get_tracking_uri()
    client = MlflowClient(tracking_uri)
    status = client.get_run(run_id).info.status
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            yield
    finally:
        mlflow.set_tracking_uri(before_uri)
        if status != client.get_run(run_id).info.status:
            client.update_run(run_id, status=status)


def onnx_signature(result: ExportResult, input_size: int) -> ModelSignature:
    image = TensorSpec(np.dtype(np.float32), (-1, 3, input_size, input_size), "images")
    outputs = [TensorSpec(np.dtype(np.float32), (-1, -1) if name == "probs" else (-1,), name) for name in result.outputs]
    return ModelSignature(inputs=Schema([image]), outputs=Schema(outputs))


def register_onnx(tracking_uri: str, run_id: str, result: ExportResult, registered_model_name: str,
                  input_size: int, alias: str = CHAMPION) -> dict:
    """Log model.onnx as an MLflow model of the run and register it as a new version.

    The version gets its fp32 test score as a tag (``test_mae`` or ``test_accuracy``); ``alias``
    moves to it when no other version of the model scores better. Returns the version number,
    whether it holds the alias, and the score.
    """
    with fluent_run(tracking_uri, run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(result.files["fp32"])), name="onnx_model", registered_model_name=registered_model_name,
            signature=onnx_signature(result, input_size), save_as_external_data=False,
            pip_requirements=[f"onnxruntime=={onnxruntime.__version__}", f"onnx=={onnx.__version__}", "numpy"])
    client = MlflowClient(tracking_uri)
    version = str(info.registered_model_version)
    score, champion = result.score, False
    if score is not None and np.isfinite(score):
        tag = f"{score:.6f}"
        score = float(tag)  # compare as stored, so a re-export of the same model ties
        client.set_model_version_tag(registered_model_name, version, result.score_name, tag)
        others = [float(v.tags[result.score_name]) for v in
                  client.search_model_versions(f"name='{registered_model_name}'")
                  if str(v.version) != version and result.score_name in v.tags]
        champion = all(result.better(score, other) for other in others)
        if champion:
            client.set_registered_model_alias(registered_model_name, alias, version)
    return {"version": version, "champion": champion, "score": score, "model_uri": info.model_uri}


def log_export(result: ExportResult, tracking_uri: str, run_id: str, input_size: int,
               registered_model_name: str | None = None, alias: str = CHAMPION, tags: dict | None = None) -> dict:
    """Files, figures and (with a name) the registry entry; returns the registry answer or {}."""
    client = MlflowClient(tracking_uri)
    log_to_run(client, run_id, result, tags)
    if not registered_model_name:
        return {}
    registered = register_onnx(tracking_uri, run_id, result, registered_model_name, input_size, alias)
    client.set_tag(run_id, "export.registered_version", registered["version"])
    log.info("registered %s version %s%s", registered_model_name, registered["version"],
             f" ({alias})" if registered["champion"] else "")
    return registered
