"""Heads: output layer + loss + decoding, one class per method.

``HEADS`` names the single-task heads (as in conf/head/<name>.yaml); ``MultiTaskHead`` wraps any
of them with a gender output.
"""

from agelab.heads.base import AgeHead, Head
from agelab.heads.ce import GroupCEHead
from agelab.heads.dex import DexHead
from agelab.heads.dldl import DLDLHead
from agelab.heads.mean_variance import MeanVarianceHead
from agelab.heads.multitask import MultiTaskHead
from agelab.heads.ordinal import CoralHead, CornHead
from agelab.heads.regression import RegressionHead

HEADS = {"ce": GroupCEHead, "dex": DexHead, "regression": RegressionHead, "coral": CoralHead, "corn": CornHead,
         "mean_variance": MeanVarianceHead, "dldl": DLDLHead}

__all__ = ["HEADS", "Head", "AgeHead", "GroupCEHead", "DexHead", "RegressionHead", "CoralHead", "CornHead",
           "MeanVarianceHead", "DLDLHead", "MultiTaskHead"]
