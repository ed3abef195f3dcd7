"""The whole binary network on packed signs: thresholds instead of BN -> sign, fused epilogues.

A binary layer of our models reads ``sign(BN(z))`` (Eq. 1 after a batch norm)
and writes ``y = count . Gamma`` (Eq. 3), where ``count`` is the exact integer
XNOR-popcount sum (or the same sum from int8 tiles where the backend runs them,
``backend_info().amx``: then every binary layer passes sign bytes, all or none).
``PackedNetwork`` runs a model's graph (``torch.fx``, read generically: any
order of layers) with these rewrites:

1. **Threshold folding.** When a binary layer's output reaches the next binary
   layer only through per-channel monotone layers (``ReLU``, eval ``BatchNorm2d``,
   ``Dropout``, ``Identity``), the next layer's input bit is
   ``f(count) > 0`` with ``f`` monotone in the integer ``count``; so it is
   ``count >= T`` or ``count <= T`` (or a constant) for an integer ``T`` per
   output element (per channel when Gamma is). The kernel then writes packed
   bits straight away (``packed_conv_bits``): no float output, no sign or
   packing pass. ``T`` is found by bisection on the integers, evaluating ``f``
   with the very torch modules of the float network, so the bit equals the
   emulation's ``sign`` wherever torch computes each element the same way
   (its vectorised kernels do). Negative Gamma or BN weight turns
   ``>=`` into ``<=``; ``sign(0) = -1`` is kept (``f(count) = 0`` gives bit 0).
   A Gamma per element (and, on bits, a border correction) is instead applied
   in the kernel, whose float ``count . Gamma`` is then compared with the
   per-channel float threshold of item 2 (``signs_only``): no threshold per
   element to read.
2. **Float thresholds.** A float activation ``x`` read through such layers
   (a block's input, through its BN) is packed as ``bit = s x > t`` with
   ``s = +-1`` and a float ``t`` per channel, found by bisection over the
   float32 numbers: one pass, no BN output.
   With a compiled kernel the layer producing ``x`` packs it in its own
   output loop (``emit``), and so does a ``ReLU -> MaxPool2d`` run as one
   pass (``_Pool``, the stem's).
3. **Fused epilogues.** A binary layer whose float output goes to a ``ReLU``
   and then to a residual addition does both in the kernel's output loop, with
   the Gamma of Cases 3-4 recomputed from its factors; and writes the result over
   the residual when no later step reads it (``_plan_in_place``).
4. **The head.** A batch norm whose sign no binary layer reads is ``x * scale +
   shift`` per channel (``_ChannelAffine``), and global average pooling with its
   flattening a mean summed in a stated order (``_GlobalMean``), in the emulation
   too; after the last binary layer the first runs in its epilogue with its ReLU,
   the second as one compiled pass (``_Mean``).

Real layers (stem, shortcuts, classifier) run as torch modules, channels-last,
with every real convolution's following BN folded into its weights and strided
1x1 convolutions run on the pixels they read (``fused_emulation``); with
``real_layers="int8"`` they run in int8 (``int8``): the shortcuts and the
classifier by the compiled ``int8_gemm`` (``_Gemm``), the stem by ``int8_conv``
with its ReLU, max pooling and the next layer's packing in one pass (``_Int8Conv``).
``fused_emulation(model)`` is also the reference: the
float-emulated network with the same foldings, whose logits the packed network
reproduces (``torch.equal``) when no threshold decision differs from torch's
own rounding.
"""

import contextlib
import copy
import functools
import io
import operator
import time

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..layers import BinaryConv2d
from ..limits import SIDE
from ..models import fuse_model
from .backend import backend_info
from .int8 import Int8Conv, Int8Gemm, quantize_real_layers, restore_real_layers
from .layer import PackedBinaryConv2d, _gamma_factors, amx_capable
from .numpy_kernels import conv_numpy, pack_numpy

__all__ = ["CATEGORIES", "REAL_LAYERS", "fused_emulation", "PackedNetwork", "count_thresholds", "float_thresholds"]

CATEGORIES = ("stem", "binary_convs", "packing", "shortcuts", "glue", "classifier")
REAL_LAYERS = ("float", "int8")  # the real layers' arithmetic: float32, or int8 (``int8.quantize_real_layers``)
_MONOTONE = (nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Identity)
_FLT_MAX = float(np.finfo(np.float32).max)


class _Tracer(fx.Tracer):
    """``torch.fx`` tracer that keeps each ``BinaryConv2d`` as one node."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, BinaryConv2d) or super().is_leaf_module(m, qualname)


def _trace(model):
    return fx.GraphModule(model, _Tracer().trace(model))


def _is_real_conv(m):
    return type(m) is nn.Conv2d or (isinstance(m, BinaryConv2d) and m.method == "real")


class _Subsampled(nn.Conv2d):
    """A strided 1x1 convolution (no padding) as a stride-1 one on every ``step``-th pixel: the same products
    and sums."""

    def __init__(self, conv):
        super().__init__(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None)
        self.step, self.weight, self.bias = conv.stride, conv.weight, conv.bias

    def forward(self, x):
        x = x[:, :, ::self.step[0], ::self.step[1]].contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def _subsampling(m):
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride != (1, 1) and m.padding == (0, 0)
            and m.groups == 1 and m.dilation == (1, 1))


class _ChannelAffine(nn.Module):
    """An eval ``BatchNorm2d`` whose output no binary layer reads (a network's last one, before its classifier), as
    ``x * scale + shift`` per channel: a multiply, then an add, each rounded, as the kernels compute it when they
    apply it in a binary layer's epilogue."""

    def __init__(self, bn):
        super().__init__()
        weight = bn.weight.double() if bn.affine else torch.ones(bn.num_features, dtype=torch.float64)
        bias = bn.bias.double() if bn.affine else torch.zeros(bn.num_features, dtype=torch.float64)
        scale = weight / torch.sqrt(bn.running_var.double() + bn.eps)
        self.register_buffer("scale", scale.float().contiguous())
        self.register_buffer("shift", (bias - bn.running_mean.double() * scale).float().contiguous())

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


class _GlobalMean(nn.Module):
    """``AdaptiveAvgPool2d(1)`` then ``Flatten()``: (N, C, H, W) -> (N, C), each channel's pixels summed in order (row
    by row) from the first, then divided by their number, as the kernel ``channel_mean`` sums them."""

    def forward(self, x):
        flat = x.flatten(2)
        total = flat[:, :, 0]
        for p in range(1, flat.shape[2]):
            total = total + flat[:, :, p]
        return total / flat.shape[2]


def _global_pooling(node, modules):
    """The ``Flatten`` node after ``node`` when ``node`` is a global average pooling followed by one, else None."""
    m = modules.get(node.target) if node.op == "call_module" else None
    if not isinstance(m, nn.AdaptiveAvgPool2d) or m.output_size not in (1, (1, 1)) or len(node.users) != 1:
        return None
    user = next(iter(node.users))
    f = modules.get(user.target) if user.op == "call_module" else None
    return user if isinstance(f, nn.Flatten) and f.start_dim == 1 and f.end_dim == -1 else None


def _replace(gm, target, module):
    """Puts ``module`` in place of the submodule ``target`` of ``gm``."""
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _reaches_binary(node, modules):
    """Whether ``node``'s output reaches a binary layer through single-user monotone layers (its sign is read)."""
    while len(node.users) == 1:
        node = next(iter(node.users))
        m = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(m, BinaryConv2d) and m.method != "real":
            return True
        if not isinstance(m, _MONOTONE):
            return False
    return len(node.users) > 1


_NON_FINITE = "the packed network and its emulation take finite inputs only"


def _non_finite(err):
    """The int8 stem's one ``ValueError``, "x holds N NaN or infinite values" (counted by the pass that quantizes
    its input), as ``_check_finite`` words it."""
    return ValueError(f"{err}; {_NON_FINITE}")


def _check_finite(x):
    """``ValueError`` when ``x`` holds a NaN or an infinity: the packed network and its emulation refuse them alike
    (a sign bit has no NaN, and a NaN or an infinity reaches the logits by paths the two do not share)."""
    if bool(torch.isfinite(x.sum())):  # a finite sum has no NaN or infinity in it (the cheap test of every call)
        return
    bad = x.numel() - int(torch.isfinite(x).sum())
    if bad:
        raise ValueError(f"x holds {bad} NaN or infinite values; {_NON_FINITE}")


class _ChannelsLast(nn.Module):
    """Runs ``graph`` on a channels-last copy of the input (finite: ``_check_finite``, except in a
    ``torch.compile`` of it; an empty batch gives an empty result)."""

    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def forward(self, x):
        if not torch.compiler.is_compiling():  # a compiled copy (a real network's baseline form) runs as traced
            _check_finite(x)
        if x.shape[0] == 0:  # an empty batch: an empty result of the logits' shape (one zero input's, sliced)
            return self.graph(x.new_zeros((1, *x.shape[1:])).contiguous(memory_format=torch.channels_last))[:0]
        return self.graph(x.contiguous(memory_format=torch.channels_last))


@torch.no_grad()
def fused_emulation(model, real_layers="float", calibration=None, int8_state=None):
    """The fused float-emulated network: an eval copy of ``model`` with learned Gammas fused, each real
    convolution's following ``BatchNorm2d`` folded into it, each strided 1x1 real convolution run on the
    pixels it reads (``_Subsampled``), in channels-last memory format (binary layers keep their weights'
    layout). In a binary network (one with a binary layer, which the packed network runs) also every other
    batch norm that no binary layer reads as a multiply and add (``_ChannelAffine``), and global average
    pooling with its flattening as ``_GlobalMean``, as the packed network computes them.

    ``real_layers="int8"``: the real convolutions and linear layers then run in int8 (``int8``), their ranges
    observed on ``calibration`` (inputs ``(n, c, H, W)``), or rebuilt from ``int8_state`` (``{name: state}`` of
    ``int8.real_layer_states``, as a model file stores them; ``int8.Int8StateError`` when it does not fit): one
    of the two, required then.
    """
    if real_layers not in REAL_LAYERS:
        raise ValueError(f"real_layers must be one of {REAL_LAYERS}, got {real_layers!r}")
    if real_layers == "int8" and (calibration is None) == (int8_state is None):
        raise ValueError("real_layers='int8' needs calibration inputs or int8 states (one of the two)")
    if real_layers == "float" and (calibration is not None or int8_state is not None):
        raise ValueError("calibration inputs and int8 states are for real_layers='int8'")
    gm = _trace(fuse_model(copy.deepcopy(model)).eval())
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and type(modules[node.target]) is nn.BatchNorm2d:
            prev = node.args[0]
            if (isinstance(prev, fx.Node) and prev.op == "call_module" and _is_real_conv(modules[prev.target])
                    and len(prev.users) == 1 and modules[node.target].running_mean is not None):
                _replace(gm, prev.target, fuse_conv_bn_eval(modules[prev.target], modules[node.target]))
                node.replace_all_uses_with(prev)
                gm.graph.erase_node(node)
    if any(isinstance(m, BinaryConv2d) and m.method != "real" for m in modules.values()):  # a binary network
        for node in list(gm.graph.nodes):
            m = modules.get(node.target) if node.op == "call_module" else None
            flatten = _global_pooling(node, modules)
            if type(m) is nn.BatchNorm2d and m.running_mean is not None and not _reaches_binary(node, modules):
                _replace(gm, node.target, _ChannelAffine(m))  # a batch norm whose sign no binary layer reads
            elif flatten is not None:  # global average pooling and flattening: a sum in a stated order
                _replace(gm, node.target, _GlobalMean())
                flatten.replace_all_uses_with(node)
                gm.graph.erase_node(flatten)
    for name, m in list(gm.named_modules()):
        if _subsampling(m):
            _replace(gm, name, _Subsampled(m))
    gm.graph.lint()
    gm.recompile()
    gm = gm.to(memory_format=torch.channels_last)
    for m in gm.modules():  # binary weights as trained: xnor_alpha's mean |W| then sums in the model's order
        if isinstance(m, BinaryConv2d) and m.method != "real":
            m.weight.data = m.weight.data.contiguous()
    is_real = lambda m: type(m) in (nn.Conv2d, _Subsampled, nn.Linear)  # noqa: E731
    if int8_state is not None:
        restore_real_layers(gm, int8_state, is_real)
    elif real_layers == "int8":
        quantize_real_layers(gm, calibration, is_real)
    return _ChannelsLast(gm).eval()


# ------------------------------------------------------------------ thresholds

def _bisect(bit, lo, hi, step):
    """Per element, the transition of the monotone ``bit`` on ``[lo, hi]`` (integers or float keys).

    Returns ``(kind, lo, hi)``: kind 0 / 1 constant bit, 2 rising (bit = x >= hi), 3 falling (bit = x <= lo),
    with ``hi = lo + 1`` (one step) at the transition.
    """
    b_lo, b_hi = bit(lo), bit(hi)
    kind = torch.where(b_lo == b_hi, b_lo.long(), torch.where(b_hi, 2, 3))
    while bool(((hi - lo) > 1).any()):
        mid = lo + (hi - lo) // 2
        same = bit(step(mid)) == b_hi
        hi, lo = torch.where(same, mid, hi), torch.where(same, lo, mid)
    return kind, lo, hi


def _chain(modules, y):
    for m in modules:
        y = m(y)
    return y


@torch.no_grad()
def count_thresholds(scale, chain, n_bits, shape):
    """Integer thresholds of ``bit = chain(scale(count)) > 0`` for each element of ``shape`` ``(o, h, w)``.

    ``scale`` maps a float tensor of counts ``(1, o, h, w)`` to the layer's output
    (times Gamma, plus bias); ``chain`` is the list of monotone modules after it.
    Returns ``(kind, t)`` ``(o, h, w)``: kind 0 / 1 constant bit, 2 ``bit = count >= t``,
    3 ``bit = count <= t``.
    """
    def bit(c):
        probe = c.float()[None].contiguous(memory_format=torch.channels_last)  # (1, o, h, w), as the network runs
        return _chain(chain, scale(probe))[0] > 0

    lo = torch.full(shape, -n_bits, dtype=torch.int64)
    kind, lo, hi = _bisect(bit, lo, torch.full(shape, n_bits, dtype=torch.int64), lambda m: m)
    return kind, torch.where(kind == 3, lo, hi)


def _float_key(x):
    """float32 -> int64 keys in the same order (``-0.0`` just below ``+0.0``)."""
    i = x.view(torch.int32).long()
    return torch.where(i >= 0, i, -(i & 0x7FFFFFFF) - 1)


def _key_float(k):
    i = torch.where(k >= 0, k, (-(k + 1)) | (-(1 << 31)))
    return i.to(torch.int32).view(torch.float32)


@torch.no_grad()
def float_thresholds(chain, shape):
    """Per-channel ``(s, t)``, float32 ``(C,)``: ``chain(x) > 0`` iff ``s x > t``, for ``x`` of ``shape`` ``(C, h, w)``.

    Found by bisection over the float32 numbers (``chain`` is monotone per channel);
    constant channels get ``t = -inf`` (always 1) or ``+inf`` (always 0). Read at the
    first position (a per-channel chain gives the same answer at all of them).
    """
    def bit(k):
        probe = _key_float(k)[None].contiguous(memory_format=torch.channels_last)
        return _chain(chain, probe)[0] > 0

    lo = _float_key(torch.full(shape, -_FLT_MAX))
    kind, lo, hi = _bisect(bit, lo, _float_key(torch.full(shape, _FLT_MAX)), lambda m: m)
    kind, x_lo, x_hi = kind[:, 0, 0], _key_float(lo[:, 0, 0]), _key_float(hi[:, 0, 0])
    inf = torch.tensor(float("inf"))
    s = torch.where(kind == 3, -1.0, 1.0)
    t = torch.where(kind == 0, inf, -inf)  # constant 0: x > inf never; constant 1: x > -inf
    t = torch.where(kind == 2, torch.nextafter(x_hi, -inf), t)  # x >= x_hi
    t = torch.where(kind == 3, torch.nextafter(-x_lo, -inf), t)  # -x >= -x_lo
    return s.float().contiguous(), t.float().contiguous()


def _popcount_bounds(kind, t, n_bits, corr, o_pad):
    """``bit = (v <= bound) xor flip`` on the popcount ``v``, with ``count = n_bits + corr - 2 v``.

    ``kind, t`` ``(o, P)`` from ``count_thresholds``; ``corr`` ``(P, o)`` or None.
    Returns ``bound`` ``(rows, o_pad)`` int32 and ``flip`` ``(rows, o_pad / 32)`` int32, rows 1 when
    every position agrees.
    """
    kind, t = kind.t(), t.t()  # (P, o)
    base = n_bits + (corr.long() if corr is not None else 0) - t  # (P, o)
    rising = torch.div(base, 2, rounding_mode="floor")  # count >= t  <=>  v <= floor((n + corr - t) / 2)
    falling = -torch.div(-base, 2, rounding_mode="floor") - 1  # count <= t  <=>  not v <= ceil(...) - 1
    bound = torch.where(kind == 2, rising, torch.where(kind == 3, falling, torch.where(kind == 1, 1 << 30, -1)))
    return _bound_tensors(bound.clamp(-1, 1 << 30), kind == 3, o_pad, -1)


def _count_bounds(kind, t, o_pad):
    """``bit = (count >= bound) xor flip`` on the count itself (the int8 tiles, whose border holds the padding).

    ``kind, t`` ``(o, P)`` from ``count_thresholds``; returns ``bound``, ``flip`` as ``_popcount_bounds``.
    """
    kind, t = kind.t(), t.t()  # (P, o)
    never, always = 1 << 30, -(1 << 30)
    bound = torch.where(kind == 2, t, torch.where(kind == 3, t + 1, torch.where(kind == 1, always, never)))
    return _bound_tensors(bound, kind == 3, o_pad, never)  # count <= t  <=>  not count >= t + 1


def _bound_tensors(bound, flip, o_pad, unused):
    """``bound`` ``(P, o)`` and ``flip`` ``(P, o)`` bool as the kernels take them: one row when every position
    agrees, ``o_pad`` columns (``unused`` bound, no flip, for the padding), ``flip`` as 32-bit masks."""
    if bool((bound == bound[:1]).all()) and bool((flip == flip[:1]).all()):
        bound, flip = bound[:1], flip[:1]
    pad = o_pad - bound.shape[1]
    bound = torch.cat([bound, bound.new_full((bound.shape[0], pad), unused)], 1)
    flip = torch.cat([flip, flip.new_zeros((flip.shape[0], pad))], 1).reshape(flip.shape[0], -1, 32).long()
    words = (flip << torch.arange(32)).sum(-1)  # (rows, o_pad / 32), bit q = channel 32 k + q
    return bound.to(torch.int32).contiguous(), torch.where(words >= 1 << 31, words - (1 << 32), words).to(
        torch.int32).contiguous()


# ------------------------------------------------------------------ the network

class _Binary:
    """One binary layer of the plan: its packed weights and what it does with its popcounts."""

    def __init__(self, node, module, backend, shape_in, shape_out):
        if module.bias is not None:
            raise ValueError("the packed network takes binary layers without bias")
        self.node, self.layer = node, PackedBinaryConv2d.from_binary_conv(module, backend)
        self.in_size, self.out_size = tuple(shape_in[-2:]), tuple(shape_out[-2:])
        self.layer.out_size(self.in_size)  # an input smaller than the kernel: ValueError here
        self.n_bits = self.layer.channels * self.layer.kernel_size[0] * self.layer.kernel_size[1]
        self.corr = self.layer._correction(self.in_size)
        self.source = None  # ("bits", producer) or ("float", node, s, t)
        self.bits = None  # (consumer, bound, flip) when this layer writes the consumer's packed input
        self.relu, self.residual, self.out = False, None, node
        self.emit = None  # (consumer, s, t): the int8 tiles' float output also packed for consumer
        self.signs_only = False  # with emit: the float output is not kept (only its signs are used)
        self.in_place = False  # the float output overwrites the residual (no later step reads it)
        self.post = (None, None, False)  # (scale, shift, relu): a following _ChannelAffine (and ReLU) in the epilogue

    @property
    def write_y(self):
        """The kernels' ``write_y``: 0 no float output, 1 a new one, 2 written over the residual."""
        return 0 if self.signs_only else 2 if self.in_place else 1

    @property
    def folded(self):
        """Whether the layer writes the next binary layer's packed input itself, keeping no float output."""
        return self.bits is not None or self.signs_only

    def scale(self, counts):
        """The float layer's output for ``counts`` ``(1, o, h, w)``: times Gamma, as ``BinaryConv2d`` does."""
        if self.layer.gamma is None:
            return counts
        o, (h, w) = self.layer.out_channels, self.out_size
        gamma = self.layer.gamma.t().reshape(o, *((h, w) if self.layer.gamma.shape[0] > 1 else (1, 1)))
        return counts * gamma


class _Pool:
    """A ``MaxPool2d`` (after a ``ReLU`` when ``relu``) in one pass, whose output may also be packed for a
    binary layer (``emit``, as ``_Binary.emit``)."""

    def __init__(self, node, module, source, relu):
        self.node, self.source, self.relu, self.emit = node, source, relu, None
        self.args = self.geometry(module)

    @staticmethod
    def geometry(m):
        """``(kh, kw, sh, sw, ph, pw)`` of the ``MaxPool2d`` ``m``, as the pooling kernels take them."""
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        return (*pair(m.kernel_size), *pair(m.stride or m.kernel_size), *pair(m.padding))

    @staticmethod
    def fusable(m):
        return (isinstance(m, nn.MaxPool2d) and not m.ceil_mode and not m.return_indices
                and m.dilation in (1, (1, 1)))


class _Int8Conv:
    """An ``Int8Conv`` (the int8 stem: a convolution with its ReLU and max pooling) run by the compiled
    ``int8_conv``, which also packs its float output for a binary layer (``emit``, as ``_Binary.emit``)."""

    def __init__(self, node, module, backend):
        self.node, self.source, self.module, self.emit = node, node.args[0], module, None
        self.kernel, self.simd = backend.kernel, backend.simd

    def arguments(self):
        """``int8_conv``'s arguments after its input."""
        m = self.module
        consumer, s, t = self.emit or (None, None, None)
        return (m.inv_scale, m.zero_point, *m.kernel_operands(), m.out_features, *m.weight_codes.shape[2:],
                *m.stride, *m.padding, m.relu, *(m.pool or (1, 1, 1, 1, 0, 0)), s, t,
                *(consumer.layer.padding if consumer else (0, 0)), self.simd)

    def __call__(self, x):
        """``(y, bits)``: the float output, channels innermost ``(N, H, W, o)``, and the consumer's packed input
        (undefined without ``emit``). A NaN or an infinity in ``x`` is refused (``_check_finite``'s error), counted
        by the pass that quantizes ``x``."""
        try:
            return self.kernel.int8_conv(x.permute(0, 2, 3, 1), *self.arguments())
        except ValueError as err:
            raise _non_finite(err) from None


class _Mean:
    """A ``_GlobalMean`` run by the compiled ``channel_mean``."""

    def __init__(self, node, backend):
        self.node, self.source, self.kernel, self.simd = node, node.args[0], backend.kernel, backend.simd

    def __call__(self, x):
        return self.kernel.channel_mean(x.contiguous(memory_format=torch.channels_last), self.simd)


class _Gemm:
    """An ``Int8Gemm`` (a 1x1 convolution or linear layer in int8) run by the compiled ``int8_gemm``: a 1x1
    convolution from and to channels innermost, ``(N, H, W, C)`` (``_nhwc``), a linear layer from and to
    ``(N, K)``."""

    def __init__(self, node, module, backend):
        self.node, self.source, self.module = node, node.args[0], module
        self.kernel, self.simd = backend.kernel, backend.simd

    def arguments(self):
        """``int8_gemm``'s arguments after its input."""
        m = self.module
        return (*m.stride, m.inv_scale, m.zero_point, *m.kernel_operands(), m.out_features, self.simd)

    def __call__(self, x):
        rows = x.reshape(x.shape[0], 1, 1, -1) if self.module.linear else x  # (N, H, W, K)
        y = self.kernel.int8_gemm(rows.contiguous(), *self.arguments())
        return y.view(x.shape[0], -1) if self.module.linear else y


class PackedNetwork(nn.Module):
    """Inference of a whole binary ``model`` on packed bits (module docstring). ``forward(x)`` gives its logits.

    ``input_size`` (default ``model.input_size``) is the only input size accepted.
    ``real_layers="int8"`` runs the real layers in int8 (``int8``), calibrated on ``calibration``
    (default: 8 inputs drawn from N(0, 1) with seed 0) or rebuilt from ``int8_state`` (as ``fused_emulation``
    takes them); ``self.reference`` is the emulation with the same modules. ``forward(x, timings=d)`` adds each
    step's seconds to ``d[category]`` (``CATEGORIES``); ``forward(x, per_step=l)`` appends ``(category, name,
    seconds)`` for each step to the list ``l``.

    What it cannot run is refused with one ``ValueError`` naming the argument and the reason
    (``_check_arguments``): a model in training mode (call ``model.eval()``: BN folds its running statistics),
    not float32, or without a binary convolution; an ``input_size`` that is not a positive size or that the
    model's layers were not built for; ``calibration`` of another shape, or ``calibration`` or ``int8_state``
    given with float real layers (which read neither). ``forward`` refuses inputs of another shape, dtype or
    device and non-finite ones (as the reference does); an empty batch gives an empty result.
    """

    @staticmethod
    def _check_arguments(model, input_size, real_layers, calibration, int8_state):
        """``(input_size as (h, w), input channels)``, or a ``ValueError`` naming the argument and the reason."""
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        binary = [m for m in model.modules() if isinstance(m, BinaryConv2d) and m.method != "real"]
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if not binary:
            raise ValueError(f"model ({type(model).__name__}) has no binary convolution to pack (the packed network "
                             "runs the binary networks of xnorpp_core.models)")
        if any(m.training for m in model.modules()):
            raise ValueError("model is in training mode: call model.eval() first (the packed network folds each "
                             "batch norm's running statistics)")
        dtypes = {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()}
        if dtypes - {torch.float32}:
            raise ValueError(f"model holds {', '.join(sorted(map(str, dtypes - {torch.float32})))} tensors; the "
                             "packed network takes a float32 model (model.float())")
        size = input_size if input_size is not None else getattr(model, "input_size", None)
        if size is None:
            raise ValueError("input_size is needed: the model does not state one")
        pair = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else None
        if pair is None or len(pair) != 2 or not all(SIDE.contains(v) for v in pair):
            raise ValueError(f"input_size must be a side or an (h, w) pair, each {SIDE.describe()}, got {size!r}")
        if real_layers not in REAL_LAYERS:
            raise ValueError(f"real_layers must be one of {REAL_LAYERS}, got {real_layers!r}")
        shape = (convs[0].in_channels, *pair)
        if (calibration is not None or int8_state is not None) and real_layers != "int8":
            given = "calibration" if calibration is not None else "int8_state"
            raise ValueError(f"{given} is read with real_layers='int8' only; float real layers take none")
        if calibration is not None and not (isinstance(calibration, torch.Tensor) and calibration.dim() == 4
                                            and calibration.shape[0] > 0 and tuple(calibration.shape[1:]) == shape
                                            and calibration.dtype == torch.float32):
            got = (f"{calibration.dtype} of shape {tuple(calibration.shape)}" if isinstance(calibration, torch.Tensor)
                   else type(calibration).__name__)
            raise ValueError(f"calibration must be float32 inputs (n, {', '.join(map(str, shape))}), n >= 1, got {got}")
        return pair, shape[0]

    def __init__(self, model, backend=None, input_size=None, real_layers="float", calibration=None, int8_state=None):
        super().__init__()
        self.input_size, self.in_channels = self._check_arguments(model, input_size, real_layers, calibration,
                                                                  int8_state)
        self.backend = backend_info(backend)
        if real_layers == "int8" and calibration is None and int8_state is None:
            calibration = torch.randn(8, self.in_channels, *self.input_size,
                                      generator=torch.Generator().manual_seed(0))
        self.real_layers = real_layers
        self.reference = fused_emulation(model, real_layers, calibration, int8_state)
        gm = self.reference.graph
        try:  # ShapeProp prints the error's traceback before raising it again: kept off stderr, its cause reported
            with contextlib.redirect_stderr(io.StringIO()):
                ShapeProp(gm).propagate(torch.zeros(1, self.in_channels, *self.input_size).contiguous(
                    memory_format=torch.channels_last))
        except RuntimeError as err:
            cause = err.__cause__ or err
            raise ValueError(f"input_size {self.input_size[0]}x{self.input_size[1]} does not fit the model: "
                             f"{(str(cause).splitlines() or [''])[0]}") from None
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        self._out_shape = tuple(out.meta["tensor_meta"].shape[1:])  # one input's logits: an empty batch's shape
        self._plan(gm, model)

    # ---------------------------------------------------------------- planning

    def _plan(self, gm, model):
        mods = dict(gm.named_modules())
        nodes = list(gm.graph.nodes)
        order = {n: i for i, n in enumerate(nodes)}
        mod = lambda n: mods.get(n.target) if isinstance(n, fx.Node) and n.op == "call_module" else None  # noqa: E731
        shape = lambda n: tuple(n.meta["tensor_meta"].shape)  # noqa: E731

        def monotone(n):
            m = mod(n)
            return isinstance(m, _MONOTONE) and not m.training and not (
                isinstance(m, nn.BatchNorm2d) and m.running_mean is None)

        binaries = {n: _Binary(n, mod(n), self.backend.name, shape(n.args[0]), shape(n))
                    for n in nodes if isinstance(mod(n), BinaryConv2d) and mod(n).method != "real"}
        if not binaries:
            raise ValueError("the model has no binary convolution to pack")
        for n, b in binaries.items():  # Cases 3-4: Gamma's factors, from the unfused model
            try:
                scale = getattr(model.get_submodule(n.target), "scale", None)
            except AttributeError:  # a model whose graph names differ from its modules': the fused Gamma
                scale = None
            b.layer.gamma_factors = _gamma_factors(scale, b.layer.gamma)
        # AMX int8 tiles for all binary layers or none: the two paths pass their signs in different layouts.
        self.amx = self.backend.amx and all(amx_capable(b.layer.stride) for b in binaries.values())
        for b in binaries.values():
            b.layer.amx = self.amx
        skip = set()
        a_per_element = lambda a: a.layer.gamma is not None and a.layer.gamma.shape[0] > 1  # noqa: E731
        for node, b in binaries.items():  # where each binary layer's input bits come from
            chain, u = [], node.args[0]
            while monotone(u) and len(u.users) == 1:
                chain.insert(0, u)
                u = u.args[0]
            skip.update(chain)
            if u in binaries and len(u.users) == 1 and self.backend.name != "numpy" and (
                    a_per_element(binaries[u]) or (not self.amx and binaries[u].corr is not None)):
                # Gamma per element, or (XNOR-popcount) a border correction: the float output's own sign, one
                # threshold per channel, instead of an integer threshold per element
                a = binaries[u]
                s, t = float_thresholds([mod(c) for c in chain], (a.layer.out_channels, *a.out_size))
                a.emit, a.signs_only, b.source = (b, s, t), True, ("bits", a)
            elif u in binaries and len(u.users) == 1:
                a = binaries[u]
                kind, t = count_thresholds(a.scale, [mod(c) for c in chain], a.n_bits,
                                           (a.layer.out_channels, *a.out_size))
                o_pad = self._o_pad(a.layer.out_channels)
                if self.amx:
                    bound, flip = _count_bounds(kind.flatten(1), t.flatten(1), o_pad)
                else:
                    bound, flip = _popcount_bounds(kind.flatten(1), t.flatten(1), a.n_bits, a.corr, o_pad)
                a.bits, b.source = (b, bound, flip), ("bits", a)
            else:
                s, t = float_thresholds([mod(c) for c in chain], shape(u)[1:])
                b.source = ("float", u, s, t)
        for node, b in binaries.items():  # fused ReLU and residual addition of float outputs
            if b.bits is not None or b.signs_only:
                continue
            out = node
            if len(out.users) == 1 and isinstance(mod(next(iter(out.users))), nn.ReLU):
                b.relu, out = True, next(iter(out.users))
                skip.add(out)
            user = next(iter(out.users)) if len(out.users) == 1 else None
            if (user is not None and user.op == "call_function" and user.target in (operator.add, torch.add)
                    and len(user.args) == 2 and not user.kwargs and all(isinstance(a, fx.Node) for a in user.args)):
                other = user.args[1] if user.args[0] is out else user.args[0]
                if other is not out and order[other] < order[node] and shape(other) == shape(user):
                    b.residual, out = other, user
                    skip.add(out)
            b.out = out
        pools = {}
        if self.backend.name != "numpy":  # ReLU -> max pooling in one pass (the stem's)
            for n in nodes:
                if _Pool.fusable(mod(n)):
                    u = n.args[0]
                    relu = isinstance(mod(u), nn.ReLU) and len(u.users) == 1 and u not in skip
                    pools[n] = _Pool(n, mod(n), u.args[0] if relu else u, relu)
                    if relu:
                        skip.add(u)
        if self.backend.name != "numpy":  # a float output is packed for the next binary layer in its kernel
            by_out = {**pools, **{b.out: b for b in binaries.values() if b.bits is None and not b.signs_only}}
            for c in binaries.values():
                a = by_out.get(c.source[1]) if c.source[0] == "float" else None
                if a is not None and a.emit is None:
                    a.emit, c.source = (c, *c.source[2:]), ("bits", a)
        int8_convs = {}  # the int8 stem, and the packing of its output for the next binary layer, in one pass
        if self.backend.name != "numpy":
            int8_convs = {n: _Int8Conv(n, mod(n), self.backend) for n in nodes if isinstance(mod(n), Int8Conv)}
            for c in binaries.values():
                u = c.source[1] if c.source[0] == "float" and not self.amx else None
                if u in int8_convs and int8_convs[u].emit is None:
                    int8_convs[u].emit, c.source = (c, *c.source[2:]), ("bits", int8_convs[u])
        if self.backend.name != "numpy":  # a following batch norm (as _ChannelAffine) and ReLU in the epilogue
            for b in binaries.values():
                u = next(iter(b.out.users)) if not b.folded and b.emit is None and len(b.out.users) == 1 else None
                if isinstance(mod(u), _ChannelAffine):
                    b.post, b.out = (mod(u).scale, mod(u).shift, False), u
                    skip.add(u)
                    r = next(iter(u.users)) if len(u.users) == 1 else None
                    if isinstance(mod(r), nn.ReLU):
                        b.post, b.out = (*b.post[:2], True), r
                        skip.add(r)
        first, last = min(order[n] for n in binaries), max(order[n] for n in binaries)
        self._steps = []
        for n in nodes:
            if n in skip or n.op == "output":
                continue
            if n in binaries:
                self._steps.append(("binary_convs", binaries[n]))
            elif n in pools:
                self._steps.append(("stem" if order[n] < first else "glue", pools[n]))
            elif n in int8_convs:
                self._steps.append(("stem" if order[n] < first else "glue", int8_convs[n]))
            elif n.op != "placeholder":
                where = "stem" if order[n] < first else "classifier" if order[n] > last else (
                    "shortcuts" if isinstance(mod(n), (nn.Conv2d, Int8Conv, Int8Gemm)) else "glue")
                step = n
                if self.backend.name != "numpy" and isinstance(mod(n), (Int8Gemm, _GlobalMean)):
                    step = _Gemm(n, mod(n), self.backend) if isinstance(mod(n), Int8Gemm) else _Mean(n, self.backend)
                self._steps.append((where, step))
        self._input = next(n for n in nodes if n.op == "placeholder")
        # an int8 stem on the input counts its NaN and infinite values as it quantizes it (one pass, not two)
        self._stem_checks = any(isinstance(s, _Int8Conv) and s.source is self._input for _, s in self._steps)
        self._output = next(n for n in nodes if n.op == "output").args[0]
        self._mods = mods
        self.binaries = list(binaries.values())
        # identity modules: their output is their input
        self._aliases = {n: n.args[0] for n in nodes if isinstance(mod(n), nn.Identity) and n not in skip}
        self._raw = self._channels_innermost()
        if self.backend.name != "numpy":
            self._plan_in_place()
            self._kernel_calls()
        for pool in pools.values():
            consumer, s, t = pool.emit or (None, None, None)
            if consumer is not None and not self.amx:  # sign bits
                pool.run = self.backend.kernel.max_pool_bits
                pool.call = (*pool.args, pool.relu, s, t, *consumer.layer.padding, self.backend.simd)
            else:  # sign bytes (int8 tiles), or no signs
                pool.run = self.backend.kernel.max_pool_signs
                pool.call = (*pool.args, pool.relu, s, t, *(consumer.layer.padding if consumer else (0, 0)),
                             consumer.layer.border if consumer else -1)
        self._one_call = self._compile()

    def _channels_innermost(self):
        """The nodes whose values the compiled steps make and keep channels innermost, ``(N, H, W, C)``
        contiguous, as the kernels take them: the float outputs of binary layers, the int8 stem and the int8 1x1
        convolutions, and their aliases. ``_nhwc`` and ``_logical`` read a value in either form, so that a value
        that goes from one kernel to another is never permuted (each permutation is a call into torch, and
        these add up at batch 1)."""
        if self.backend.name == "numpy":
            return set()
        raw = set()
        for _, step in self._steps:
            if isinstance(step, _Binary) and not step.folded:
                raw.add(step.out)
            elif isinstance(step, _Int8Conv) or (isinstance(step, _Gemm) and not step.module.linear):
                raw.add(step.node)
            elif step in self._aliases and self._aliases[step] in raw:
                raw.add(step)
        return raw

    def _nhwc(self, env, n):
        """The value of ``n``, channels innermost ``(N, H, W, C)`` (a view, contiguous when channels-last)."""
        return env[n] if n in self._raw else env[n].permute(0, 2, 3, 1)

    def _logical(self, env, n):
        """The value of ``n`` in torch's layout, ``(N, C, H, W)`` (a view)."""
        return env[n].permute(0, 3, 1, 2) if n in self._raw else env[n]

    def _plan_in_place(self):
        """Marks the binary layers whose float output may be written over their residual (``_Binary.in_place``):
        a tensor that a kernel or a real layer made afresh (not a view of another value, not the input), which no
        later step reads, under any alias. The residual is then read from and written to the same memory, which is
        still in cache, instead of a new output's."""
        def root(n):
            while n in self._aliases:
                n = self._aliases[n]
            return n

        def reads(step):
            if isinstance(step, _Binary):
                return [step.source[1]] * (step.source[0] == "float") + [step.residual] * (step.residual is not None)
            if isinstance(step, (_Pool, _Gemm, _Int8Conv, _Mean)):
                return [step.source]
            if step in self._aliases:
                return []
            found = []
            fx.node.map_arg((step.args, step.kwargs), found.append)
            return found

        fresh, last = set(), {}
        for i, (_, step) in enumerate(self._steps):
            for n in reads(step):
                last[root(n)] = i
            if isinstance(step, _Binary):
                fresh.add(step.out)
            elif isinstance(step, (_Pool, _Gemm, _Int8Conv, _Mean)):
                fresh.add(step.node)
            elif step.op == "call_module" and isinstance(self._mods[step.target], (Int8Conv, nn.Conv2d)):
                fresh.add(step)
        last[root(self._output)] = len(self._steps) if isinstance(self._output, fx.Node) else -1
        for i, (_, step) in enumerate(self._steps):
            if isinstance(step, _Binary) and step.residual is not None and not step.folded:
                r = root(step.residual)
                step.in_place = r in fresh and last.get(r) == i

    def _o_pad(self, o):
        if self.backend.name == "numpy":
            return -(-o // 32) * 32
        tile = self.backend.kernel.tile_out_channels
        return -(-o // tile) * tile

    # ---------------------------------------------------------------- running

    def _pack(self, x, b):
        """Packed input of ``b`` from the float ``x`` through its float thresholds."""
        _, _, s, t = b.source
        if self.amx:
            return self.backend.kernel.pack_signs_i8(x, *b.layer.padding, s, t, b.layer.border)
        if self.backend.name == "numpy":
            bit = s[:, None, None] * x > t[:, None, None]
            return pack_numpy(torch.where(bit, 1.0, -1.0), *b.layer.padding)
        return self.backend.kernel.pack_signs(x, *b.layer.padding, s, t, self.backend.simd)

    def _conv(self, xb, b, env, n, packed):
        """The binary layer ``b`` on its packed input ``xb``: its packed output bits for the next layer
        (``b.bits``), or its float output ``(N, o, h, w)`` (None when ``b.signs_only``), whose signs for the next
        layer (``b.emit``) go to ``packed``."""
        if self.backend.name == "numpy":
            return self._conv_numpy(xb, b, env, n)
        k = self.backend.kernel
        operands = (xb, b.weights, n) if self.amx else (xb, b.weights)  # the int8 tiles take the batch size
        if b.bits is not None:
            return (k.amx_conv_signs if self.amx else k.packed_conv_bits)(*operands, *b.call)
        residual = None if b.residual is None else self._nhwc(env, b.residual)  # contiguous
        head, tail = b.call
        y, signs = (k.amx_conv if self.amx else k.packed_conv)(*operands, *head, residual, *tail)
        if b.emit is not None:
            packed[b.emit[0]] = signs
        h, w = b.out_size
        return None if b.signs_only else y.view(n, h, w, -1)  # channels innermost (_channels_innermost)

    def _conv_numpy(self, xb, b, env, n):
        layer, (h, w) = b.layer, b.out_size
        o = layer.out_channels
        count = conv_numpy(xb, layer.weight_bits, layer.channels, layer.stride, (h, w), None, None)  # (N, P, o)
        if b.bits is not None:
            consumer, bound, flip = b.bits
            v = ((b.n_bits - count) / 2).long()  # (N, P, o) popcounts
            flips = ((flip.long()[..., None] >> torch.arange(32)) & 1).flatten(1)  # (rows, o_pad)
            bit = (v <= bound[:, :o].long()) ^ flips[:, :o].bool()  # rows broadcast over P
            x = torch.where(bit, 1.0, -1.0).view(n, h, w, o).permute(0, 3, 1, 2)
            return pack_numpy(x, *consumer.layer.padding)
        y = count + (b.corr if b.corr is not None else 0)
        y = y * layer.gamma if layer.gamma is not None else y
        y = torch.relu(y) if b.relu else y
        if b.residual is not None:
            y = env[b.residual].permute(0, 2, 3, 1).reshape(n, h * w, o) + y  # (N, P, o): a view when NHWC
        return y.view(n, h, w, o).permute(0, 3, 1, 2)  # (N, o, h, w), channels-last memory

    def _kernel_calls(self):
        """Each binary layer's weights and the fixed arguments of its compiled kernel (after the input, the
        weights and, on the int8 tiles, the batch size): the network takes its weights once, when it is built.
        Float outputs: ``(head, tail)``, the arguments before and after the residual."""
        for b in self.binaries:
            b.weights = b.layer._kernel_weights()
            layer, (hi, wi), (ph, pw) = b.layer, b.in_size, b.layer.padding
            shape = (layer.channels, layer.out_channels, *layer.kernel_size, *layer.stride, *b.out_size)
            if self.amx:
                geometry = (hi + 2 * ph, wi + 2 * pw, *shape)  # after the batch size, given per call
            else:
                geometry = shape
            if b.bits is not None:
                consumer, bound, flip = b.bits
                nxt = (*consumer.layer.padding, consumer.layer.border) if self.amx else (
                    *consumer.layer.padding, self.backend.simd)
                b.call = (*geometry, bound, flip, *nxt)
                continue
            consumer, s, t = b.emit or (None, None, None)
            pad = consumer.layer.padding if consumer else (0, 0)
            if self.amx:
                b.call = ((*geometry, *layer.gamma_operands(), b.relu),
                          (*b.post, s, t, *pad, consumer.layer.border if consumer else -1, b.write_y))
            else:
                b.call = ((*geometry, *layer.correction_table(b.in_size), *layer.gamma_operands(), b.relu),
                          (*b.post, s, t, *pad, b.write_y, self.backend.simd))

    def _compile(self):
        """The compiled plan (``Plan``, csrc/plan.h) that runs every step in one call with no Python between them,
        the same kernels on the same arguments as the steps of ``forward``; None where a step runs in torch (float
        real layers), on the int8 tiles (which take the batch size) or in numpy: ``forward`` then runs the steps
        one by one. A value's slot is shared by its aliases; each packed input has a slot of its own, keyed by
        its consumer; each slot is emptied after its last reader."""
        if self.backend.name == "numpy" or self.amx or not isinstance(self._output, fx.Node):
            return None
        k = self.backend.kernel
        view, slots = k.plan_views, {self._input: 0}

        def slot(key):
            while key in self._aliases:
                key = self._aliases[key]
            return slots.setdefault(key, len(slots))

        def read(n, want):  # (slot, view) of value n as a kernel takes it
            raw = n in self._raw
            return slot(n), view[{"nhwc": "as_is" if raw else "nhwc",  # (N, H, W, C), contiguous
                                  "nhwc_view": "as_is" if raw else "nhwc_view",  # (N, H, W, C), any strides
                                  "channels_last": "nchw" if raw else "channels_last",  # (N, C, H, W)
                                  "any": "nchw" if raw else "as_is",  # (N, C, H, W), any strides
                                  "rows": "rows"}[want]]  # (N, 1, 1, K) from (N, K)

        packed = lambda b: slot(("packed", b))  # noqa: E731  (a binary layer's packed input)
        steps = []  # (kernel, arguments, inputs (position, slot, view), outputs (index, slot, shape))
        for _, step in self._steps:
            if isinstance(step, _Binary):
                if step.source[0] == "float":
                    _, u, s, t = step.source
                    steps.append(("pack_signs", (None, *step.layer.padding, s, t, self.backend.simd),
                                  [(0, *read(u, "any"))], [(0, packed(step), [])]))
                xb = (0, packed(step), view["as_is"])
                if step.bits is not None:
                    steps.append(("packed_conv_bits", (None, step.weights, *step.call), [xb],
                                  [(0, packed(step.bits[0]), [])]))
                    continue
                head, tail = step.call
                inputs = [xb] + ([(2 + len(head), *read(step.residual, "nhwc"))] if step.residual is not None else [])
                shape = [-1, *step.out_size, step.layer.out_channels]  # (N, h w, o) as (N, h, w, o)
                outputs = ([] if step.signs_only else [(0, slot(step.out), shape)]) + (
                    [(1, packed(step.emit[0]), [])] if step.emit is not None else [])
                steps.append(("packed_conv", (None, step.weights, *head, None, *tail), inputs, outputs))
            elif isinstance(step, (_Pool, _Int8Conv)):
                outputs = [(0, slot(step.node), [])] + ([(1, packed(step.emit[0]), [])] if step.emit else [])
                if isinstance(step, _Pool):
                    steps.append((step.run.__name__, (None, *step.call), [(0, *read(step.source, "channels_last"))],
                                  outputs))
                else:
                    steps.append(("int8_conv", (None, *step.arguments()), [(0, *read(step.source, "nhwc_view"))],
                                  outputs))
            elif isinstance(step, _Gemm):
                linear = step.module.linear
                if linear and step.source in self._raw:  # its rows are torch's (C, H, W) order, not (H, W, C)
                    return None
                source = read(step.source, "rows" if linear else "nhwc")
                steps.append(("int8_gemm", (None, *step.arguments()), [(0, *source)],
                              [(0, slot(step.node), [-1, step.module.out_features] if linear else [])]))
            elif isinstance(step, _Mean):
                steps.append(("channel_mean", (None, self.backend.simd), [(0, *read(step.source, "channels_last"))],
                              [(0, slot(step.node), [])]))
            elif step not in self._aliases:
                return None
        out, last = slot(self._output), {}
        for i, (_, _, inputs, outputs) in enumerate(steps):
            for s in [s for _, s, _ in inputs] + [s for _, s, _ in outputs]:
                last[s] = i
        plan = k.Plan(len(slots), out)
        for i, (kernel, args, inputs, outputs) in enumerate(steps):
            plan.add(kernel, args, inputs, outputs, [s for s, j in last.items() if j == i and s != out])
        return plan

    def forward(self, x, timings=None, per_step=None):
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"expected input (N, {self.in_channels}, {self.input_size[0]}, {self.input_size[1]}), "
                             f"got {tuple(x.shape)}")
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise ValueError(f"expected a float32 CPU tensor, got {x.dtype} on {x.device}")
        if not self._stem_checks:
            _check_finite(x)
        if x.shape[0] == 0:
            return x.new_zeros((0, *self._out_shape))
        timed = timings is not None or per_step is not None
        if self._one_call is None or timed:
            return self._forward_steps(x, timings, per_step, timed)
        try:  # compiled kernels only, which record no autograd graph: no grad mode to set
            y = self._one_call.run(x)  # each step reads its input in the layout it takes
        except ValueError as err:
            raise _non_finite(err) from None
        return y.permute(0, 3, 1, 2) if self._output in self._raw else y

    @torch.no_grad()
    def _forward_steps(self, x, timings, per_step, timed):
        """``forward`` step by step from Python (each step timed when asked)."""
        env = {self._input: x.contiguous(memory_format=torch.channels_last)}
        packed = {}
        clock = time.perf_counter
        timings = {} if timings is None and timed else timings
        for where, step in self._steps:
            t0 = clock() if timed else 0.0
            start = t0
            if isinstance(step, _Binary):
                if step.source[0] == "float":
                    xb = self._pack(self._logical(env, step.source[1]), step)
                    if timed:
                        t1 = clock()
                        timings["packing"] = timings.get("packing", 0.0) + t1 - t0
                        t0 = t1
                else:
                    xb = packed.pop(step)
                y = self._conv(xb, step, env, x.shape[0], packed)
                if step.bits is not None:
                    packed[step.bits[0]] = y
                elif not step.signs_only:
                    env[step.out] = y
            elif isinstance(step, _Pool):
                env[step.node], signs = step.run(self._logical(env, step.source).contiguous(
                                                     memory_format=torch.channels_last),
                                                 *step.call)
                if step.emit is not None:
                    packed[step.emit[0]] = signs
            elif isinstance(step, _Gemm) and not step.module.linear:
                env[step.node] = step(self._nhwc(env, step.source))
            elif isinstance(step, (_Gemm, _Mean)):
                env[step.node] = step(self._logical(env, step.source))
            elif isinstance(step, _Int8Conv):
                env[step.node], bits = step(self._logical(env, step.source))
                if step.emit is not None:
                    packed[step.emit[0]] = bits
            elif step in self._aliases:
                env[step] = env[self._aliases[step]]
            else:
                env[step] = self._run(step, env)
            if timed:
                end = clock()
                timings[where] = timings.get(where, 0.0) + end - t0
                if per_step is not None:
                    per_step.append((where, self.step_name(step), end - start))
        return self._logical(env, self._output)

    def layer_work(self, batch):
        """``{step name: (kind, shape, multiply-adds per call)}`` of the binary
        convolutions (kind ``binary``: binary multiply-adds, ``c kh kw`` per output) and int8 convolutions and
        products (kind ``int8``), for ``batch`` images; ``shape`` in words (``c -> o, k x k / s, h x w out``)."""
        work = {}
        for _, step in self._steps:
            name = self.step_name(step)
            if isinstance(step, _Binary):
                layer, (h, w) = step.layer, step.out_size
                kh, kw = layer.kernel_size
                work[name] = ("binary", f"{layer.channels} -> {layer.out_channels}, {kh}x{kw}/{layer.stride[0]}, "
                              f"{h}x{w} out", batch * h * w * layer.out_channels * layer.channels * kh * kw)
            elif isinstance(step, (_Int8Conv, _Gemm)):
                m, shape = step.module, step.source.meta["tensor_meta"].shape  # the input (1, c, H, W) or (1, K)
                if isinstance(step, _Int8Conv):
                    o, c, kh, kw = m.weight_codes.shape
                    h, w = ((n + 2 * p - k) // s + 1 for n, p, k, s in zip(shape[2:], m.padding, (kh, kw), m.stride))
                    work[name] = ("int8", f"{c} -> {o}, {kh}x{kw}/{m.stride[0]}, {h}x{w} out (then pooled)",
                                  batch * h * w * o * c * kh * kw)
                else:
                    o, k = m.weight_codes.shape
                    h, w = (1, 1) if m.linear else ((n - 1) // s + 1 for n, s in zip(shape[2:], m.stride))
                    work[name] = ("int8", f"{k} -> {o}, 1x1/{m.stride[0]}, {h}x{w} out", batch * h * w * o * k)
        return work

    @staticmethod
    def step_name(step):
        """The graph name of a step (its module's qualified name where it has one)."""
        node = step if isinstance(step, fx.Node) else step.node
        return str(node.target) if node.op == "call_module" else node.name

    def _run(self, n, env):
        args = fx.node.map_arg(n.args, lambda a: self._logical(env, a))
        kwargs = fx.node.map_arg(n.kwargs, lambda a: self._logical(env, a))
        if n.op == "call_module":
            return self._mods[n.target](*args, **kwargs)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        if n.op == "get_attr":
            return functools.reduce(getattr, n.target.split("."), self.reference.graph)
        raise ValueError(f"cannot run graph node {n.op} {n.target}")
