"""The 8 Adience age groups and the mapping between ages and groups."""

from __future__ import annotations

import numpy as np

# (low, high) inclusive; the data files list 8-13 as (8, 12).
GROUPS: tuple[tuple[int, int], ...] = ((0, 2), (4, 6), (8, 13), (15, 20), (25, 32), (38, 43), (48, 53), (60, 200))
GROUP_NAMES: tuple[str, ...] = ("0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60+")
NUM_GROUPS = len(GROUPS)
# Ages that fall between two groups go to the nearer one (ties to the older group).
GROUP_BOUNDS: tuple[float, ...] = tuple((hi + GROUPS[i + 1][0]) / 2 for i, (_, hi) in enumerate(GROUPS[:-1]))
# A representative age for each group, used when a group is shown as an age.
GROUP_CENTRES = np.array([1.0, 5.0, 10.5, 17.5, 28.5, 40.5, 50.5, 66.0])


def age_to_group(age):
    """Group index of an age (scalar or array); ages between groups go to the nearest one."""
    idx = np.searchsorted(GROUP_BOUNDS, np.asarray(age, dtype=np.float64), side="right")
    return int(idx) if np.ndim(idx) == 0 else idx
