"""Gender and race codes: one table for every dataset's spelling, carried into every kind of batch."""

from __future__ import annotations

import numpy as np
import pandas as pd

from agelab.data.attributes import RACE_NAMES, gender_codes, race_codes
from agelab.data.datamodule import FaceBatchDataset, FaceDataset


def test_codes_from_each_datasets_spelling():
    morph = pd.DataFrame({"gender": ["M", "f", np.nan, "x"], "race": ["B", "W", "H", None]})
    assert gender_codes(morph).tolist() == [1, 0, -1, -1]
    assert [RACE_NAMES[c] if c >= 0 else None for c in race_codes(morph)] == ["black", "white", "hispanic", None]
    utk = pd.DataFrame({"race": ["Asian", "Others", "White"], "race_id": [2, 4, np.nan]})
    assert race_codes(utk).tolist() == [2, 4, -1]  # race_id wins; UTKFace's order is the table's
    assert race_codes(pd.DataFrame({"race": [" indian ", "Martian"]})).tolist() == [3, -1]
    assert gender_codes(pd.DataFrame({"age": [1.0]})).tolist() == [-1]
    assert race_codes(pd.DataFrame({"age": [1.0]})).tolist() == [-1]


def test_cpu_and_device_batches_carry_gender_and_race():
    records = pd.DataFrame({"age": [20.0, 30.0, 40.0], "group": [3, 4, 5], "gender": ["m", None, "f"],
                            "race": ["B", "A", None]}, index=[2, 0, 1])
    images = np.arange(3 * 4 * 4 * 3, dtype=np.uint8).reshape(3, 4, 4, 3)
    item = FaceDataset(images, records, lambda image: {"image": image})[0]
    assert (item["gender"], item["race"]) == (1, 1)
    batch = FaceBatchDataset(images, records, None)[[2, 0]]
    assert batch["gender"].tolist() == [1, 0] and batch["race"].tolist() == [1, -1]
    assert (batch["image"] == images[[2, 1]]).all()
