"""Int8 real layers: ``Int8Gemm`` (1x1 convolutions and linear layers) and ``Int8Conv`` (a convolution with its
ReLU and max pooling) against integer references, and the compiled ``int8_gemm`` and ``int8_conv`` against them,
bit for bit, on both of their paths."""

import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig

from xnorpp_core.packed.int8 import Int8Conv, Int8Gemm, default_engine


def _gemm(layer, scale=0.05, zero_point=60, step=None):
    return Int8Gemm.from_float(layer, (scale, zero_point), get_default_qconfig(default_engine()), step)


def _conv(c, o, stride=1, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(c, o, 1, stride, bias=True).eval()


def _inputs(shape, gemm, seed=0):
    """Random inputs, with some exactly halfway between two codes (ties go to the even code) and some far out of
    the codes' range (clamped)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 4
    flat = x.view(-1)
    flat[::7] = (torch.arange(flat[::7].numel()) % 40 - 20 + 0.5) / gemm.inv_scale  # k + 1/2 codes
    flat[3::11] = torch.where(torch.arange(flat[3::11].numel()) % 2 == 0, 1e4, -1e4)
    return x


def _reference(gemm, x):
    """``Int8Gemm``'s output from numpy integers: codes rounded half to even in float32, exact int64 sums."""
    rows = x.numpy().astype(np.float32)
    if not gemm.linear:
        rows = rows[:, :, ::gemm.stride[0], ::gemm.stride[1]]
        n, _, h, w = rows.shape
        rows = rows.transpose(0, 2, 3, 1).reshape(n * h * w, -1)
    codes = np.clip(np.rint(rows * np.float32(gemm.inv_scale)) + np.float32(gemm.zero_point), 0, 255)
    acc = (codes.astype(np.int64) - gemm.zero_point) @ gemm.weight_codes.numpy().astype(np.int64).T
    y = acc.astype(np.float32) * gemm.out_scale.numpy() + gemm.bias.numpy()
    y = torch.from_numpy(y)
    return y if gemm.linear else y.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def _run_kernel(kernel, gemm, x, simd):
    rows = x.reshape(x.shape[0], 1, 1, -1) if gemm.linear else x.permute(0, 2, 3, 1)
    y = kernel.int8_gemm(rows.contiguous(), *gemm.stride, gemm.inv_scale, gemm.zero_point,
                            *gemm.kernel_operands(), gemm.out_features, simd)
    return y.view(x.shape[0], -1) if gemm.linear else y.permute(0, 3, 1, 2)


CASES = [  # (in, out, stride, batch, size): K and outputs not multiples of 4, 16 or 64 too; last tiles of 1, 2, 3
    (64, 128, 2, 1, 9), (5, 10, 1, 3, 4), (70, 100, 2, 2, 7), (1, 1, 1, 1, 1), (256, 512, 2, 1, 6),  # and 4 pixels
    (33, 64, 3, 2, 8), (24, 40, 2, 3, 5),
]


@pytest.mark.parametrize("c,o,stride,batch,size", CASES)
def test_int8_gemm_conv_equals_the_integer_reference(c, o, stride, batch, size):
    gemm = _gemm(_conv(c, o, stride))
    x = _inputs((batch, c, size, size), gemm)
    with torch.no_grad():
        assert torch.equal(gemm(x), _reference(gemm, x))


@pytest.mark.parametrize("k,o", [(512, 1000), (7, 3), (64, 64)])
def test_int8_gemm_linear_equals_the_integer_reference(k, o):
    torch.manual_seed(1)
    gemm = _gemm(nn.Linear(k, o))
    x = _inputs((4, k), gemm, seed=1)
    with torch.no_grad():
        assert torch.equal(gemm(x), _reference(gemm, x))


THREADS = pytest.mark.parametrize("threads", [1, 4], indirect=True)  # 4: fewer pixel tiles than threads


@THREADS
@pytest.mark.parametrize("simd", [False, True])
@pytest.mark.parametrize("c,o,stride,batch,size", CASES)
def test_the_compiled_kernel_equals_int8_gemm(kernel, threads, simd, c, o, stride, batch, size):
    gemm = _gemm(_conv(c, o, stride, seed=2), scale=0.03, zero_point=0)
    x = _inputs((batch, c, size, size), gemm, seed=2).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(_run_kernel(kernel, gemm, x, simd), gemm(x))


@THREADS
@pytest.mark.parametrize("simd", [False, True])
@pytest.mark.parametrize("k,o,batch", [(300, 70, 5), (512, 1000, 1), (512, 1000, 9), (64, 20, 3)])
def test_the_compiled_kernel_equals_int8_gemm_on_a_linear_layer(kernel, threads, simd, k, o, batch):
    torch.manual_seed(3)
    gemm = _gemm(nn.Linear(k, o), zero_point=128)
    x = _inputs((batch, k), gemm, seed=3)
    with torch.no_grad():
        assert torch.equal(_run_kernel(kernel, gemm, x, simd), gemm(x))


def test_the_vnni_path_runs_where_the_cpu_has_it(kernel):
    # the AVX-512 VNNI path is chosen at run time; a CPU without it runs the portable loops for simd=True too
    assert isinstance(kernel.vnni_available(), bool)


def test_int8_gemm_is_close_to_the_float_layer():
    layer = _conv(64, 32, 2, seed=4)
    x = torch.randn(2, 64, 8, 8, generator=torch.Generator().manual_seed(4))
    gemm = _gemm(layer, scale=float(x.abs().max()) / 127, zero_point=128)
    with torch.no_grad():
        real, int8 = layer(x), gemm(x)
    assert not torch.equal(int8, real)
    torch.testing.assert_close(int8, real, rtol=0.05, atol=0.05 * float(real.abs().max()))


def test_asymmetric_weights_are_refused():
    qconfig = get_default_qconfig(default_engine())
    affine = torch.ao.quantization.QConfig(
        activation=qconfig.activation,
        weight=torch.ao.quantization.PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                       qscheme=torch.per_channel_affine))
    layer = _conv(8, 4)
    with torch.no_grad():
        layer.weight.abs_()  # all positive: an affine observer gives nonzero zero points
    with pytest.raises(ValueError, match="symmetric weight quantization"):
        Int8Gemm.from_float(layer, (0.1, 0), affine)


def test_the_kernel_checks_its_operands(kernel):
    gemm = _gemm(_conv(8, 4))
    wq, sums, scale, bias = gemm.kernel_operands()
    x = torch.randn(1, 5, 5, 8)
    with pytest.raises(RuntimeError, match="contiguous float32"):
        kernel.int8_gemm(x.permute(0, 2, 1, 3), 1, 1, gemm.inv_scale, 0, wq, sums, scale, bias, 4, True)
    with pytest.raises(RuntimeError, match="ceil"):
        kernel.int8_gemm(torch.randn(1, 5, 5, 9), 1, 1, gemm.inv_scale, 0, wq, sums, scale, bias, 4, True)
    with pytest.raises(RuntimeError, match="zero_point"):
        kernel.int8_gemm(x, 1, 1, gemm.inv_scale, 256, wq, sums, scale, bias, 4, True)
    with pytest.raises(RuntimeError, match="out_features"):
        kernel.int8_gemm(x, 1, 1, gemm.inv_scale, 0, wq, sums, scale, bias, 65, True)
    with pytest.raises(RuntimeError, match="scale and bias"):
        kernel.int8_gemm(x, 1, 1, gemm.inv_scale, 0, wq, sums, scale[:4].contiguous(), bias, 4, True)


def _int8_conv(c, o, k, stride, padding, relu, pool, scale=0.04, zero_point=70, seed=5):
    torch.manual_seed(seed)
    layer = nn.Conv2d(c, o, k, stride, padding, bias=True).eval()
    with torch.no_grad():
        layer.bias.normal_(0, 0.5)  # many outputs below zero: the ReLU and the pooling meet zeros and ties
    pool = None if pool is None else nn.MaxPool2d(*pool)
    return Int8Conv.from_float(layer, (scale, zero_point), get_default_qconfig(default_engine()), relu, pool)


def _conv_reference(conv, x):
    """``Int8Conv``'s output from numpy integers: codes rounded half to even in float32, zero padding (the code
    of 0.0), exact int64 sums over each window, a float32 multiply then add, ReLU, max pooling (floor mode; the
    padding never wins)."""
    codes = np.clip(np.rint(x.numpy() * np.float32(conv.inv_scale)) + np.float32(conv.zero_point), 0, 255)
    q = codes.astype(np.int64) - conv.zero_point  # (n, c, H, W)
    (ph, pw), (sh, sw) = conv.padding, conv.stride
    q = np.pad(q, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    w = conv.weight_codes.numpy().astype(np.int64)  # (o, c, kh, kw)
    windows = np.lib.stride_tricks.sliding_window_view(q, w.shape[2:], axis=(2, 3))[:, :, ::sh, ::sw]
    acc = np.einsum("nchwij,ocij->nohw", windows, w)
    y = acc.astype(np.float32) * conv.out_scale.numpy()[:, None, None] + conv.bias.numpy()[:, None, None]
    if conv.relu:
        y = np.maximum(y, np.float32(0))
    if conv.pool is not None:
        kh, kw, psh, psw, pph, ppw = conv.pool
        y = np.pad(y, ((0, 0), (0, 0), (pph, pph), (ppw, ppw)), constant_values=-np.inf)
        y = np.lib.stride_tricks.sliding_window_view(y, (kh, kw), axis=(2, 3))[:, :, ::psh, ::psw].max((-2, -1))
    return torch.from_numpy(np.ascontiguousarray(y))


CONV_CASES = [  # (c, o, k, stride, padding, relu, pool, batch, size): the stems of ResNet-18 and AlexNet, smaller
    (3, 64, 7, 2, 3, True, (3, 2, 1), 1, 20),   # ResNet-18's stem
    (3, 20, 11, 4, 2, True, (3, 2), 2, 31),     # AlexNet's, with outputs not a multiple of 16
    (3, 16, 3, 1, 1, True, None, 2, 9),         # the small-input stem: no pooling
    (5, 40, 3, 2, 0, False, (2, 2), 1, 13),     # no ReLU; windows of channels not a multiple of 4
    (1, 100, 5, 1, 2, True, (3, 1, 1), 3, 7),   # one channel; more than 64 outputs; pooling at stride 1
    (8, 33, 1, 1, 0, True, (3, 3), 1, 10),      # a 1x1 convolution with a ReLU
    (1, 16, 1, 1, 0, False, None, 2, 6),        # one code per kernel row: every code in the rows' shared quads
]


@pytest.mark.parametrize("c,o,k,stride,padding,relu,pool,batch,size", CONV_CASES)
def test_int8_conv_equals_the_integer_reference(c, o, k, stride, padding, relu, pool, batch, size):
    conv = _int8_conv(c, o, k, stride, padding, relu, pool)
    x = _inputs((batch, c, size, size), conv)
    with torch.no_grad():
        assert torch.equal(conv(x), _conv_reference(conv, x))


def _laid_out(x, layout):
    """``x`` (N, C, H, W) as the (N, H, W, C) operand of ``int8_conv``: channels innermost ("nhwc"), a view of
    torch's planes ("planes": pixels innermost), or a view with no unit stride ("strided")."""
    if layout == "nhwc":
        return x.permute(0, 2, 3, 1).contiguous()
    if layout == "planes":
        return x.contiguous().permute(0, 2, 3, 1)
    wide = torch.full((x.shape[0], x.shape[2], 2 * x.shape[3], 3 * x.shape[1]), float("nan"))
    view = wide[:, :, ::2, ::3]
    view.copy_(x.permute(0, 2, 3, 1))
    return view


@pytest.mark.parametrize("simd", [False, True])
@pytest.mark.parametrize("layout", ["nhwc", "planes", "strided"])
@pytest.mark.parametrize("c,o,k,stride,padding,relu,pool,batch,size", CONV_CASES)
def test_the_compiled_kernel_equals_int8_conv(kernel, simd, layout, c, o, k, stride, padding, relu, pool, batch,
                                              size):
    """In every layout of x: 3 channels in planes take the interleaving quantizer, with whole groups of 16 pixels
    where 4 bytes past them stay in the row (sizes 20 and 31: one group, then the rest one by one)."""
    conv = _int8_conv(c, o, k, stride, padding, relu, pool, scale=0.03, zero_point=37 if relu else 128, seed=6)
    x = _inputs((batch, c, size, size), conv, seed=6).contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(7)
    scale = torch.where(torch.arange(o) % 3 == 0, -1.0, 1.0)  # the next layer's folded BN -> sign
    thr = torch.randn(o, generator=g) * 0.3
    y, bits = kernel.int8_conv(_laid_out(x, layout), conv.inv_scale, conv.zero_point,
                               *conv.kernel_operands(), o, k, k, stride, stride, padding, padding, relu,
                               *(conv.pool or (1, 1, 1, 1, 0, 0)), scale, thr, 1, 2, simd)
    with torch.no_grad():
        expected = conv(x)
    assert torch.equal(y.permute(0, 3, 1, 2), expected)
    assert torch.equal(bits, kernel.pack_signs(expected, 1, 2, scale, thr, simd))
    y_only, none = kernel.int8_conv(x.permute(0, 2, 3, 1).contiguous(), conv.inv_scale, conv.zero_point,
                                    *conv.kernel_operands(), o, k, k, stride, stride, padding, padding, relu,
                                    *(conv.pool or (1, 1, 1, 1, 0, 0)), None, None, 0, 0, simd)
    assert torch.equal(y_only, y) and none is None


@pytest.mark.parametrize("simd", [False, True])
@pytest.mark.parametrize("planes", [False, True])
@pytest.mark.parametrize("where", ["none", "first", "row end", "masked tail", "everywhere"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_the_compiled_int8_conv_counts_non_finite_inputs_and_refuses_them(kernel, simd, planes, where, value):
    """Every NaN and infinity of x is counted, in the pass that quantizes it, wherever it lies (the first value,
    a row's last, the last value of a vector's masked tail; with x in planes, in a group of 16 pixels and past
    the last group), and refused in a ValueError; the largest finite floats, subnormals and -0.0 are finite and
    pass."""
    conv = _int8_conv(3, 16, 7, 2, 3, True, (3, 2, 1))
    memory = torch.randn(2, 3, 20, 22, generator=torch.Generator().manual_seed(3))  # (N, C, H, W)
    if not planes:
        memory = memory.permute(0, 2, 3, 1).contiguous()
    x = memory.permute(0, 2, 3, 1) if planes else memory
    x[0, 0, :4, 0] = torch.tensor([3.4028235e38, -3.4028235e38, 1e-45, -0.0])  # finite extremes
    flat = memory.view(-1)
    spots = {"none": [], "first": [0], "row end": [22 * 3 - 1], "masked tail": [flat.numel() - 1],
             "everywhere": list(range(5, flat.numel(), 7))}[where]
    flat[spots] = value
    run = lambda: kernel.int8_conv(x, conv.inv_scale, conv.zero_point, *conv.kernel_operands(), 16, 7, 7, 2, 2, 3, 3,
                                   True, *conv.pool, None, None, 0, 0, simd)
    if not spots:
        run()
        return
    with pytest.raises(ValueError, match=f"^x holds {len(spots)} NaN or infinite values$"):
        run()


def test_int8_conv_is_close_to_the_float_layers():
    torch.manual_seed(8)
    layer, pool = nn.Conv2d(3, 16, 7, 2, 3).eval(), nn.MaxPool2d(3, 2, 1)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    conv = Int8Conv.from_float(layer, (float(x.abs().max()) / 127, 128), get_default_qconfig(default_engine()), True, pool)
    with torch.no_grad():
        real, int8 = pool(torch.relu(layer(x))), conv(x)
    assert not torch.equal(int8, real)
    torch.testing.assert_close(int8, real, rtol=0.05, atol=0.05 * float(real.abs().max()))


def test_int8_conv_checks_its_operands(kernel):
    conv = _int8_conv(3, 16, 3, 1, 1, True, (2, 2))
    wq, sums, scale, bias = conv.kernel_operands()
    x = torch.randn(1, 6, 6, 3)
    geometry = (16, 3, 3, 1, 1, 1, 1, True, 2, 2, 2, 2, 0, 0)

    def run(*args, **replace):
        ops = {"x": x, "wq": wq, "scale": scale, **replace}
        return kernel.int8_conv(ops["x"], conv.inv_scale, conv.zero_point, ops["wq"], sums, ops["scale"], bias,
                                *(args or geometry), None, None, 0, 0, True)

    with pytest.raises(RuntimeError, match="finite and positive"):
        run(scale=torch.where(torch.arange(16) == 5, -1.0, scale))
    with pytest.raises(RuntimeError, match="x must be float32"):
        run(x=x.double())
    with pytest.raises(RuntimeError, match="wq must be"):
        run(wq=wq[:, :1].contiguous())
    with pytest.raises(RuntimeError, match="smaller than the kernel"):
        run(x=torch.randn(1, 1, 1, 3), *(16, 5, 5, 1, 1, 1, 1, True, 2, 2, 2, 2, 0, 0))
    with pytest.raises(RuntimeError, match="pooling"):
        run(16, 3, 3, 1, 1, 1, 1, True, 2, 2, 2, 2, 2, 0)  # padding beyond half the pooling window
    assert run()[0].shape == (1, 3, 3, 16)


@pytest.mark.parametrize("layer", ["int8_gemm", "int8_conv"])
@pytest.mark.parametrize("bad,message", [
    ({"zero_point": 256}, "zero_point must be a uint8 code"),
    ({"inv_scale": float("inf")}, "inv_scale must be finite and positive"),
    ({"inv_scale": 0.0}, "inv_scale must be finite and positive"),
    ({"sums": lambda t: t[:-1]}, "w_sums must be contiguous int32 (o_pad,)"),
    ({"sums": lambda t: t.long()}, "w_sums must be contiguous int32 (o_pad,)"),
    ({"bias": lambda t: t.double()}, "scale and bias must be contiguous float32 (o_pad,)"),
    ({"scale": lambda t: t[:-1]}, "scale and bias must be contiguous float32 (o_pad,)")])
def test_both_int8_layers_check_their_quantization_and_channel_operands(kernel, layer, bad, message):
    if layer == "int8_gemm":
        m = _gemm(_conv(8, 16))
        ops = dict(zip(("wq", "sums", "scale", "bias"), m.kernel_operands()))
        x = torch.randn(1, 4, 4, 8)

        def run(o):
            return kernel.int8_gemm(x, 1, 1, o["inv_scale"], o["zero_point"], o["wq"], o["sums"], o["scale"],
                                    o["bias"], 16, True)
    else:
        m = _int8_conv(3, 16, 3, 1, 1, True, (2, 2))
        ops = dict(zip(("wq", "sums", "scale", "bias"), m.kernel_operands()))
        x = torch.randn(1, 6, 6, 3)

        def run(o):
            return kernel.int8_conv(x, o["inv_scale"], o["zero_point"], o["wq"], o["sums"], o["scale"], o["bias"],
                                    16, 3, 3, 1, 1, 1, 1, True, 2, 2, 2, 2, 0, 0, None, None, 0, 0, True)
    ops.update(inv_scale=m.inv_scale, zero_point=m.zero_point)
    run(ops)  # the intact operands run
    key, value = next(iter(bad.items()))
    with pytest.raises(RuntimeError, match=f"^{layer}: {re.escape(message)}"):
        run({**ops, key: value(ops[key]) if callable(value) else value})


def test_weight_codes_round_half_to_even_at_exact_ties():
    """Weights ``(k + 1/2) s_w`` with ``s_w = 2^-6`` (each channel's largest magnitude, 127.5 s_w, sets it) land
    exactly halfway between two codes: they go to the even code, as ``np.rint`` and the module docstring say; +127.5
    rounds to 128 and is clamped to 127."""
    layer = nn.Linear(5, 3, bias=False)
    halves = torch.tensor([[-127.5, -3.5, -0.5, 0.5, 2.5], [127.5, 3.5, 0.5, -0.5, -2.5], [1.5, 127.5, -1.5, 4.5, 0]])
    with torch.no_grad():
        layer.weight.copy_(halves / 64)
    observer = get_default_qconfig(default_engine()).weight()
    observer(layer.weight.detach())
    w_scale, _ = observer.calculate_qparams()
    assert torch.equal(w_scale.float(), torch.full((3,), 2.0 ** -6))
    codes = _gemm(layer).weight_codes
    assert codes.tolist() == [[-128, -4, 0, 0, 2], [127, 4, 0, 0, -2], [2, 127, -2, 4, 0]]
    assert np.array_equal(codes.numpy(), np.clip(np.rint(halves.numpy()), -128, 127))
