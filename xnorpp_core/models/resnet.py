"""Binary ResNet-18 (Section 5.1.1 of the paper).

Layout. The stem (first conv) and the classifier (last fully connected layer)
are real-valued; the 16 convolutions in between are ``BinaryConv2d`` grouped
in pairs inside basic blocks, two blocks per stage, four stages of widths
64, 128, 256, 512 (He et al., CVPR 2016).

Block order. The paper "followed [XNOR-Net] and used the basic block version
with pre-activation [He et al., ECCV 2016] moving the activation function
after the convolution and adding a sign function before it". Read literally,
each of the block's two convolutions is::

    BN -> sign -> binary conv (times its scale) -> ReLU

and the block adds its input to the result of the second one::

    y = x + ReLU(Conv_2(sign(BN(ReLU(Conv_1(sign(BN(x))))))))

so, as in pre-activation ResNets, nothing is applied after the addition and
the identity path stays clean. BN sits *before* the sign because the sign of
a real tensor is what the binary convolution consumes: BN centres and scales
its input so that roughly half of the binary activations are +1. The sign
itself lives inside ``BinaryConv2d`` (Eq. 1 with the straight-through
estimator). For ``method="real"`` the very same network is built with float
convolutions (the sign disappears with the binarization), which is the
real-valued baseline at an identical topology.

As in pre-activation ResNets, a final BN and ReLU come before the global
average pooling: the residual stream is a sum of un-normalised block outputs,
and the real classifier should see a normalised signal.

Downsampling shortcut. When a block halves the resolution and doubles the
width, its shortcut is by default (``shortcut="conv"``) a *real-valued* 1x1
convolution of stride 2 followed by BN (torchvision's "option B"). The paper
does not say; keeping it real is the common choice for binary ResNets (it is
about 1% of the network's multiply-adds), and it keeps the weight count
identical to torchvision's ``resnet18``. Variants: ``"avgpool_conv"``, a 2x2
average pooling of stride 2 (ceil mode, so that odd sizes match the 3x3/2
convolution) then a real 1x1 convolution of stride 1 and BN, which sees every
input position instead of one in four; ``"binary"``, ``BN -> sign -> binary
1x1/2 convolution (times its scale) -> BN``, binary like the rest of the block.

BN before the sign has a learned scale and shift by default;
``bn_affine=False`` leaves them out (the stem's, the shortcut's last and the
final BN keep theirs).

Initialization. The paper's citation for its initialization is lost in the
text; we use He et al.'s (ICCV 2015) normal initialization with
``fan_out`` mode for every convolution, as torchvision's ResNet does, BN
weight 1 and bias 0, and PyTorch's default for the classifier. A learned
Gamma (Cases 1-4) starts with its per-channel factor alpha equal to the
XNOR-Net weight scale of the initial weights (Eq. 2, ``xnor_weight_scale``)
and its spatial factors at 1, so that at initialization the binary layer has
the analytic XNOR-Net magnitude rather than a ``c * k * k`` times larger one.

Resolution. Cases 2-4 have a scale per output position, so the model is
built for one ``input_size``; each layer's input size is derived from it
here with ``conv_output_size``. ``small_input=True`` replaces the 7x7/2 stem
and its max-pool by a 3x3/1 convolution, the usual adaptation for small
images (CIFAR-style), used for the embedded digits dataset.
"""

import torch.nn as nn

from ..layers import conv_output_size
from ._common import BinaryUnit, init_weights

__all__ = ["SHORTCUTS", "BasicBlock", "BinaryResNet", "binary_resnet18"]

SHORTCUTS = ("conv", "avgpool_conv", "binary")


def _shortcut(kind, in_channels, out_channels, stride, input_size, method, pad_mode, bn_affine):
    """The downsampling shortcut ``kind`` (see the module docstring): (N, c_in, H, W) -> (N, c_out, H', W')."""
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
    if kind == "avgpool_conv":
        pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        return nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
    if kind == "binary":
        unit = BinaryUnit(in_channels, out_channels, 1, stride, 0, input_size, method, pad_mode, False, bn_affine)
        return nn.Sequential(unit, nn.BatchNorm2d(out_channels))
    raise ValueError(f"unknown shortcut {kind!r}; choose from {SHORTCUTS}")


class BasicBlock(nn.Module):
    """Pre-activation basic block: ``x + unit2(unit1(x))``, each unit ``BN -> sign -> conv -> ReLU``.

    ``input_size`` is the block's input ``(H, W)``; the first convolution has
    ``stride``, the second keeps the size. See the module docstring.
    """

    def __init__(self, in_channels, out_channels, stride, input_size, method, pad_mode, shortcut="conv",
                 bn_affine=True):
        super().__init__()
        self.unit1 = BinaryUnit(in_channels, out_channels, 3, stride, 1, input_size, method, pad_mode,
                                bn_affine=bn_affine)
        self.unit2 = BinaryUnit(out_channels, out_channels, 3, 1, 1, self.unit1.output_size, method, pad_mode,
                                bn_affine=bn_affine)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _shortcut(shortcut, in_channels, out_channels, stride, input_size, method, pad_mode,
                                      bn_affine)
        self.output_size = self.unit2.output_size

    def forward(self, x):  # (N, c_in, H, W) -> (N, c_out, H / stride, W / stride)
        return self.shortcut(x) + self.unit2(self.unit1(x))


class BinaryResNet(nn.Module):
    """ResNet with ``BasicBlock`` stages; real stem and classifier. See the module docstring."""

    def __init__(self, stage_blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), method="case4",
                 num_classes=1000, input_size=224, pad_mode="zero", small_input=False, shortcut="conv",
                 bn_affine=True):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; choose from {SHORTCUTS}")
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.method, self.input_size = method, size
        if small_input:
            self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
            size = conv_output_size(size, 3, 1, 1)
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, 1))
            size = conv_output_size(conv_output_size(size, 7, 2, 3), 3, 2, 1)
        blocks, in_channels = [], widths[0]
        for stage, (n, width) in enumerate(zip(stage_blocks, widths)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                if min(size) < 1 or (stride == 2 and min(size) < 2):
                    raise ValueError(f"input_size {input_size} is too small for this network")
                block = BasicBlock(in_channels, width, stride, size, method, pad_mode, shortcut, bn_affine)
                blocks.append(block)
                size, in_channels = block.output_size, width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_channels, num_classes)
        init_weights(self)

    def forward(self, x):  # (N, 3, H, W) -> (N, num_classes)
        return self.fc(self.head(self.blocks(self.stem(x))))


def binary_resnet18(method="case4", num_classes=1000, input_size=224, pad_mode="zero", small_input=False,
                    shortcut="conv", bn_affine=True):
    """Binary ResNet-18 (four stages of two pre-activation basic blocks), Section 5.1.1."""
    return BinaryResNet((2, 2, 2, 2), (64, 128, 256, 512), method, num_classes, input_size, pad_mode,
                        small_input, shortcut, bn_affine)
