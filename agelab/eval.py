"""Evaluate a trained checkpoint: ``python -m agelab.eval ckpt=<path | runs:/<id>/...> [split=test] [data=...]``.

Prints the metrics of the split and logs them, with the figures, to a new MLflow run linked to
the training run. See conf/eval.yaml and agelab/evaluation.py.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from agelab.cli import run_main, run_or_exit
from agelab.config import CONF_DIR
from agelab.evaluation import EvalResult, evaluate, metrics_table


def evaluate_and_print(cfg: DictConfig) -> EvalResult:
    result = evaluate(cfg)
    from rich.console import Console

    console = Console()
    console.print(metrics_table(result))
    if result.run_id:
        line = f"MLflow run {result.run_id} in experiment {result.experiment_name!r} ({result.tracking_uri})"
        if result.trained_run_id:
            line += f", trained by run {result.trained_run_id}"
            if not result.trained_run_in_store:
                line += ", which is not in this store (run eval from the folder of the training's mlflow.db)"
        console.print(line)
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    result = run_or_exit(evaluate_and_print, cfg, arguments_of=None)  # checked once the checkpoint is found
    return result.metrics.get("mae", result.metrics.get("acc"))


if __name__ == "__main__":
    run_main(main, "eval")
