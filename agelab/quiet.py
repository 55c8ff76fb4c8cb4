"""Silence third-party chatter that says nothing about the run: a sales tip and a deprecation
warning that Lightning itself triggers on every fit, and the set-up lines of MLflow's database
migrations (alembic). Everything else still reaches the log."""

from __future__ import annotations

import logging
import warnings

ADVERTS = ("💡 Tip:",)  # Lightning's suggestions to install its cloud packages
LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero")


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(ADVERTS)


def quiet_third_party() -> None:
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Lightning's own pytree helper uses a torch API that torch deprecated; nothing a user can change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
