"""The binary convolution layer: a drop-in ``nn.Conv2d`` with a scale method.

Methods (``METHODS``):

- ``real``        the ordinary float convolution ``I * W``.
- ``direct``      direct binarization, ``sign(I) (*) sign(W)``, no scale (BNN).
- ``xnor``        XNOR-Net, ``(sign(I) (*) sign(W)) . K alpha`` (Eq. 2).
- ``xnor_alpha``  XNOR-Net without K, the common cheap variant: ``... . alpha``.
- ``case1`` .. ``case4``  XNOR-Net++, ``(sign(I) (*) sign(W)) . Gamma`` (Eq. 3-7).

Padding. After binarization a zero-padded border is a third value, neither
+1 nor -1. ``pad_mode`` makes the convention explicit:

- ``"zero"`` (default): binarize, then pad with 0. This is what
  ``F.conv2d(sign(I), sign(W), padding=p)`` computes, what most PyTorch
  binary-network code does, and larq's default (``pad_values=0``). Border
  positions then contribute nothing to the sum.
- ``"minus_one"``: pad the real input with 0, then binarize, so the border
  becomes ``sign(0) = -1`` by Eq. 1 and every operand stays in {-1, +1}
  (what a pure XNOR-popcount kernel computes without a correction term).

Cases 2-4 depend on the output size, so they need ``input_size`` at
construction, and an input of another spatial size is an error.

Mixed precision. Under ``torch.autocast`` the sum of ``c kh kw`` terms of +-1
(and 0 at a zero border) is computed in the autocast type only where that type
holds every such sum exactly: up to 2048 terms in float16 (11 significant
bits), 256 in bfloat16. A layer with more terms (ResNet-18's 256- and
512-channel 3x3 layers, AlexNet's fc7) sums in float32, so that mixed
precision never changes a binary convolution's output; the operands +-1 are
exact in every type, and the scale and what follows run in the autocast type.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .binarize import binarize
from .scales import FusedScale, LearnedScale, make_learned_scale, xnor_input_scale, xnor_weight_scale

__all__ = ["METHODS", "PAD_MODES", "binary_conv2d", "conv_output_size", "BinaryConv2d"]

METHODS = ("real", "direct", "xnor", "xnor_alpha", "case1", "case2", "case3", "case4")
PAD_MODES = ("zero", "minus_one")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_output_size(input_size, kernel_size, stride=1, padding=0, dilation=1):
    """``(h_out, w_out)`` of a convolution, as documented for ``nn.Conv2d``."""
    size, k, s, p, d = map(_pair, (input_size, kernel_size, stride, padding, dilation))
    return tuple((size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2))


def binary_conv2d(x, weight, stride=1, padding=0, dilation=1, groups=1, pad_mode="zero"):
    """``sign(x) (*) sign(weight)`` with the straight-through estimator, unscaled.

    ``x`` is the real input ``(N, c, H, W)``; ``weight`` the real weights
    ``(o, c, kh, kw)``. See the module docstring for ``pad_mode``.
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"unknown pad_mode {pad_mode!r}; choose from {PAD_MODES}")
    ph, pw = _pair(padding)
    if pad_mode == "zero":  # border 0, a third value: the convolution's own zero padding
        xb, pad = binarize(x), (ph, pw)
    else:
        xb, pad = binarize(F.pad(x, (pw, pw, ph, ph), value=0.0)), 0  # border sign(0) = -1
    wb = binarize(weight)
    if _inexact_under_autocast(x.device.type, weight[0].numel()):
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(xb.float(), wb.float(), None, stride, pad, dilation, groups)
    return F.conv2d(xb, wb, None, stride, pad, dilation, groups)


def _inexact_under_autocast(device_type, terms):
    """Whether autocast is on for ``device_type`` with a type that cannot hold every integer up to ``terms``
    (float16: 2048 = 2 / eps, bfloat16: 256), i.e. could round a sum of ``terms`` values +-1. Never on the meta
    device (shapes only; torch has no autocast there)."""
    return device_type != "meta" and torch.is_autocast_enabled(device_type) and terms > 2 / torch.finfo(
        torch.get_autocast_dtype(device_type)).eps


class BinaryConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose forward binarizes input and weights and applies a scale.

    Extra keywords: ``method`` (one of ``METHODS``), ``input_size`` (the input's
    ``(H, W)``; required for ``case2``-``case4``) and ``pad_mode`` (``"zero"`` or
    ``"minus_one"``). ``fuse()`` merges a learned Gamma into one stored tensor.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=False, padding_mode="zeros", device=None, dtype=None, *,
                 method="case1", input_size=None, pad_mode="zero"):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"unknown pad_mode {pad_mode!r}; choose from {PAD_MODES}")
        if method != "real" and (isinstance(padding, str) or padding_mode != "zeros"):
            raise ValueError("binary convolutions take integer padding with padding_mode='zeros'")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, device, dtype)
        self.method, self.pad_mode = method, pad_mode
        self.input_size = None if input_size is None else _pair(input_size)
        self.out_size = None
        if self.input_size is not None:
            self.out_size = conv_output_size(self.input_size, self.kernel_size, self.stride,
                                             self.padding, self.dilation)
        self.scale = None
        if method.startswith("case"):
            if method != "case1" and self.out_size is None:
                raise ValueError(f"method {method!r} needs input_size to shape its scale")
            self.scale = make_learned_scale(method, out_channels, self.out_size)

    def forward(self, x):
        if self.method == "real":
            return super().forward(x)
        if self.scale is not None and self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"{self.method} layer was built for {self.input_size[0]}x{self.input_size[1]} "
                             f"inputs, got {x.shape[-2]}x{x.shape[-1]}")
        y = binary_conv2d(x, self.weight, self.stride, self.padding, self.dilation, self.groups,
                          self.pad_mode)  # (N, o, h_out, w_out)
        if self.method == "xnor_alpha":
            y = y * xnor_weight_scale(self.weight)[:, None, None]
        elif self.method == "xnor":
            k = xnor_input_scale(x, self.kernel_size, self.stride, self.padding, self.dilation)
            y = y * xnor_weight_scale(self.weight)[:, None, None] * k
        elif self.scale is not None:
            y = y * self.scale()
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y

    @torch.no_grad()
    def fuse(self):
        """Replace a learned Gamma by its single fused tensor (inference form)."""
        if isinstance(self.scale, LearnedScale):
            self.scale = FusedScale(self.scale.fused())
        return self

    def extra_repr(self):
        return super().extra_repr() + f", method={self.method}, pad_mode={self.pad_mode}, input_size={self.input_size}"
