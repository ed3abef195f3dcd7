"""Binary ResNet-18 and AlexNet (Section 5.1.1), and model-level fusion for inference."""

from ..layers import BinaryConv2d
from ._common import center_and_clamp_weights_
from .alexnet import ALEXNET_WIDTHS, BinaryAlexNet, binary_alexnet
from .resnet import SHORTCUTS, BinaryResNet, binary_resnet18

__all__ = ["ARCHS", "ALEXNET_WIDTHS", "SHORTCUTS", "build_model", "fuse_model", "center_and_clamp_weights_",
           "binary_resnet18", "binary_alexnet", "BinaryResNet", "BinaryAlexNet"]

ARCHS = {"resnet18": binary_resnet18, "alexnet": binary_alexnet}


def build_model(arch, method, num_classes, input_size, **kwargs):
    """The ``arch`` network (``"resnet18"`` or ``"alexnet"``) with ``method`` convolutions.

    ``kwargs`` go to the family's constructor (``pad_mode``, ``small_input``, ``bn_affine``; AlexNet's
    ``widths``, ResNet's ``shortcut``).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {tuple(ARCHS)}")
    return ARCHS[arch](method=method, num_classes=num_classes, input_size=input_size, **kwargs)


def fuse_model(model):
    """Replace every learned Gamma by its single fused tensor (Section 4.3); in place, returns ``model``.

    Predictions are unchanged: each layer then multiplies by ``Gamma.fused()``,
    the very tensor its factors produced.
    """
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.fuse()
    return model
