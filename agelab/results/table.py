"""The comparison table: runs grouped (by experiment, model, head, data by default), the mean and
std of each chosen metric over the runs of a group (seeds, folds), and the size of the model.

``summarize`` returns the numbers (CSV columns ``<metric>_mean`` / ``<metric>_std``, as agelab.cv
names its fold statistics); ``to_markdown`` and ``to_csv`` write them out.
"""

from __future__ import annotations

import fnmatch
import math

import numpy as np
import pandas as pd

from agelab.errors import ConfigError
from agelab.results.pooled import SUFFIX as POOLED
from agelab.results.pooled import count_metric, pooled
from agelab.results.runs import metric_names

DEFAULT_GROUP_BY = ("experiment", "model", "head", "data", "compress", "cv")
# Group keys left out of the table when no run has a value for them. ``cv``: the cross-validation a
# fold's run belongs to (its parent run id, shortened), so two cross-validations, one of them
# partial, never merge into one row that counts some people twice.
OPTIONAL_KEYS = ("compress", "cv")
CV_ID_CHARS = 8
# Shown when the runs have them: age error, CS(5), and the exact / one-off group accuracies.
DEFAULT_METRICS = ("test/mae", "test/cs5", "test/acc", "test/one_off")
# Size columns: the first metric a run has, in order (export/num_params counts the same network
# for exported runs logged before model/params existed). n/a where no run of the group has one.
SIZE_COLUMNS = {
    "params": ("model/params", "export/num_params"),
    "weights_mb": ("model/size_mb",),               # fp32 parameters and buffers
    "mflops": ("model/mflops",),                    # one face through model + head
    "onnx_fp32_mb": ("export/fp32_mb",),
    "onnx_int8_mb": ("export/int8_mb",),
    "int8_ms_1thread": ("export/latency_ms_int8_onnx",),  # one face, one CPU thread
}
MISSING = "n/a"
PLUS_MINUS = " ± "


def as_list(value) -> list[str]:
    """A config value that may be one name or a list of names."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def group_column(runs: pd.DataFrame, key: str) -> str:
    """The column a group_by key names: a run field or metric, else ``params.<key>`` or ``tags.<key>``."""
    for column in (key, f"params.{key}", f"tags.{key}"):
        if column in runs.columns:
            return column
    raise ConfigError(f"group_by: {key!r} is not a run field (experiment, model, head, data, seed, run_name, "
                      "status, ...), param or tag of the selected runs")


def choose_metrics(runs: pd.DataFrame, metrics=None) -> list[str]:
    """The metrics to show: ``metrics`` (names or fnmatch patterns such as ``test/mae_age_*``, each
    must match a metric of the runs, or ``<score>_pooled`` for mae, cs5, acc, one_off and the MAE
    breakdowns: over all the group's faces), or the DEFAULT_METRICS the runs have. Curves (``cs_curve``) are not scores."""
    available = [m for m in metric_names(runs) if not m.endswith("cs_curve")]
    available += [f"{m}{POOLED}" for m in available if count_metric(m) in available]
    if metrics is None:
        return [m for m in DEFAULT_METRICS if m in available]
    chosen = []
    for pattern in as_list(metrics):
        if any(c in pattern for c in "*?["):
            matches = [m for m in available if fnmatch.fnmatchcase(m, pattern)]
        else:
            matches = [pattern] if pattern in available else []
        if not matches:
            shown = ", ".join(m for m in available if m.startswith(("test/", "val/"))) or "none"
            raise ConfigError(f"metrics: no selected run has a metric {pattern!r}; test and val metrics there: {shown}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def with_cv_column(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``runs`` with the ``cv`` group key: for a fold's run its parent run id, shortened."""
    frame = runs.copy()
    if "parent_run_id" in frame:
        frame["cv"] = frame["parent_run_id"].map(lambda v: v[:CV_ID_CHARS] if isinstance(v, str) and v else None)
    return frame


def group_text(column: pd.Series) -> pd.Series:
    """A group key's values as text, "-" where a run has none."""
    return column.map(lambda v: "-" if pd.isna(v) else str(v))


def pooled_over(group: pd.DataFrame, score: str) -> float:
    """``score`` over all the group's faces (see agelab.results.pooled); NaN when a run that has the
    score lacks its face count, as it cannot be weighed."""
    values, counts = numbers(group, score), numbers(group, count_metric(score))
    return math.nan if (values.notna() & counts.isna()).any() else pooled(values, counts)


def numbers(group: pd.DataFrame, metric: str) -> pd.Series:
    return pd.to_numeric(group[metric], errors="coerce")


def first_available(group: pd.DataFrame, sources) -> pd.Series:
    """Per run: the first of the ``sources`` metrics it has (NaN when none)."""
    values = pd.Series(np.nan, index=group.index)
    for source in sources:
        if source in group.columns:
            values = values.fillna(pd.to_numeric(group[source], errors="coerce"))
    return values


def summarize(runs: pd.DataFrame, group_by=DEFAULT_GROUP_BY, metrics=None, ddof: int = 0,
              sort_by: str | None = None) -> pd.DataFrame:
    """One row per group: the group keys, ``n`` (runs), ``<metric>_mean`` and ``<metric>_std`` over
    the runs that logged the metric (std with ``ddof``: 0 as numpy and agelab.cv, 1 for the sample
    std), and the SIZE_COLUMNS (mean over the group's runs). Rows in group order, or ascending by
    the mean of ``sort_by``."""
    frame = with_cv_column(runs)
    keys = list(as_list(group_by))
    keys += [key for key in OPTIONAL_KEYS if key not in keys]  # a pruned run never averages with its base
    keys = [key for key in keys if key not in OPTIONAL_KEYS or (key in frame.columns and frame[key].notna().any())]
    chosen = choose_metrics(runs, metrics)
    columns = [group_column(frame, key) for key in keys]
    for key, column in zip(keys, columns):  # missing tags (old runs) form a group of their own
        frame[f"__{key}"] = group_text(frame[column])
    group_keys = [f"__{key}" for key in keys]
    groups = frame.groupby(group_keys, sort=True) if group_keys else [((), frame)]
    rows = []
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        row = {**dict(zip(keys, values)), "n": len(group)}
        for metric in chosen:
            score = metric[:-len(POOLED)] if metric.endswith(POOLED) else None
            if score in group:  # one figure over all the group's faces: no spread
                row[f"{metric}_mean"], row[f"{metric}_std"] = pooled_over(group, score), math.nan
                continue
            found = numbers(group, metric).dropna().to_numpy(np.float64)
            row[f"{metric}_mean"] = float(found.mean()) if len(found) else math.nan
            # a spread needs two runs (with ddof=0 one run would show a std of 0 among n runs)
            row[f"{metric}_std"] = float(found.std(ddof=ddof)) if len(found) > max(ddof, 1) else math.nan
        for name, sources in SIZE_COLUMNS.items():
            found = first_available(group, sources).dropna()
            row[name] = float(found.mean()) if len(found) else math.nan
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary.attrs["metrics"] = chosen
    summary.attrs["group_by"] = keys
    if sort_by is not None:
        if f"{sort_by}_mean" not in summary.columns:
            raise ConfigError(f"sort_by: {sort_by!r} is not one of the metrics shown ({', '.join(chosen) or 'none'})")
        summary = summary.sort_values(f"{sort_by}_mean", kind="stable", na_position="last", ignore_index=True)
        summary.attrs.update(metrics=chosen, group_by=keys)
    return summary


def format_number(value: float, precision: int) -> str:
    return MISSING if value is None or not np.isfinite(value) else f"{value:.{precision}f}"


def cells(summary: pd.DataFrame, precision: int = 3) -> tuple[list[str], list[list[str]]]:
    """Header and text rows: group keys, n, ``mean ± std`` per metric, then the size columns some
    group has (no export columns when nothing was exported)."""
    keys, metrics = summary.attrs["group_by"], summary.attrs["metrics"]
    sizes = [name for name in SIZE_COLUMNS if name in summary and summary[name].notna().any()]
    header = [*keys, "n", *metrics, *sizes]
    rows = []
    for _, row in summary.iterrows():
        text = [str(row[key]) for key in keys] + [str(int(row["n"]))]
        for metric in metrics:
            mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
            text.append(MISSING if not np.isfinite(mean) else
                        format_number(mean, precision) + (PLUS_MINUS + format_number(std, precision)
                                                          if np.isfinite(std) else ""))
        for name in sizes:
            value = row[name]
            text.append(f"{int(round(value)):,}" if name == "params" and np.isfinite(value)
                        else format_number(value, precision))
        rows.append(text)
    return header, rows


def to_markdown(summary: pd.DataFrame, precision: int = 3) -> str:
    """A GitHub-flavoured markdown table (numbers right-aligned), one line per group."""
    header, rows = cells(summary, precision)
    numeric = len(summary.attrs["group_by"])  # the columns from n on are numbers
    align = ["---"] * numeric + ["--:"] * (len(header) - numeric)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines) + "\n"


def to_csv(summary: pd.DataFrame) -> str:
    """The numbers at full precision: group keys, n, ``<metric>_mean``, ``<metric>_std``, sizes; a
    pooled figure is one column ``<score>_pooled`` (no spread), as agelab.cv logs it."""
    pooled = [m for m in summary.attrs.get("metrics", []) if m.endswith(POOLED)
              and f"{m}_std" in summary and summary[f"{m}_std"].isna().all()]
    table = summary.drop(columns=[f"{m}_std" for m in pooled]).rename(columns={f"{m}_mean": m for m in pooled})
    return table.to_csv(index=False, float_format="%.10g")
