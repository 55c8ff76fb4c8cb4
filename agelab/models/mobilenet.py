"""MobileNet V2 and V3 (torchvision, random init).

V2 gives the 1280 pooled features (its dropout stays); V3 keeps its hidden classifier layer
(Linear + Hardswish + dropout), giving 1024 (small) or 1280 (large) features.
"""

from torchvision.models import mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small

from agelab.models.registry import register
from agelab.models.torchvision_base import TorchvisionBackbone


@register("mobilenet_v2")
class MobileNetV2(TorchvisionBackbone):
    build = staticmethod(mobilenet_v2)


@register("mobilenet_v3_small")
class MobileNetV3Small(TorchvisionBackbone):
    build = staticmethod(mobilenet_v3_small)


@register("mobilenet_v3_large")
class MobileNetV3Large(TorchvisionBackbone):
    build = staticmethod(mobilenet_v3_large)
