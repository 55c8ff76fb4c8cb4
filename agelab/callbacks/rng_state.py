"""Random-number states in checkpoints, so a resumed run shuffles and augments as an unbroken one would."""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch


class RngStateCheckpoint(pl.Callback):
    """Saves the torch (CPU and CUDA), NumPy and Python generators with each checkpoint and
    restores them on resume. Stored as tensors and plain lists, so ``weights_only`` loading works."""

    def state_dict(self) -> dict:
        np_state = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate()),
                 "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                           "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(_to_tuples(state["python"]))
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
