import numpy as np

from agelab.groups import GROUP_NAMES, age_to_group


def test_group_edges_and_gaps():
    assert [age_to_group(a) for a in (0, 2, 4, 6, 8, 13, 15, 20, 25, 32, 38, 43, 48, 53, 60, 99)] == \
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    # Ages between groups go to the nearer group.
    assert age_to_group(22) == 3 and age_to_group(23) == 4 and age_to_group(56) == 6 and age_to_group(57) == 7
    assert list(age_to_group(np.array([1, 70]))) == [0, 7]
    assert len(GROUP_NAMES) == 8
