"""Where the datamodule's faces come from: anything with ``load() -> (images, records)``.

``records`` must have a ``split`` column ("train", "val", "test") and the targets ("age",
"group"); ``images`` is a uint8 (N, H, W, 3) array, usually a memory map from the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from agelab.data.cache import cache_exists, load_cache, save_cache
from agelab.data.synth import SynthSpec, generate
from agelab.errors import require_int

log = logging.getLogger(__name__)


class SynthSource:
    """Procedural faces (agelab.data.synth), generated once per setting and cached on disk."""

    def __init__(self, train_size: int, val_size: int, test_size: int, image_size: int = 128, seed: int = 0,
                 label_noise: float = 1.5, cache_dir: str | Path = "data/cache"):
        sizes = {"data.source.train_size": train_size, "data.source.val_size": val_size, "data.source.test_size": test_size,
                 "data.source.image_size": image_size}
        for name, value in sizes.items():
            require_int(name, value, 1)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.spec = SynthSpec(count=train_size + val_size + test_size, size=image_size, seed=seed,
                              label_noise=label_noise)
        key = hashlib.sha1(json.dumps([self.spec.__dict__, self.sizes], sort_keys=True).encode()).hexdigest()[:10]
        self.folder = Path(cache_dir) / f"synth-{key}"

    def prepare(self) -> None:
        """Build the cache if it is missing (the datamodule calls this once per node)."""
        if not cache_exists(self.folder):
            log.info("generating %d synthetic faces into %s", self.spec.count, self.folder)
            images, records = generate(self.spec)
            records["split"] = np.repeat(list(self.sizes), list(self.sizes.values()))
            save_cache(self.folder, images, records)

    def load(self) -> tuple[np.ndarray, pd.DataFrame]:
        self.prepare()
        return load_cache(self.folder)
