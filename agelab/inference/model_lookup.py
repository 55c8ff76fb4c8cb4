"""The model predict uses when given no file: a registered version, a run's artifact, or the default.

``model_uri=<name>@<alias>`` or ``<name>@<version>`` (``models:/`` in front or not) picks a version of
the MLflow model registry, ``model_uri=runs:/<run id>/<path>`` an artifact of a run (a ``.ckpt``, a
``.onnx``, or an MLflow ONNX model folder). With nothing named: the registry's ``agelab-age@champion`` (what agelab.export registers),
else the best checkpoint of the newest finished training run. The files are downloaded from the
tracking store into ``download_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agelab.errors import ConfigError

DEFAULT_MODEL = "agelab-age@champion"
TRAINING_EXPERIMENT = "agelab"  # conf/logger/mlflow.yaml's experiment_name
RUNS, MODELS = "runs:/", "models:/"
HOW_TO_GET_ONE = ("train one (python -m agelab.train) and export it (python -m agelab.export ckpt=<its checkpoint>), "
                  "or give ckpt=<checkpoint> or onnx=<model.onnx>")


@dataclass(frozen=True)
class FoundModel:
    ckpt: Path | None
    onnx: Path | None
    description: str  # which version or run it is, for the user


def run_artifact_path(uri: str) -> tuple[str, str]:
    """(run id, artifact path) of ``runs:/<run id>/<path>``; a path leaving the run's artifacts is refused."""
    run_id, _, path = uri[len(RUNS):].partition("/")
    parts = PurePosixPath(path).parts
    if not run_id or not path or path.startswith("/") or ".." in parts:
        raise ConfigError(f"{uri}: not a run artifact (expected runs:/<run id>/<path inside the run>)")
    return run_id, path


def find_model(model: str | None, tracking_uri: str, download_dir: Path) -> FoundModel:
    """The model ``model`` (a model URI) names (None: the default, see the module docstring), downloaded."""
    from agelab.store import store_path

    store = store_path(tracking_uri)
    if store is not None and not store.exists():  # (MLflow would create an empty store)
        raise ConfigError(f"model_uri={model}: no MLflow store at {store}" if model else
                          f"no model given and no MLflow store at {store}: {HOW_TO_GET_ONE}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if model is None:
        found = registered(client, DEFAULT_MODEL, download_dir, required=False) or newest_training(client, download_dir)
        if found is None:
            raise ConfigError(f"no model given, no {DEFAULT_MODEL} and no finished training in {tracking_uri}: "
                              f"{HOW_TO_GET_ONE}")
        return found
    if model.startswith(RUNS):
        run_artifact_path(model)  # checked before anything is downloaded
        return download(client, model, download_dir, model)
    return registered(client, model.removeprefix(MODELS), download_dir, required=True)


def registered(client, spec: str, download_dir: Path, required: bool) -> FoundModel | None:
    """``<name>@<alias>``, ``<name>@<version>`` or ``<name>/<version>``; None when it is not there and not
    ``required``."""
    from mlflow.exceptions import MlflowException

    name, _, ref = spec.rpartition("/" if "/" in spec else "@")
    if not name or not ref:
        raise ConfigError(f"model_uri={spec}: expected <registered name>@<alias or version> or runs:/<run id>/<path>")
    try:
        version = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        if required:
            raise ConfigError(f"model_uri={spec}: not in the registry of {client.tracking_uri} "
                              f"({str(exc).splitlines()[0]})") from exc
        return None
    alias = "" if ref.isdigit() else f" ({ref})"
    return download(client, f"models:/{name}/{version.version}", download_dir,
                    f"{name} version {version.version}{alias}, from run {version.run_id}")


def newest_training(client, download_dir: Path) -> FoundModel | None:
    """The best checkpoint (under ``checkpoints/``) of the newest finished training run, or None."""
    experiment = client.get_experiment_by_name(TRAINING_EXPERIMENT)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=100)
    for run in runs:
        checkpoints = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints") if a.path.endswith(".ckpt")]
        if checkpoints:
            uri = f"{RUNS}{run.info.run_id}/{checkpoints[0]}"
            return download(client, uri, download_dir,
                            f"{checkpoints[0]} of the newest finished training, run {run.info.run_id} "
                            f"({run.info.run_name})")
    return None


def download_artifact(uri: str, tracking_uri: str, download_dir: str | Path, named: str | None = None) -> Path:
    """``uri`` (``runs:/`` or ``models:/``) downloaded into ``download_dir``; a one-line ConfigError, naming
    it as ``named`` (default: the URI), when the store cannot give it."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    Path(download_dir).mkdir(parents=True, exist_ok=True)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(download_dir),
                                                        tracking_uri=tracking_uri))
    except (MlflowException, OSError) as exc:
        raise ConfigError(f"{named or uri}: cannot download it from {tracking_uri} ({str(exc).splitlines()[0]})") from exc


def download(client, uri: str, download_dir: Path, description: str) -> FoundModel:
    """``uri`` downloaded, as a checkpoint or an ONNX model (a folder holding one: an MLflow model)."""
    local = download_artifact(uri, client.tracking_uri, download_dir)
    if local.is_dir():
        local = next(iter(sorted(local.rglob("*.onnx"))), local)
    if local.suffix == ".onnx":
        return FoundModel(None, local, description)
    if local.suffix == ".ckpt":
        return FoundModel(local, None, description)
    raise ConfigError(f"{uri}: neither a checkpoint (.ckpt) nor an ONNX model")
