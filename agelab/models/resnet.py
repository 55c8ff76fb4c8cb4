"""ResNet-18 / ResNet-34 (torchvision, random init), 512 features from the global pool."""

from torchvision.models import resnet18, resnet34

from agelab.models.registry import register
from agelab.models.torchvision_base import TorchvisionBackbone


@register("resnet18")
class ResNet18(TorchvisionBackbone):
    build = staticmethod(resnet18)


@register("resnet34")
class ResNet34(TorchvisionBackbone):
    build = staticmethod(resnet34)
