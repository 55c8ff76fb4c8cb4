"""python -m agelab.report and notebooks/compare_runs.ipynb on a store made by real tiny trainings:
grouping, mean/std against the values MLflow holds, markdown/CSV round trips, runs left out,
model-size and export columns, errors, a read-only store, and the notebook run headless."""

from __future__ import annotations

import io
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from agelab.errors import AgelabError, ConfigError
from agelab.report import build_report, report
from agelab.results import metric_history, to_csv, to_markdown
from agelab.results.table import MISSING, PLUS_MINUS, SIZE_COLUMNS

from conftest import TINY, compose_config

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "compare_runs.ipynb"
# Smaller than TINY: 32 faces to fit, 2 epochs (a learning curve), only the CS-curve figure (its
# test/cs_curve metric feeds the notebook).
FAST = [o for o in TINY if not o.startswith(("data.source.", "data.batch_size", "trainer.max_epochs"))] + [
    "data.source.train_size=32", "data.source.val_size=16", "data.source.test_size=32", "data.source.image_size=64",
    "data.batch_size=16", "trainer.max_epochs=2", "~callbacks.worst_predictions_figure",
    "~callbacks.mae_breakdown_figure", "~callbacks.confusion_matrix_figure", "~callbacks.learning_curves_figure"]
EXPORT = ["callbacks=export", "callbacks.export.calibration_size=8", "callbacks.export.latency_runs=3",
          "callbacks.export.latency_warmup=1", "callbacks.export.registered_model_name=null"]
SMLF = ("compare", "smlf_small", "dex", "synth")
CNN = ("compare", "simple_cnn", "regression", "synth")
FOLDS = ("cv", "levi_hassner", "ce", "synth_kfold")


def train_into(root: Path, name: str, experiment: str, *overrides: str) -> str:
    """A real training into the store under ``root``; returns its run id."""
    from agelab.checkpoint import read_checkpoint
    from agelab.tracking import RUN_ID_KEY
    from agelab.training import train

    cfg = compose_config(root, [*FAST, f"paths.output_dir={root / 'out' / name}",
                                f"logger.experiment_name={experiment}", *overrides])
    return read_checkpoint(train(cfg)["best_model_path"])[RUN_ID_KEY]


def logged_run(client, experiment: str, tags: dict, metrics: dict, status: str = "FINISHED") -> str:
    """A run written straight into the store (the kinds of run the report must leave out, and the
    fold runs of a cross-validation)."""
    experiment_id = (client.get_experiment_by_name(experiment) or SimpleNamespace(experiment_id=None)).experiment_id
    experiment_id = experiment_id or client.create_experiment(experiment)
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    if status != "RUNNING":
        client.set_terminated(run_id, status=status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # One PyTorch thread: on cores shared with other jobs a thread pool makes these tiny steps ~4x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {"smlf": [train_into(root, f"smlf{seed}", "compare", f"seed={seed}") for seed in (1, 2)],
                "cnn": [train_into(root, "cnn", "compare", "model=simple_cnn", "head=regression", "seed=1", *EXPORT)]}
    finally:
        torch.set_num_threads(threads)
    client = MlflowClient(uri)
    tags = dict(zip(("model", "head", "data"), SMLF[1:]))
    fold_tags = dict(zip(("model", "head", "data"), FOLDS[1:]))
    runs["failed"] = logged_run(client, "compare", tags, {"test/mae": 999.0}, status="FAILED")
    runs["running"] = logged_run(client, "compare", tags, {"test/mae": 998.0}, status="RUNNING")
    runs["eval"] = logged_run(client, "compare", {**tags, "eval.split": "test"}, {"test/mae": 997.0})
    runs["parent"] = logged_run(client, "cv", {**fold_tags, "cv.folds": "2"}, {"test/mae": 996.0, "test/mae_mean": 5})
    runs["folds"] = [logged_run(client, "cv", {**fold_tags, "mlflow.parentRunId": runs["parent"], "cv.fold": str(k)},
                                {"test/mae": mae, "test/cs5": cs5, "test/acc": acc})
                     for k, (mae, cs5, acc) in enumerate([(4.0, 0.6, 0.5), (7.0, 0.4, 0.25)])]
    logged_run(client, "agelab-prepare", {"data": "synth"}, {"prepare/kept": 10.0})
    logged_run(client, "only-failures", tags, {"test/mae": 3.0}, status="FAILED")
    return SimpleNamespace(root=root, uri=uri, client=client, runs=runs)


def report_cfg(store, *overrides):
    return compose_config(store.root, [f"tracking_uri={store.uri}", *overrides], config_name="report")


def stored(store, run_ids, metric):
    """The metric's latest values as MLflow holds them (read straight from the client)."""
    return np.array([store.client.get_run(r).data.metrics[metric] for r in run_ids], dtype=np.float64)


def row_of(summary, key):
    keys = summary.attrs["group_by"][:len(key)]
    match = summary[(summary[keys].astype(str) == pd.Series(key, index=keys)).all(axis=1)]
    assert len(match) == 1, key
    return match.iloc[0]


def parse_markdown(text: str) -> pd.DataFrame:
    lines = [line.strip().strip("|").split(" | ") for line in text.strip().splitlines()]
    header, rows = [c.strip() for c in lines[0]], [[c.strip() for c in line] for line in lines[2:]]
    assert set("".join(lines[1])) <= set("-: "), lines[1]
    return pd.DataFrame(rows, columns=header)


def test_groups_count_finished_training_runs_only(store):
    result = build_report(report_cfg(store))
    summary = result.summary
    assert list(summary.columns[:6]) == ["experiment", "model", "head", "data", "cv", "n"]
    assert [tuple(r) for r in summary[["experiment", "model", "head", "data", "cv", "n"]].to_numpy()] == [
        (*CNN, "-", 1), (*SMLF, "-", 2), (*FOLDS, store.runs["parent"][:8], 2)]  # folds: by cross-validation
    # failed, running, evaluation and cross-validation parent runs are in the store but not in the table
    assert set(result.selected["run_id"]) == {*store.runs["smlf"], *store.runs["cnn"], *store.runs["folds"]}
    assert {store.runs[k] for k in ("failed", "running", "eval", "parent")} <= set(result.runs["run_id"])
    assert "agelab-prepare" not in set(result.runs["experiment"])
    assert summary.attrs["metrics"] == ["test/mae", "test/cs5", "test/acc", "test/one_off"]


def test_mean_and_std_are_numpys_over_the_stored_values(store):
    summary = build_report(report_cfg(store)).summary
    for key, run_ids in ((SMLF, store.runs["smlf"]), (FOLDS, store.runs["folds"]), (CNN, store.runs["cnn"])):
        row = row_of(summary, key)
        for metric in ("test/mae", "test/cs5", "test/acc"):
            values = stored(store, run_ids, metric)
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values), rel=1e-12), (key, metric)
            if len(values) > 1:
                assert row[f"{metric}_std"] == pytest.approx(np.std(values), rel=1e-12, abs=1e-15), (key, metric)
            else:  # one run: no spread (not a std of 0)
                assert np.isnan(row[f"{metric}_std"]), (key, metric)
    folds = row_of(summary, FOLDS)
    assert (folds["test/mae_mean"], folds["test/mae_std"]) == (5.5, 1.5)  # 4 and 7: the parent's 996 is no fold
    assert math.isnan(folds["test/one_off_mean"])  # no fold logged it
    assert row_of(summary, SMLF)["test/mae_std"] > 0  # two seeds, two different models

    sample = build_report(report_cfg(store, "ddof=1")).summary
    assert row_of(sample, FOLDS)["test/mae_std"] == pytest.approx(np.std([4.0, 7.0], ddof=1))
    assert math.isnan(row_of(sample, CNN)["test/mae_std"])  # one run: no sample std


def test_markdown_and_csv_give_back_the_same_numbers(store, tmp_path, capsys):
    out = tmp_path / "tables" / "runs.csv"
    result = report(report_cfg(store, "format=csv", f"out={out}", "precision=4"))
    printed = capsys.readouterr()
    assert printed.out == result.markdown  # the markdown table on the console, the CSV in the file
    assert printed.err.splitlines()[0] == ("5 runs in 3 groups from compare, cv; left out: 2 failed, 1 running, "
                                           "1 evaluation run, 1 cross-validation parent")

    from_csv = pd.read_csv(out)
    from_markdown = parse_markdown(result.markdown)
    summary = result.summary
    assert list(from_markdown.columns) == ["experiment", "model", "head", "data", "cv", "n",
                                           *summary.attrs["metrics"], *SIZE_COLUMNS]
    assert from_csv[["experiment", "model", "head", "data"]].equals(from_markdown[["experiment", "model", "head",
                                                                                     "data"]])
    assert from_csv["n"].tolist() == [int(n) for n in from_markdown["n"]] == summary["n"].tolist()
    for metric in summary.attrs["metrics"]:
        for i, cell in enumerate(from_markdown[metric]):
            mean, std = from_csv.loc[i, f"{metric}_mean"], from_csv.loc[i, f"{metric}_std"]
            assert mean == pytest.approx(summary.loc[i, f"{metric}_mean"], rel=1e-9, nan_ok=True)
            assert std == pytest.approx(summary.loc[i, f"{metric}_std"], rel=1e-9, abs=1e-12, nan_ok=True)
            if cell == MISSING:
                assert math.isnan(mean)
            elif PLUS_MINUS not in cell:  # one run: its value, no spread
                assert float(cell) == pytest.approx(mean, abs=0.51e-4) and math.isnan(std)
            else:
                shown_mean, shown_std = map(float, cell.split(PLUS_MINUS))
                assert shown_mean == pytest.approx(mean, abs=0.51e-4) and shown_std == pytest.approx(std, abs=0.51e-4)
    for i, cell in enumerate(from_markdown["params"]):
        assert int(cell.replace(",", "")) == from_csv.loc[i, "params"] if cell != MISSING else math.isnan(
            from_csv.loc[i, "params"])


def test_model_size_and_export_columns(store):
    from agelab.models.summary import count_params
    from agelab.training import build_module

    summary = build_report(report_cfg(store)).summary
    smlf, cnn, folds = row_of(summary, SMLF), row_of(summary, CNN), row_of(summary, FOLDS)
    module = build_module(compose_config(store.root, FAST))
    expected = count_params(module.model, module.head)
    assert smlf["params"] == stored(store, store.runs["smlf"], "model/params")[0] == expected
    assert smlf["weights_mb"] == pytest.approx(4 * (expected + sum(b.numel() for b in module.buffers()
                                                                   if b.is_floating_point())) / 1e6)
    # exported run: the export figures; its parameter count agrees with the exported network's
    for column, metric in (("onnx_fp32_mb", "export/fp32_mb"), ("onnx_int8_mb", "export/int8_mb"),
                           ("int8_ms_1thread", "export/latency_ms_int8_onnx")):
        assert cnn[column] == stored(store, store.runs["cnn"], metric)[0] > 0
    assert cnn["params"] == stored(store, store.runs["cnn"], "export/num_params")[0]
    assert cnn["onnx_int8_mb"] < cnn["onnx_fp32_mb"]
    assert all(math.isnan(smlf[c]) for c in ("onnx_fp32_mb", "onnx_int8_mb", "int8_ms_1thread"))  # not exported
    assert smlf["mflops"] == stored(store, store.runs["smlf"], "model/mflops")[0] > 0
    assert math.isnan(folds["params"])  # runs without model/params (nor an export)
    line = next(line for line in to_markdown(summary).splitlines() if "| smlf_small |" in line)
    assert line.endswith(f"| {int(expected):,} | {smlf['weights_mb']:.3f} | {smlf['mflops']:.3f} | n/a | n/a | n/a |")


def test_options_choose_experiments_groups_metrics_and_eval_runs(store):
    only = build_report(report_cfg(store, "experiments=[compare]", "group_by=[model,seed]", "metrics=[test/mae,val/*]",
                                   "sort_by=test/mae")).summary
    assert list(only.columns[:3]) == ["model", "seed", "n"] and only["n"].tolist() == [1, 1, 1]
    assert only.attrs["metrics"][0] == "test/mae" and "val/mae" in only.attrs["metrics"]
    assert only["test/mae_mean"].is_monotonic_increasing
    with_eval = build_report(report_cfg(store, "experiments=compare", "include_eval=true")).summary
    assert row_of(with_eval, SMLF)["n"] == 3  # the evaluation run joins its model's group
    param = build_report(report_cfg(store, "group_by=[optimizer.lr]", "metrics=[test/mae]")).summary
    assert param["n"].sum() == 5 and row_of(param, ("-",))["n"] == 2  # the logged fold runs have no params
    folds = build_report(report_cfg(store, "experiments=cv", "metrics=[test/mae*]")).summary
    assert folds.attrs["metrics"] == ["test/mae"]  # not the left-out parent's test/mae_mean


def test_bad_options_and_empty_results_end_in_one_line(store):
    with pytest.raises(ConfigError, match=r"^experiments: no experiment 'nope' in sqlite:///.*; there are: "
                                          r"Default, agelab-prepare, compare, cv, only-failures$"):
        build_report(report_cfg(store, "experiments=[compare,nope]"))
    with pytest.raises(AgelabError, match=r"^no finished training runs to compare in 'only-failures' of sqlite:"
                                          r".* \(1 run: 1 failed\)$"):
        build_report(report_cfg(store, "experiments=[only-failures]"))
    with pytest.raises(ConfigError, match="^metrics: no selected run has a metric 'test/maee'; test and val metrics"):
        build_report(report_cfg(store, "metrics=[test/maee]"))
    with pytest.raises(ConfigError, match="^group_by: 'colour' is not a run field"):
        build_report(report_cfg(store, "group_by=[colour]"))
    with pytest.raises(ConfigError, match="^format must be one of markdown, csv"):
        build_report(report_cfg(store, "format=html"))
    with pytest.raises(ConfigError, match="^precision must be an integer >= 0, got -1$"):
        build_report(report_cfg(store, "precision=-1"))
    with pytest.raises(ConfigError, match="^out: cannot create /proc/no"):  # before the store is read
        build_report(report_cfg(store, "out=/proc/no/table.csv"))
    missing = store.root / "elsewhere" / "mlflow.db"
    with pytest.raises(ConfigError, match=f"^tracking_uri: no MLflow store at {missing}"):
        build_report(report_cfg(store, f"tracking_uri=sqlite:///{missing}"))
    assert not missing.parent.exists()  # reading never creates a store

    done = subprocess.run([sys.executable, "-m", "agelab.report", f"root_dir={store.root}", "experiments=[nope]"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: experiments: no experiment 'nope' in sqlite:///{store.root / 'mlflow.db'}; there are: Default, "
        "agelab-prepare, compare, cv, only-failures"]


def test_report_only_reads_the_store(store, capsys):
    db = store.root / "mlflow.db"

    def dump():
        with sqlite3.connect(db) as connection:
            return list(connection.iterdump())

    before = dump()
    report(report_cfg(store, "format=csv"))
    assert dump() == before
    assert pd.read_csv(io.StringIO(capsys.readouterr().out))["n"].sum() == 5


def test_histories_give_learning_and_cs_curves(store):
    run_id = store.runs["smlf"][0]
    curve = metric_history(store.uri, [run_id], "val/mae", by="epoch")
    assert curve["x"].tolist() == [0, 1]
    assert curve["value"].tolist() == [m.value for m in sorted(store.client.get_metric_history(run_id, "val/mae"),
                                                               key=lambda m: m.step)]
    cs = metric_history(store.uri, [run_id, *store.runs["folds"]], "test/cs_curve")
    assert cs["run_id"].unique().tolist() == [run_id] and cs["x"].tolist() == list(range(16))
    assert cs["value"].is_monotonic_increasing and cs["value"].iloc[5] == pytest.approx(
        stored(store, [run_id], "test/cs5")[0])


def test_notebook_runs_headless_and_draws_the_figures(store, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed clean
    monkeypatch.setenv("AGELAB_TRACKING_URI", store.uri)
    monkeypatch.setenv("AGELAB_EXPERIMENT", "compare,cv")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 3  # learning curves, CS curves, test/mae bars
    tables = [out["data"]["text/markdown"] for out in outputs if "text/markdown" in out.get("data", {})]
    assert len(tables) == 1 and "| compare | smlf_small | dex | synth | - | 2 |" in tables[0]


def test_compressed_runs_form_their_own_rows_and_the_column_shows_only_then():
    from agelab.results import summarize

    base = {"experiment": "agelab", "model": "smlf_small", "head": "dex", "data": "synth", "compress": None}
    runs = pd.DataFrame([{**base, "test/mae": 6.0}, {**base, "test/mae": 8.0},
                         {**base, "compress": "prune", "test/mae": 7.5}])
    summary = summarize(runs, metrics=["test/mae"])
    assert list(summary["compress"]) == ["-", "prune"] and list(summary["n"]) == [2, 1]
    assert list(summary["test/mae_mean"]) == [7.0, 7.5]
    plain = summarize(runs.iloc[:2], metrics=["test/mae"])
    assert "compress" not in plain.columns and list(plain["n"]) == [2]
    by_model = summarize(runs, group_by=["model"], metrics=["test/mae"])  # a group_by without compress too
    assert list(by_model["compress"]) == ["-", "prune"] and list(by_model["n"]) == [2, 1]


def test_left_out_runs_are_counted_with_plurals():
    import pandas as pd

    from agelab.results.runs import describe_left_out

    runs = pd.DataFrame({"status": ["FINISHED", "FINISHED", "FINISHED", "FAILED", "FAILED", "FINISHED"],
                         "eval_split": [None, "test", "val", None, None, None],
                         "cv_folds": [None, None, None, None, None, "3"]})
    assert sorted(describe_left_out(runs).split(", ")) == ["1 cross-validation parent", "2 evaluation runs", "2 failed"]
    # FINISHED by Lightning after the fit, stopped during the final test or export: not compared
    runs = pd.concat([runs, pd.DataFrame({"status": ["FINISHED"], "eval_split": [None], "cv_folds": [None]})],
                     ignore_index=True)
    runs["tags.agelab.complete"] = ["true", None, None, None, "false", None, "false"]
    assert sorted(describe_left_out(runs).split(", ")) == ["1 cross-validation parent", "1 incomplete",
                                                           "2 evaluation runs", "2 failed"]


def test_pooled_scores_two_cross_validations_apart_and_no_empty_columns():
    from agelab.results import summarize
    from agelab.results.table import cells

    base = {"experiment": "agelab", "model": "smlf_small", "head": "dex", "data": "fgnet", "compress": None,
            "test/cs_curve": 0.9}
    full = [{**base, "parent_run_id": "aaaaaaaa1111", "test/mae": mae, "test/n_age": n}
            for mae, n in ((10.0, 1.0), (0.0, 3.0))]  # 1 photo missed by 10 years, 3 hit: 2.5 per photo
    partial = [{**base, "parent_run_id": "bbbbbbbb2222", "test/mae": 4.0, "test/n_age": 2.0}]
    summary = summarize(pd.DataFrame(full + partial), metrics=["test/mae", "test/mae_pooled"])
    assert list(summary["cv"]) == ["aaaaaaaa", "bbbbbbbb"] and list(summary["n"]) == [2, 1]  # never merged
    assert list(summary["test/mae_mean"]) == [5.0, 4.0] and list(summary["test/mae_pooled_mean"]) == [2.5, 4.0]
    header, rows = cells(summary)
    assert header == ["experiment", "model", "head", "data", "cv", "n", "test/mae", "test/mae_pooled"]  # no sizes
    csv_header = to_csv(summary).splitlines()[0].split(",")  # the pooled figure under agelab.cv's name, no std
    assert csv_header[csv_header.index("n") + 1:][:3] == ["test/mae_mean", "test/mae_std", "test/mae_pooled"]
    assert rows[0][-2:] == ["5.000 ± 5.000", "2.500"] and rows[1][-2:] == ["4.000", "4.000"]  # one run: no ± 0
    unweighable = pd.DataFrame([*full[:1], {**full[1], "test/n_age": math.nan}])
    assert math.isnan(summarize(unweighable, metrics=["test/mae_pooled"])["test/mae_pooled_mean"][0])
    with pytest.raises(ConfigError, match="test/mae_pooled") as caught:
        summarize(pd.DataFrame(full), metrics=["test/cs_curve"])  # a curve, not a score
    assert "cs_curve" not in str(caught.value).split("there: ")[1]


def test_plot_labels_tell_two_cross_validations_apart():
    from agelab.results.plots import labels

    runs = pd.DataFrame([{"model": "m", "parent_run_id": "aaaaaaaa1111"}, {"model": "m", "parent_run_id": "bbbbbbbb2222"},
                         {"model": "m", "parent_run_id": None}])
    assert labels(runs, ["model"]).tolist() == ["aaaaaaaa", "bbbbbbbb", "-"]
    assert labels(runs.drop(columns="parent_run_id"), ["model"]).tolist() == ["m", "m", "m"]

