"""Test MAE broken down by true age band (and by gender / race where the data has them), as bar
charts next to the overall MAE: where a model's error comes from (old faces, usually)."""

from __future__ import annotations

import pytorch_lightning as pl

from agelab.callbacks.figures import bar_figure, log_figure
from agelab.data.attributes import RACE_NAMES
from agelab.metrics import BAND_NAMES, GENDER_NAMES

GENDER_LABELS = {"f": "female", "m": "male"}


def breakdown(results: dict, prefix: str, names) -> dict[str, float]:
    """{label: MAE} for the ``<prefix>_<name>`` keys present in ``results``, in ``names`` order."""
    out = {}
    for name in names:
        key = f"{prefix}_{name}"
        if key in results:
            out[str(name).replace("plus", "+")] = float(results[key])
    return out


class MAEBreakdownFigure(pl.Callback):
    """After testing: ``figures/mae_by_age.png`` (MAE per true-age band: 0-9, 10-19, ..., 70+) and,
    when the test data carries them, ``figures/mae_by_gender.png`` and ``figures/mae_by_race.png``."""

    def on_test_end(self, trainer, pl_module):
        results = getattr(pl_module, "test_results", {}) or {}
        if "mae" not in results or not trainer.is_global_zero:
            return
        overall = float(results["mae"])
        charts = (("age", "true age (years)", BAND_NAMES), ("gender", "gender", GENDER_NAMES), ("race", "race", RACE_NAMES))
        for what, xlabel, names in charts:
            values = breakdown(results, f"mae_{what}", names)
            if what == "gender":
                values = {GENDER_LABELS.get(k, k): v for k, v in values.items()}
            if values:
                fig = bar_figure(values, xlabel, title=f"Test MAE by {what}", reference=overall, reference_label="overall")
                log_figure(trainer, fig, f"figures/mae_by_{what}.png")
