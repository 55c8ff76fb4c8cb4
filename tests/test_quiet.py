"""Lightning's install tips are dropped from the log; its other messages still get through."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

import agelab  # noqa: F401 - importing agelab installs the filter


def test_install_tip_is_dropped_and_the_rest_of_lightning_info_is_kept(caplog):
    caplog.set_level(logging.INFO)
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    logger.addHandler(caplog.handler)
    try:
        pl.Trainer(accelerator="cpu", logger=None, enable_progress_bar=False, max_epochs=1)
    finally:
        logger.removeHandler(caplog.handler)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "litlogger" in m or "Tip" in m]
    assert any(m.startswith("GPU available") for m in messages)  # the Trainer's own report is untouched
