"""Binary AlexNet (Section 5.1.1 of the paper).

"In line with previous works, we removed the local normalization operation
and added a batch normalization layer followed by a sign activation before
each convolutional layer. Additionally, we kept the dropout on both fully
connected layers setting its value to 0.5. [...] the first and last layers
for both networks were kept real."

Widths. The "previous works" are XNOR-Net (Rastegari et al., ECCV 2016),
whose binary AlexNet has Krizhevsky et al.'s filters, 96-256-384-384-256
(``widths="paper"``, the default), not torchvision's 64-192-384-256-256
(``widths="torchvision"``, kept as a variant).

Where the paper is silent, BN and ReLU sit where XNOR-Net's reference binary
AlexNet has them: BN + ReLU after the real conv1, BN + ReLU before the real
fc8, and no ReLU after a binary layer (the next BN -> sign follows directly).
Layout for a 227x227 input (``widths="paper"``; conv1 has padding 2, as in
XNOR-Net's code and torchvision: 227 -> 56, and 224 -> 55, both pool to 27)::

    conv1  real 11x11/4, 96  -> BN -> ReLU -> max-pool 3/2     227 -> 56 -> 27
    conv2  BN -> sign -> 5x5, 256 -> max-pool 3/2               27 -> 27 -> 13
    conv3  BN -> sign -> 3x3, 384                               13
    conv4  BN -> sign -> 3x3, 384                               13
    conv5  BN -> sign -> 3x3, 256 -> max-pool 3/2               13 -> 13 -> 6
    fc6    BN -> sign -> 6x6, 4096 -> dropout 0.5                6 -> 1
    fc7    BN -> sign -> 1x1, 4096 -> dropout 0.5                1
    fc8    BN -> ReLU -> real linear, num_classes

The two hidden fully connected layers are binary too (only the first and
last layers are real), written as convolutions over the whole feature map,
as XNOR-Net's code does: fc6 is a binary convolution whose kernel covers the
last feature map (6x6 at 224 or 227), fc7 a 1x1 one. Cases 2-4 on their 1x1
output have one position, so their Gamma reduces to Case 1's shape there (the
extra factors are single numbers). Dropout 0.5 is the paper's (XNOR-Net's
code has none); it is applied to the outputs of fc6 and fc7, as Krizhevsky et
al. apply it to the outputs of their fully connected layers.

The real-valued baseline (``method="real"``) has no sign, hence no
non-linearity between its convolutions; its units get a ReLU after the
convolution (``BN -> conv -> ReLU``), as XNOR-Net's real AlexNet has one after
every convolution but fc8.

Each ``BN -> sign -> conv`` is a ``BinaryUnit`` (``relu=False``);
initialization and the starting value of Gamma are ``init_weights``'s (He et
al., see ``models/resnet.py``). ``small_input=True`` replaces the 11x11/4
stem by a 3x3/1 convolution for small images; layer sizes are derived from
``input_size`` either way. ``bn_affine=False`` gives the BN before each sign
no learned scale and shift.
"""

import torch.nn as nn

from ..layers import conv_output_size
from ._common import BinaryUnit, init_weights

__all__ = ["ALEXNET_WIDTHS", "BinaryAlexNet", "binary_alexnet"]

# conv1 .. conv5 filters
ALEXNET_WIDTHS = {"paper": (96, 256, 384, 384, 256), "torchvision": (64, 192, 384, 256, 256)}
# conv2 .. conv5: kernel, padding, max-pool 3/2 after
_BINARY_CONVS = ((5, 2, True), (3, 1, False), (3, 1, False), (3, 1, True))


def _output_size(size, input_size, kernel_size, stride=1, padding=0):
    """``conv_output_size``, or a ValueError when ``input_size`` leaves nothing to convolve."""
    out = conv_output_size(size, kernel_size, stride, padding)
    if min(out) < 1:
        raise ValueError(f"input_size {input_size} is too small for AlexNet")
    return out


class BinaryAlexNet(nn.Module):
    """AlexNet with BN -> sign before every binary layer; real first and last layers. See the module docstring."""

    def __init__(self, method="case4", num_classes=1000, input_size=227, pad_mode="zero", small_input=False,
                 dropout=0.5, widths="paper", bn_affine=True):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if widths not in ALEXNET_WIDTHS:
            raise ValueError(f"unknown AlexNet widths {widths!r}; choose from {tuple(ALEXNET_WIDTHS)}")
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.method, self.input_size, self.widths = method, size, widths
        channels = ALEXNET_WIDTHS[widths]
        relu = method == "real"  # the binary units' non-linearity is the next unit's sign
        stem = (3, 1, 1) if small_input else (11, 4, 2)  # kernel, stride, padding
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], *stem, bias=False), nn.BatchNorm2d(channels[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        size = _output_size(_output_size(size, input_size, *stem), input_size, 3, 2)
        features = []
        for c_in, c_out, (k, p, pool) in zip(channels[:-1], channels[1:], _BINARY_CONVS):
            _output_size(size, input_size, k, 1, p)
            features.append(BinaryUnit(c_in, c_out, k, 1, p, size, method, pad_mode, relu, bn_affine))
            size = features[-1].output_size
            if pool:
                features.append(nn.MaxPool2d(3, 2))
                size = _output_size(size, input_size, 3, 2)
        self.features = nn.Sequential(*features)
        c5 = channels[-1]
        self.classifier = nn.Sequential(
            BinaryUnit(c5, 4096, size, 1, 0, size, method, pad_mode, relu, bn_affine), nn.Dropout(dropout),  # fc6
            BinaryUnit(4096, 4096, 1, 1, 0, (1, 1), method, pad_mode, relu, bn_affine), nn.Dropout(dropout),  # fc7
            nn.BatchNorm2d(4096), nn.ReLU(inplace=True), nn.Flatten())
        self.fc = nn.Linear(4096, num_classes)  # fc8
        init_weights(self)

    def forward(self, x):  # (N, 3, H, W) -> (N, num_classes)
        return self.fc(self.classifier(self.features(self.stem(x))))


def binary_alexnet(method="case4", num_classes=1000, input_size=227, pad_mode="zero", small_input=False,
                   dropout=0.5, widths="paper", bn_affine=True):
    """Binary AlexNet (BN -> sign before each binary layer, dropout 0.5 on fc6 and fc7), Section 5.1.1."""
    return BinaryAlexNet(method, num_classes, input_size, pad_mode, small_input, dropout, widths, bn_affine)
