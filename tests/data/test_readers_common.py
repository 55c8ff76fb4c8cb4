"""What every reader shares: the registry, one-line errors for a missing folder, the result's counts."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from agelab.data.readers import READERS, ReadResult
from agelab.errors import DataError


def test_registry_names_every_reader():
    assert sorted(READERS) == ["adience", "appa", "fgnet", "imdb", "morph2", "table", "utkface"]
    assert all(fn.__name__ == f"read_{name}" for name, fn in READERS.items())


@pytest.mark.parametrize("name", sorted(READERS))
def test_missing_root_is_one_line_naming_the_folder(tmp_path, name):
    missing = tmp_path / "no-such-dataset"
    with pytest.raises(DataError) as info:
        READERS[name](missing)
    message = str(info.value)
    assert str(missing) in message and "\n" not in message


def test_counts_and_report_of_a_result():
    records = pd.DataFrame({"path": ["/a.jpg", "/b.jpg", "/c.jpg"], "age": [30.0, 70.0, float("nan")],
                            "group": [4, 7, -1], "subject": ["s1", "s1", "s2"]})
    result = ReadResult(records, Counter(missing_file=2, bad_age=1), Counter(canonical_tuple=1), "demo", "/data")
    assert result.counts() == {"kept": 3, "dropped": 3, "dropped/bad_age": 1, "dropped/missing_file": 2,
                               "mapped/canonical_tuple": 1}
    text = result.report()
    assert text.splitlines()[0] == "demo: kept 3 of 6 rows from /data"
    assert "missing_file" in text and "25-32: 1" in text and "60+: 1" in text and "unknown: 1" in text
    assert "subjects: 2" in text


def test_a_reader_or_split_keyword_its_function_does_not_take_is_one_line(tmp_path):
    from agelab.config_checks import check_targets
    from agelab.errors import ConfigError

    from conftest import compose_config

    for key, message in (("reader", "data.source.reader: read_utkface takes no foo (it takes root, extra_dirs)"),
                         ("split", "data.source.split: random_split takes no foo (it takes records,")):
        cfg = compose_config(tmp_path, ["data=utkface", f"data.root={tmp_path}", f"+data.source.{key}.foo=1"])
        with pytest.raises(ConfigError) as raised:  # before anything is read or built
            check_targets(cfg)
        assert str(raised.value).startswith(message)
