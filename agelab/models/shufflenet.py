"""ShuffleNet V2 1.0x (torchvision, random init), 1024 features; SMLF-Net's paper compares against it."""

from torchvision.models import shufflenet_v2_x1_0

from agelab.models.registry import register
from agelab.models.torchvision_base import TorchvisionBackbone


@register("shufflenet")
class ShuffleNetV2(TorchvisionBackbone):
    build = staticmethod(shufflenet_v2_x1_0)
