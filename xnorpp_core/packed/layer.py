"""The packed binary convolution (Section 4.3): weights stored as bits, exact integer counts.

Signs are stored one bit each (bit 1 for +1, bit 0 for -1, Eq. 1), 64 input
channels per 64-bit word, the words innermost: a packed input is
``(N, H + 2 p_h, W + 2 p_w, cw)`` words, ``cw = ceil(c / 64)``, and packed
weights are ``(o, kh, kw, cw)`` words. For two sign vectors ``a, b`` of length
``n``, ``sum_i a_i b_i = n - 2 popcount(a xor b)``, so each output of the binary
convolution of Eq. 3 is::

    y[o, p] = (c kh kw - 2 sum_{taps, words} popcount(a xor b) + corr[o, p]) * Gamma[o, p]

an exact integer count, then one multiply per output (the accounting of Eq. 9).
The unused high bits of the last word are 0 in both operands, so their xor is
0 and ``c`` need not be a multiple of 64.

Padding (``layers.PAD_MODES``). The packed border is 0 words, i.e. sign -1:

- ``"minus_one"``: this is the convention itself, ``corr = 0``.
- ``"zero"``: a border tap must contribute 0, not ``-sum_c sign(W[o, c, tap])``,
  so ``corr[o, p] = sum_{taps of p that fall in the border} S[o, tap]`` with
  ``S[o, tap] = sum_c sign(W[o, c, tap]) = 2 popcount(w[o, tap]) - c``. It
  depends only on the weights and the input size, and is computed once per
  input size from the packed weights.

Which kernel computes the counts is ``backend``'s choice (``BACKENDS``).

(``models.fuse_model``) and replaces each ``BinaryConv2d`` by its packed form
(layer by layer, float activations in between); ``storage_bytes`` counts what
the model stores, by kind of tensor. The whole-network engine, which folds
each ``BN -> sign`` into an integer threshold and passes packed bits from one
binary layer to the next, is ``network.PackedNetwork``; the shippable model
file is ``model_file``.

Supported layers: ``BinaryConv2d`` with method ``direct`` (no scale),
``xnor_alpha`` (Gamma = alpha, Eq. 2 without K) and the learned ``case1`` ..
``case4`` (their fused Gamma), either pad mode, any stride and padding, with or
without bias. Not supported: ``xnor`` (its K of Eq. 2 is recomputed from each
real-valued input, which a packed input no longer has), ``real``, ``groups > 1``
and ``dilation > 1``.
"""

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import BinaryConv2d, conv_output_size
from ..models import fuse_model
from ..scales import Case3Scale, Case4Scale, FusedScale, LearnedScale, xnor_weight_scale
from .backend import _compiled, backend_info
from .numpy_kernels import conv_numpy, pack_numpy, popcount

__all__ = ["SUPPORTED_METHODS", "pack_signs", "pack_weight", "kernel_weights", "amx_weights", "amx_capable",
           "PackedBinaryConv2d", "pack_model", "storage_bytes"]

SUPPORTED_METHODS = ("direct", "xnor_alpha", "case1", "case2", "case3", "case4")

def pack_signs(x, padding=0, backend=None):
    """Pack ``sign(x)`` (Eq. 1) of ``x`` ``(N, c, H, W)`` into ``(N, H + 2 p_h, W + 2 p_w, cw)`` int64 words.

    Bit ``b`` of word ``k`` is channel ``64 k + b``: 1 for ``x > 0`` (+1), 0 otherwise
    (-1, so ``sign(0) = -1``); the border words are 0 (-1). Any memory format.
    """
    if x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError(f"pack_signs takes a float32 CPU tensor (N, c, H, W), got {tuple(x.shape)} {x.dtype} "
                         f"on {x.device}")
    ph, pw = (padding, padding) if isinstance(padding, int) else tuple(padding)
    x, info = x.detach(), backend_info(backend)
    if info.name == "numpy":
        return pack_numpy(x, ph, pw)
    return info.kernel.pack_signs(x, ph, pw, None, None, info.simd)


def pack_weight(weight, backend=None):
    """Pack ``sign(weight)`` ``(o, c, kh, kw)`` into ``(o, kh, kw, cw)`` int64 words (layout of ``pack_signs``)."""
    return pack_signs(weight.detach().float(), 0, backend)  # (o, kh, kw, cw): kh, kw play H, W


def kernel_weights(weight_bits):
    """The compiled kernel's weight operand: ``(o_pad / tile, kh kw cw, tile)`` words, for each tile of the
    kernel's output channels its rows (tap, word) one after another, channels innermost (one contiguous block
    per tile), zero-padded to a multiple of the tile."""
    o = weight_bits.shape[0]
    tile = _compiled()[0].tile_out_channels
    wt = F.pad(weight_bits.reshape(o, -1).t(), (0, -(-o // tile) * tile - o))  # (K, o_pad)
    return wt.reshape(wt.shape[0], -1, tile).permute(1, 0, 2).contiguous()


def amx_weights(weight_bits, channels, masks=None):
    """The int8 tile kernel's weight operand (``csrc/packed_conv.cpp``, ``amx_conv``) from packed weights
    ``(o, kh, kw, cw)``: signs as +1 / -1 bytes, 0 for the unused channels and outputs; per tap, block of 64
    channels and 16 outputs, a 16 x 64 byte tile whose row ``r`` holds channels ``4 r .. 4 r + 3`` output by
    output; ``(o_pad / 32, kh kw, cw, 2, 16, 16, 4)``, each 32 outputs' tiles in the kernel's reading order.
    With ``masks`` (the default for a multiple of 64 channels), each 64-byte row as a 64-bit mask instead
    (``(o_pad / 32, kh kw, cw, 2, 16)`` int64), which the kernel expands: 8 times less memory to read."""
    masks = channels % 64 == 0 if masks is None else masks
    if masks and channels % 64:
        raise ValueError(f"row masks need a multiple of 64 channels (they have no zero weights), got {channels}")
    o, kh, kw, cw = weight_bits.shape
    o_pad = -(-o // 32) * 32
    bits = (weight_bits[..., None] >> torch.arange(64)) & 1  # (o, kh, kw, cw, 64)
    w8 = (2 * bits - 1).to(torch.int8).reshape(o, kh * kw, 64 * cw)
    w8[..., channels:] = 0
    w8 = F.pad(w8, (0, 0, 0, 0, 0, o_pad - o))  # (o_pad, taps, cp)
    w8 = w8.reshape(o_pad // 32, 2, 16, kh * kw, cw, 16, 4)  # (pair, half, output, tap, block, row, byte)
    w8 = w8.permute(0, 3, 4, 1, 5, 2, 6).contiguous()
    if not masks:
        return w8
    bits = (w8.reshape(-1, 64) > 0).long()  # row masks: bit j = byte j is +1
    words = (bits << torch.arange(64)).sum(-1)  # wraps into the sign bit for j = 63, as int64 does
    return words.reshape(*w8.shape[:-3], 16).contiguous()


@torch.no_grad()
def _gamma_factors(scale, gamma):
    """Cases 3-4: ``(alpha (1, o), beta (P,) or (h_out,), gamma (w_out,) or None)``, from which the int8 tile
    kernel recomputes each element of the fused ``gamma`` ``(P, o)`` with the same products in the same order
    (so it need not read the dense tensor); None when not a Case 3-4 scale or the products differ."""
    if not isinstance(scale, (Case3Scale, Case4Scale)) or scale.batch or gamma is None or gamma.shape[0] == 1:
        return None
    o, (h, w) = scale.out_channels, scale.out_size
    alpha, beta = scale.alpha.detach().float(), scale.beta.detach().float()  # (o, 1, 1); (1, h, w) or (1, h, 1)
    dense = alpha * beta
    x = None
    if isinstance(scale, Case4Scale):
        x = scale.gamma.detach().float()  # (1, 1, w)
        dense = dense * x
        x = x.reshape(w).contiguous()
    if not torch.equal(dense.reshape(o, h * w).t(), gamma):
        return None
    return alpha.reshape(1, o).contiguous(), beta.reshape(-1).contiguous(), x


def amx_capable(stride):
    """Whether the int8 tile kernel takes a layer of this stride (equal strides of 1 or 2)."""
    return stride[0] == stride[1] and stride[0] in (1, 2)


def _sign_sums(wbits, channels):
    """``S[o, tap] = sum_c sign(W[o, c, tap]) = 2 popcount(w[o, tap]) - c`` from the packed weights."""
    ones = popcount(wbits.numpy().view(np.uint64)).sum(-1).astype(np.int64)  # (o, kh, kw)
    return torch.from_numpy(2 * ones - channels)


class PackedBinaryConv2d(nn.Module):
    """Inference-only bit-packed form of a ``BinaryConv2d`` (see the module docstring).

    Stores ``weight_bits`` ``(o, kh, kw, cw)`` int64 (one bit per binary weight),
    the fused Gamma as ``gamma`` ``(1 or h_out w_out, o)`` float32 (absent for
    ``direct``) and the bias, if any. ``forward(x)`` takes a real input
    ``(N, c, H, W)``, packs its signs and returns ``(N, o, h_out, w_out)`` in
    channels-last memory format, equal to the layer's float emulation.
    ``input_size``, when given, is the only input size accepted (a learned
    Gamma of a layer built for that size, as ``BinaryConv2d`` checks).
    ``forward`` is ``forward_packed(pack_input(x), size)``: words of bits, or
    sign bytes where the backend runs the AMX int8 tiles (``amx``).
    """

    def __init__(self, weight_bits, channels, stride, padding, pad_mode, gamma=None, bias=None,
                 input_size=None, backend=None):
        super().__init__()
        self.register_buffer("weight_bits", weight_bits)
        self.register_buffer("gamma", gamma)
        self.register_buffer("bias", bias)
        self.channels, self.stride, self.padding, self.pad_mode = channels, stride, padding, pad_mode
        self.out_channels, self.kernel_size = weight_bits.shape[0], tuple(weight_bits.shape[1:3])
        self.input_size = input_size
        self.backend = backend_info(backend)
        self.amx = self.backend.amx and amx_capable(stride)
        self.gamma_factors = None  # set by from_binary_conv for Cases 3-4 (_gamma_factors)
        self._corr, self._kernel_weight, self._out_sizes = {}, None, {}

    def _cache_key(self):
        """Caches derived from the weight bits are keyed on the tensor and its version (in-place edits)."""
        return self.weight_bits.data_ptr(), self.weight_bits._version

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._corr, self._kernel_weight = {}, None  # derived from the old weights
        self.gamma_factors = None  # the loaded gamma is used as it is

    @classmethod
    @torch.no_grad()
    def from_binary_conv(cls, layer, backend=None):
        """The packed form of ``layer`` (left unchanged); its learned Gamma fused by ``BinaryConv2d.fuse``."""
        if not isinstance(layer, BinaryConv2d):
            raise TypeError(f"expected a BinaryConv2d, got {type(layer).__name__}")
        if layer.method not in SUPPORTED_METHODS:
            why = ("its K (Eq. 2) is recomputed from each real-valued input"
                   if layer.method == "xnor" else "it is not binary")
            raise ValueError(f"method {layer.method!r} has no packed form: {why}; supported: {SUPPORTED_METHODS}")
        if layer.groups != 1 or layer.dilation != (1, 1):
            raise ValueError("the packed kernel supports groups=1 and dilation=1 only")
        o = layer.out_channels
        gamma = None
        if layer.method == "xnor_alpha":
            gamma = xnor_weight_scale(layer.weight).reshape(1, o)  # (1, o)
        elif layer.scale is not None:
            fused = copy.deepcopy(layer).fuse().scale()  # (o, 1, 1) or (o, h_out, w_out)
            gamma = fused.reshape(o, -1).t()  # (1 or h_out w_out, o)
        if gamma is not None and bool((gamma == gamma[:1]).all()):
            gamma = gamma[:1]  # spatially constant (Case 1, xnor_alpha): store it once per channel
        gamma = None if gamma is None else gamma.detach().float().contiguous()
        fixed_size = layer.input_size if layer.scale is not None else None  # as BinaryConv2d.forward checks
        bias = None if layer.bias is None else layer.bias.detach().float().clone()
        packed = cls(pack_weight(layer.weight, backend), layer.in_channels, layer.stride, layer.padding,
                     layer.pad_mode, gamma, bias, fixed_size, backend)
        packed.gamma_factors = _gamma_factors(layer.scale, gamma)
        return packed

    def extra_repr(self):
        return (f"{self.channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, pad_mode={self.pad_mode}, backend={self.backend.name}")

    def out_size(self, input_size):
        """``(h_out, w_out)`` for ``input_size``; ``ValueError`` when the input is smaller than the kernel."""
        out = self._out_sizes.get(tuple(input_size))
        if out is None:
            out = conv_output_size(input_size, self.kernel_size, self.stride, self.padding)
            if min(out) < 1:
                raise ValueError(f"input {input_size[0]}x{input_size[1]} is smaller than the {self.kernel_size[0]}x"
                                 f"{self.kernel_size[1]} kernel with padding {self.padding}: no output")
            self._out_sizes[tuple(input_size)] = out
        return out

    def _correction(self, input_size):
        """``corr`` ``(h_out w_out, o)`` int32 for pad_mode "zero" (module docstring), per input size."""
        return self._corrections(tuple(input_size))[0]

    def correction_table(self, input_size):
        """``corr`` for the compiled kernel: ``(table (R, C, o), rows (h_out,), cols (w_out,))`` int32 with
        ``corr[y w_out + x] = table[rows[y], cols[x]]``, one table row (column) per set of window rows (columns)
        that fall in the border; ``(None, None, None)`` when there is no correction."""
        return self._corrections(tuple(input_size))[1]

    def _corrections(self, input_size):
        """``(corr, correction table)`` for ``input_size``, computed once per weights and input size."""
        if self.pad_mode != "zero" or self.padding == (0, 0):
            return None, (None, None, None)
        key = (self._cache_key(), input_size)
        if key not in self._corr:
            (h, w), (ph, pw) = input_size, self.padding
            border = torch.ones(1, 1, h + 2 * ph, w + 2 * pw, dtype=torch.float64)
            border[..., ph:ph + h, pw:pw + w] = 0
            s = _sign_sums(self.weight_bits, self.channels).to(torch.float64)[:, None]  # (o, 1, kh, kw)
            corr = F.conv2d(border, s, stride=self.stride)[0]  # (o, h_out, w_out), exact integers
            corr = corr.flatten(1).t().round().to(torch.int32).contiguous()
            self._corr = {k: v for k, v in self._corr.items() if k[0] == key[0]}  # drop the old weights' entries
            self._corr[key] = corr, self._table(corr, input_size)
        return self._corr[key]

    def _table(self, corr, input_size):
        """The correction table of ``correction_table`` from the dense ``corr``."""
        (h, w), (ph, pw) = input_size, self.padding
        (h_out, w_out), (kh, kw), (sh, sw) = self.out_size(input_size), self.kernel_size, self.stride

        def kinds(n_out, k, s, p, n):  # per output row (column): an id of the set of its window's border taps
            sets = [tuple(i for i in range(k) if not p <= o * s + i < p + n) for o in range(n_out)]
            ids = {v: i for i, v in enumerate(dict.fromkeys(sets))}
            return torch.tensor([ids[v] for v in sets], dtype=torch.int32), [sets.index(v) for v in ids]

        rows, row_of = kinds(h_out, kh, sh, ph, h)
        cols, col_of = kinds(w_out, kw, sw, pw, w)
        dense = corr.view(h_out, w_out, -1)
        table = dense[row_of][:, col_of].contiguous()  # (R, C, o): a representative pixel of each kind
        assert torch.equal(table[rows.long()][:, cols.long()], dense), "border correction not separable by kind"
        return table, rows, cols

    def _kernel_weights(self):
        """The compiled kernel's operand: ``kernel_weights``, or the int8 tiles' weights (``amx_weights``)."""
        key = self._cache_key(), self.amx
        if self._kernel_weight is None or self._kernel_weight[0] != key:
            w = amx_weights(self.weight_bits, self.channels) if self.amx else kernel_weights(self.weight_bits)
            self._kernel_weight = key, w
        return self._kernel_weight[1]

    @torch.no_grad()
    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected input (N, {self.channels}, H, W), got {tuple(x.shape)}")
        size = tuple(x.shape[-2:])
        if self.input_size is not None and size != self.input_size:
            raise ValueError(f"layer was built for {self.input_size[0]}x{self.input_size[1]} inputs, "
                             f"got {size[0]}x{size[1]}")
        self.out_size(size)  # an input smaller than the kernel is an error before any work
        return self.forward_packed(self.pack_input(x), size)

    def pack_input(self, x):
        """The packed form of ``sign(x)`` ``(N, c, H, W)`` with this layer's padding: ``pack_signs``'s words,
        or sign bytes ``(N Hp Wp + tail, cp)`` int8 for the AMX int8 tiles."""
        if self.amx:
            return self.backend.kernel.pack_signs_i8(x.detach(), *self.padding, None, None, self.border)
        return pack_signs(x, self.padding, self.backend.name)

    def gamma_operands(self):
        """``(gamma, gamma_y, gamma_x)`` as the compiled kernels (``packed_conv``, ``amx_conv``) take them: the
        factors of Cases 3-4, else the fused ``gamma`` alone."""
        if self.gamma_factors is not None:
            return self.gamma_factors
        return self.gamma, None, None

    @property
    def border(self):
        """The value of the int8 tiles' border: the padding itself (0 for pad_mode "zero", else -1)."""
        return 0 if self.pad_mode == "zero" else -1

    def forward_packed(self, xb, input_size):
        """The convolution of an already packed input ``xb`` (``pack_input``)."""
        h_out, w_out = self.out_size(input_size)
        if self.amx:  # the border holds the padding: no correction
            k, (h, w), (ph, pw) = self.backend.kernel, input_size, self.padding
            hp, wp = h + 2 * ph, w + 2 * pw
            y = k.amx_conv(xb, self._kernel_weights(), (xb.shape[0] - k.amx_tail_rows) // (hp * wp), hp, wp,
                           self.channels, self.out_channels, *self.kernel_size, *self.stride, h_out, w_out,
                           *self.gamma_operands(), False, None, None, None, False, None, None, 0, 0, -1,
                           True)[0]  # (N, P, o)
        elif self.backend.name == "numpy":
            corr = self._correction(tuple(input_size))
            y = conv_numpy(xb, self.weight_bits, self.channels, self.stride, (h_out, w_out), corr, self.gamma)
        else:
            y = self.backend.kernel.packed_conv(xb, self._kernel_weights(), self.channels, self.out_channels,
                                                *self.kernel_size, *self.stride, h_out, w_out,
                                                *self.correction_table(input_size), *self.gamma_operands(), False, None,
                                                None, None, False, None, None, 0, 0, True,
                                                self.backend.simd)[0]  # (N, P, o)
        y = y.view(y.shape[0], h_out, w_out, self.out_channels).permute(0, 3, 1, 2)  # (N, o, h_out, w_out)
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        return y


# ------------------------------------------------------------------ whole models

@torch.no_grad()
def pack_model(model, backend=None):
    """An inference copy of ``model`` (in eval mode): learned Gammas fused, every ``BinaryConv2d`` packed.

    The copy's binary weights are stored only as ``weight_bits``; its other
    layers (real stem, classifier, shortcuts, BN) are those of ``model``.
    Raises ``ValueError`` for a binary layer without a packed form (``xnor``).
    """
    model = fuse_model(copy.deepcopy(model)).eval()
    info = backend_info(backend)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, BinaryConv2d) and child.method != "real":
                setattr(module, name, PackedBinaryConv2d.from_binary_conv(child, info.name))
    return model


def storage_bytes(model):
    """Bytes of ``model``'s state (parameters and persistent buffers), by kind.

    Keys: ``binary_weights`` (weights of binary convolutions: float in a
    ``BinaryConv2d``, bits in a ``PackedBinaryConv2d``), ``scales`` (Gamma,
    learned or fused, and ``xnor_alpha``'s alpha), ``other`` (real layers, BN,
    biases), and ``total``.
    """
    sizes = dict.fromkeys(("binary_weights", "scales", "other"), 0)
    for module in model.modules():
        binary = isinstance(module, PackedBinaryConv2d) or (
            isinstance(module, BinaryConv2d) and module.method != "real")
        buffers = [(n, b) for n, b in module.named_buffers(recurse=False)
                   if n not in module._non_persistent_buffers_set]
        for name, tensor in [*module.named_parameters(recurse=False), *buffers]:
            if binary and name in ("weight", "weight_bits"):
                kind = "binary_weights"
            elif isinstance(module, (LearnedScale, FusedScale)) or (binary and name == "gamma"):
                kind = "scales"
            else:
                kind = "other"
            sizes[kind] += tensor.numel() * tensor.element_size()
    sizes["total"] = sum(sizes.values())
    return sizes
