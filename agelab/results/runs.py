"""Runs read from an MLflow store into a pandas DataFrame, one row per run.

Columns: ``RUN_FIELDS`` (run_id, experiment, run_name, status, start_time, the model/head/data tags,
seed, parent_run_id, cv_folds, eval_split), every latest metric under its own name (``test/mae``),
every param as ``params.<name>`` and every tag as ``tags.<name>``. Only reads the store.
"""

from __future__ import annotations

import pandas as pd

from agelab.errors import AgelabError, ConfigError
from agelab.store import store_path

# Experiments that hold bookkeeping runs (dataset preparation, stand-alone exports), not trainings.
BOOKKEEPING_EXPERIMENTS = ("agelab-prepare", "agelab-export")
PARENT_TAG = "mlflow.parentRunId"
CV_FOLDS_TAG = "cv.folds"      # on the parent run of agelab.cv
EVAL_SPLIT_TAG = "eval.split"  # on the runs of agelab.eval (re-tests of a trained checkpoint)
COMPLETE_TAG = "agelab.complete"  # a training run: "false" from its start until tested and exported, then "true"
RUN_FIELDS = ["run_id", "experiment", "run_name", "status", "start_time", "model", "head", "data", "compress",
              "seed", "parent_run_id", "cv_folds", "eval_split"]
PAGE = 1000


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def open_store(tracking_uri: str):
    """An MlflowClient on an existing store. A missing local store is an error, not a new empty
    one: MLflow would create it, and reading must leave no files behind."""
    from mlflow.tracking import MlflowClient

    path = store_path(tracking_uri)
    if path is not None and not path.exists():
        raise ConfigError(f"tracking_uri: no MLflow store at {path} (train a model first, or give "
                          "tracking_uri=sqlite:///<path>/mlflow.db)")
    return MlflowClient(tracking_uri=tracking_uri)


def resolve_experiments(client, names=None) -> list:
    """The experiments named (all of them must exist), or every experiment but the bookkeeping ones."""
    from mlflow.entities import ViewType

    found = {e.name: e for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)}
    if names is None:
        return [e for name, e in sorted(found.items()) if name not in BOOKKEEPING_EXPERIMENTS]
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in found]
    if unknown:
        there = ", ".join(sorted(found)) or "none"
        raise ConfigError(f"experiments: no experiment {', '.join(map(repr, unknown))} in "
                          f"{client.tracking_uri}; there are: {there}")
    return [found[name] for name in names]


def run_row(run, experiment_name: str) -> dict:
    tags, params = run.data.tags, run.data.params
    row = {
        "run_id": run.info.run_id, "experiment": experiment_name, "run_name": run.info.run_name,
        "status": run.info.status, "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
        "model": tags.get("model"), "head": tags.get("head"), "data": tags.get("data"),
        "compress": tags.get("compress"),  # prune | distill (compress=...), none for ordinary runs
        "seed": pd.to_numeric(params.get("seed"), errors="coerce"),
        "parent_run_id": tags.get(PARENT_TAG), "cv_folds": tags.get(CV_FOLDS_TAG),
        "eval_split": tags.get(EVAL_SPLIT_TAG),
    }
    row.update({name: value for name, value in run.data.metrics.items() if name not in RUN_FIELDS})
    row.update({f"params.{name}": value for name, value in params.items()})
    row.update({f"tags.{name}": value for name, value in tags.items()})
    return row


def load_runs(tracking_uri: str, experiments=None) -> pd.DataFrame:
    """Every active run of ``experiments`` (names; None: all but the bookkeeping experiments), in
    any status, one row per run (see the module docstring for the columns)."""
    from mlflow.entities import ViewType

    client = open_store(tracking_uri)
    chosen = resolve_experiments(client, experiments)
    names = {e.experiment_id: e.name for e in chosen}
    rows, token = [], None
    while names:
        page = client.search_runs(list(names), run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        rows += [run_row(run, names[run.info.experiment_id]) for run in page]
        token = page.token
        if not token:
            break
    runs = pd.DataFrame(rows, columns=None if rows else RUN_FIELDS)
    runs["seed"] = pd.to_numeric(runs["seed"]).astype("Int64")  # NaN where a run has no seed param
    runs.attrs.update(tracking_uri=tracking_uri, experiments=sorted(names.values()))
    return runs


def metric_names(runs: pd.DataFrame) -> list[str]:
    """The metric columns of a ``load_runs`` frame that one of its runs has (a frame cut down to some
    runs keeps the columns of the others)."""
    return [c for c in runs.columns if c not in RUN_FIELDS and not c.startswith(("params.", "tags."))
            and runs[c].notna().any()]


def exclusion_reasons(runs: pd.DataFrame, include_eval: bool = False) -> pd.Series:
    """Why each run is not a training run to compare ('' when it is): not FINISHED, incomplete (its
    final test or export did not end; the same training command completes it), a cross-validation
    parent (its folds are runs of their own), or an agelab.eval re-test."""
    reasons = pd.Series("", index=runs.index, dtype=object)
    if runs.empty:
        return reasons
    eval_run = runs["eval_split"].notna() & (not include_eval)
    reasons[eval_run] = "evaluation run"
    reasons[runs["cv_folds"].notna()] = "cross-validation parent"
    unfinished = runs["status"] != "FINISHED"
    reasons[unfinished] = runs.loc[unfinished, "status"].str.lower()
    if f"tags.{COMPLETE_TAG}" in runs:  # FINISHED by Lightning after its fit, stopped in its final test or export
        reasons[~unfinished & (runs[f"tags.{COMPLETE_TAG}"] == "false")] = "incomplete"
    return reasons


def select_runs(runs: pd.DataFrame, include_eval: bool = False) -> pd.DataFrame:
    """The FINISHED training runs of ``runs`` (see ``exclusion_reasons``)."""
    return runs[exclusion_reasons(runs, include_eval) == ""]


def describe_left_out(runs: pd.DataFrame, include_eval: bool = False) -> str:
    """E.g. '2 failed, 1 cross-validation parent' ('' when nothing was left out)."""
    counts = exclusion_reasons(runs, include_eval).value_counts()
    nouns = ("evaluation run", "cross-validation parent")  # the other reasons are statuses (failed, running)
    return ", ".join(f"{n} {reason}{'s' if n > 1 and reason in nouns else ''}" for reason, n in counts.items() if reason)


def require_runs(runs: pd.DataFrame, selected: pd.DataFrame) -> None:
    """An error that says what the store held when nothing is left to compare."""
    if not selected.empty:
        return
    where = ", ".join(repr(name) for name in runs.attrs.get("experiments", [])) or "no experiment"
    held = plural(len(runs), "run") + (f": {describe_left_out(runs)}" if len(runs) else "")
    raise AgelabError(f"no finished training runs to compare in {where} of {runs.attrs.get('tracking_uri')} "
                      f"({held})")
