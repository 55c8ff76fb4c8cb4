"""Results read back from MLflow: runs as DataFrames, metric histories, the comparison table and
its figures. Used by ``python -m agelab.report`` and notebooks/compare_runs.ipynb; never writes to
the store."""

from agelab.results.history import metric_history
from agelab.results.runs import describe_left_out, load_runs, require_runs, select_runs
from agelab.results.table import DEFAULT_GROUP_BY, summarize, to_csv, to_markdown

__all__ = ["load_runs", "select_runs", "describe_left_out", "require_runs",
           "metric_history", "summarize", "to_markdown", "to_csv", "DEFAULT_GROUP_BY"]
