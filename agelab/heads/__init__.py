"""Heads: output layer + loss + decoding, one class per method."""

from agelab.heads.base import Head
from agelab.heads.dex import DexHead

__all__ = ["Head", "DexHead"]
