"""Inception networks (torchvision, random init, no auxiliary classifiers).

``inception`` is GoogLeNet (Inception V1), 1024 features. Its adaptive average pool lets it run
unchanged on small faces: at 112x112 the last map is 4x4 (32x32 is the smallest, 1x1).
``inception_v3`` is Inception V3, 2048 features; it needs at least 75x75 and works at 112x112
(last map 2x2) — the usual transfer-learning backbone (with ``model=pretrained``).
"""

from torchvision.models import googlenet, inception_v3

from agelab.models.registry import register
from agelab.models.torchvision_base import TorchvisionBackbone


@register("inception")
class GoogLeNet(TorchvisionBackbone):
    build = staticmethod(googlenet)
    build_kwargs = {"aux_logits": False, "transform_input": False, "init_weights": True}


@register("inception_v3")
class InceptionV3(TorchvisionBackbone):
    build = staticmethod(inception_v3)
    build_kwargs = {"aux_logits": False, "transform_input": False, "init_weights": True}
    min_input = 75
