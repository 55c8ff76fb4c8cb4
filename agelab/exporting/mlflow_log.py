"""Exports in MLflow: files and figures in a run, the fp32 ONNX model in the model registry.

Everything goes through the given tracking URI (by default the project's sqlite store), never
the network: the registered model's pip requirements are given, not inferred, and its
signature is written from the known input and output shapes.
"""

from __future__ import annotations

import logging
import math
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

from agelab.exporting.pipeline import PREFIX, ExportResult, format_table
from agelab.tracking import experiment_id, git_commit

log = logging.getLogger(__name__)
ARTIFACT_DIR = "export"
EXPORT_EXPERIMENT = "agelab-export"
CHAMPION = "champion"
TEST_SET_TAG = "test_set"  # which faces a version's score is over


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
    # A figure an earlier export logged and this one did not measure (latency_runs=0) is NaN now: the
    # run's latest values all describe the latest files.
    stale = {k: math.nan for k in client.get_run(run_id).data.metrics
             if k.startswith(PREFIX) and k not in result.metrics}
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in {**result.metrics, **stale}.items()])
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


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, None when it is not set."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def register_onnx(tracking_uri: str, run_id: str, result: ExportResult, registered_model_name: str,
                  input_size: int, alias: str = CHAMPION) -> dict:
    """Log model.onnx as an MLflow model of the run and register it as a new version.

    The version gets its fp32 test score (``test_mae`` or ``test_accuracy``) and which faces it is
    over (``test_set``, see pipeline.test_set_id) as tags. ``alias`` moves to it when no version
    scored on the same faces by the same score does better, and the alias's current holder, if any,
    is one of those: a score over other faces (another dataset, split or check size) or another
    score (a group head's accuracy against an MAE) is not compared, and the alias stays, with a
    warning (a holder registered before versions carried ``test_set`` gives way). Returns the version
    number, whether it holds the alias, and the score.
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
        client.set_model_version_tag(registered_model_name, version, TEST_SET_TAG, result.test_set)

        def comparable(v) -> bool:
            return result.score_name in v.tags and v.tags.get(TEST_SET_TAG, "") == result.test_set

        others = [v for v in client.search_model_versions(f"name='{registered_model_name}'") if str(v.version) != version]
        holding = alias_version(client, registered_model_name, alias)
        holder = next((v for v in others if str(v.version) == holding), None)
        champion = all(result.better(score, float(v.tags[result.score_name])) for v in others if comparable(v))
        if champion and holder is not None and TEST_SET_TAG not in holder.tags:
            log.warning("alias %s moves from %s version %s, which carries no %s tag (registered before versions "
                        "did), so its score cannot be compared", alias, registered_model_name, holder.version,
                        TEST_SET_TAG)
        elif champion and holder is not None and not comparable(holder):
            champion = False
            log.warning("alias %s stays on %s version %s: it was scored on other faces or by another score "
                        "(%s %s) than version %s (%s %s); move it by hand if this one should serve",
                        alias, registered_model_name, holder.version, holder.tags.get(TEST_SET_TAG, "?"),
                        next((k for k in ("test_mae", "test_accuracy") if k in holder.tags), "no score"),
                        version, result.test_set, result.score_name)
        if champion:
            client.set_registered_model_alias(registered_model_name, alias, version)
    return {"version": version, "champion": champion, "score": score, "model_uri": info.model_uri}


def log_export(result: ExportResult, tracking_uri: str, run_id: str, input_size: int,
               registered_model_name: str | None = None, alias: str = CHAMPION, tags: dict | None = None) -> dict:
    """Files, figures, the photo model (agelab.inference.photo_model) and, with a name, the registry
    entry; returns the registry answer or {}."""
    from agelab.inference.photo_model import PHOTO_MODEL, log_photo_model

    client = MlflowClient(tracking_uri)
    log_to_run(client, run_id, result, tags)
    with fluent_run(tracking_uri, run_id):  # whole photos in, ages out (mlflow models serve -m runs:/<id>/photo_model)
        log_photo_model(result.files["int8"])
    client.set_tag(run_id, "export.photo_model", f"runs:/{run_id}/{PHOTO_MODEL}")
    if not registered_model_name:
        return {}
    registered = register_onnx(tracking_uri, run_id, result, registered_model_name, input_size, alias)
    client.set_tag(run_id, "export.registered_version", registered["version"])
    log.info("registered %s version %s%s", registered_model_name, registered["version"],
             f" ({alias})" if registered["champion"] else "")
    return registered
