"""Architectures: pure nn.Modules mapping images to a feature vector (``out_features`` wide).

Heads (agelab.heads) add the output layer, so any model pairs with any head.
"""

from agelab.models.registry import MODELS, build_model, register
from agelab.models import smlf  # noqa: F401  (registers its models)

__all__ = ["MODELS", "build_model", "register"]
