"""What the model families share: the BN -> sign -> binary conv (-> ReLU) unit, initialization, and
the weight constraint of XNOR-Net's training code."""

import torch
import torch.nn as nn

from ..layers import BinaryConv2d, conv_output_size
from ..scales import LearnedScale, xnor_weight_scale

__all__ = ["BinaryUnit", "init_weights", "center_and_clamp_weights_"]


class BinaryUnit(nn.Sequential):
    """``BN -> sign -> binary conv (times its scale) -> ReLU``, the paper's layer (Section 5.1.1).

    The sign (Eq. 1, straight-through estimator) and the scale (Eq. 2-7) are
    inside ``BinaryConv2d``; with ``method="real"`` it is ``BN -> conv -> ReLU``.
    ``relu=False`` leaves the ReLU out (an ``nn.Identity`` in its place), as in
    XNOR-Net's AlexNet, where the next unit's BN -> sign follows directly.
    ``bn_affine=False`` gives the BN no learned scale and shift.
    ``input_size`` is the input's ``(H, W)``; ``output_size`` the result's.
    No conv bias: the scale and the next BN make it redundant.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, input_size, method, pad_mode,
                 relu=True, bn_affine=True):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels, affine=bn_affine)
        self.conv = BinaryConv2d(in_channels, out_channels, kernel_size, stride, padding, method=method,
                                 input_size=input_size, pad_mode=pad_mode)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.output_size = conv_output_size(input_size, kernel_size, stride, padding)


@torch.no_grad()
def init_weights(model):
    """He et al. (ICCV 2015) normal init, ``fan_out`` mode, for every convolution (zero biases);
    BN weight 1, bias 0 (when it has them); linear layers keep PyTorch's default.

    A learned Gamma's per-channel factor alpha (Eq. 4-7) starts at the XNOR-Net
    weight scale of the initial weights (Eq. 2), its spatial factors at 1.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, BinaryConv2d) and isinstance(m.scale, LearnedScale):
                m.scale.alpha.mul_(xnor_weight_scale(m.weight)[:, None, None])  # (o, 1, 1) or (o, h, w)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def center_and_clamp_weights_(model):
    """XNOR-Net's weight constraint, in place, on the real weights of every binary convolution::

        W <- clamp(W - mean_c(W), -1, 1)      mean_c over the input channels: (o, 1, kh, kw)

    XNOR-Net's training code applies it before every training step (then
    binarizes); the real layers (``method="real"`` and the real first and last
    layers) are left alone. Returns ``model``.
    """
    for m in model.modules():
        if isinstance(m, BinaryConv2d) and m.method != "real":
            w = m.weight  # (o, c, kh, kw)
            w.sub_(w.mean(dim=1, keepdim=True)).clamp_(-1.0, 1.0)
    return model
