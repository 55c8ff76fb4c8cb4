"""Dataset readers: each turns a dataset's raw labels into records (see base.ReadResult).

``READERS`` maps a dataset name to its ``read_<name>(root, **options) -> ReadResult``.
"""

from agelab.data.readers.adience import read_adience
from agelab.data.readers.appa import read_appa
from agelab.data.readers.base import ReadResult
from agelab.data.readers.fgnet import read_fgnet
from agelab.data.readers.imdb import read_imdb
from agelab.data.readers.morph2 import read_morph2
from agelab.data.readers.table import read_table
from agelab.data.readers.utkface import read_utkface

READERS = {
    "adience": read_adience,
    "appa": read_appa,
    "fgnet": read_fgnet,
    "imdb": read_imdb,
    "morph2": read_morph2,
    "table": read_table,
    "utkface": read_utkface,
}

__all__ = ["READERS", "ReadResult", "read_adience", "read_appa", "read_fgnet", "read_imdb", "read_morph2",
           "read_table", "read_utkface"]
