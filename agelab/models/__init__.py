"""Architectures: pure nn.Modules mapping images to a feature vector (``out_features`` wide).

Heads (agelab.heads) add the output layer, so any model pairs with any head. Importing this
package registers every family below in ``MODELS``.
"""

from agelab.models.registry import MODELS, build_model, register
from agelab.models import (  # noqa: F401  (each module registers its models)
    inception, levi_hassner, mobilenet, resnet, shufflenet, simple_cnn, smlf,
)

__all__ = ["MODELS", "build_model", "register"]
