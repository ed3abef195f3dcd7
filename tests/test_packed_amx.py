"""The int8 tile path (AMX) of the packed kernel, against independent references.

Every test that runs the tiles runs on the software tiles (backend ``cpp_amx_emulated``,
``csrc/amx_emulation.h``) on every CPU with AVX-512, and also on the hardware tiles (``cpp``) where
the CPU has AMX-INT8; the last test compares the two where both exist. On a CPU without AMX the
hardware variants are not collected (one skipped test says what they would have covered).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xnorpp_core import packed
from xnorpp_core.layers import BinaryConv2d
from xnorpp_core.packed import PackedBinaryConv2d, amx_weights, backend_info, pack_weight
from xnorpp_core.packed.network import PackedNetwork
from xnorpp_core.scales import Case3Scale, Case4Scale


def _cpu_reports_amx():
    """Whether the CPU reports AMX-INT8 tiles (Linux's /proc/cpuinfo), read once when the tests are collected."""
    info = Path("/proc/cpuinfo")
    flags = set(info.read_text().split()) if info.exists() else set()
    return {"amx_tile", "amx_int8"} <= flags


HARDWARE = _cpu_reports_amx()
TILE_BACKENDS = ["cpp_amx_emulated"] + (["cpp"] if HARDWARE else [])


def _tile_backend(name):
    """``backend_info(name)`` where it runs the int8 tiles; skips, naming what is not covered, elsewhere."""
    try:
        info = backend_info(name)
    except RuntimeError as err:
        pytest.skip(f"the {name} kernel did not build, so its int8-tile path is untested here: {err}")
    if not info.amx:
        pytest.skip("the emulated tiles run inside AVX-512 epilogues (F, BW, DQ, VL, VPOPCNTDQ), which this CPU lacks: "
                    "the int8-tile path is untested here" if name == "cpp_amx_emulated" else
                    "this CPU reports AMX-INT8 but the operating system grants no tile state: the hardware tiles are "
                    "untested here (the emulated ones ran the same test)")
    return info


@pytest.fixture(params=TILE_BACKENDS)
def tiles(request):
    """A backend that runs the int8 tiles: the emulated ones everywhere, the hardware ones where they exist."""
    return _tile_backend(request.param)


def _layer(c, o, k, stride, padding, method, pad_mode, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = BinaryConv2d(c, o, k, stride, padding, method=method, pad_mode=pad_mode, input_size=size).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) if p is layer.weight else torch.rand(p.shape, generator=g) - 0.3)
    return layer


def _reference(layer, x):
    """Eq. 3 by float convolution of +-1 signs (exact integers), padded as pad_mode says, times the fused Gamma."""
    (ph, pw), signs = layer.padding, torch.where(x > 0, 1.0, -1.0)
    signs = F.pad(signs, (pw, pw, ph, ph), value=0.0 if layer.pad_mode == "zero" else -1.0)
    count = F.conv2d(signs.double(), torch.where(layer.weight > 0, 1.0, -1.0).double(), stride=layer.stride)
    packed_layer = PackedBinaryConv2d.from_binary_conv(layer, "numpy")
    gamma = packed_layer.gamma
    if gamma is not None:
        o, (h, w) = layer.out_channels, count.shape[-2:]
        gamma = gamma.t().reshape(o, *((h, w) if gamma.shape[0] > 1 else (1, 1)))
    return count.float() * gamma if gamma is not None else count.float()


SHAPES = [  # (c, o, kernel, stride, padding, size): partial channel blocks, padded tiles, strides 1 and 2, 5x5
    (3, 8, 3, 1, 1, 6), (64, 40, 3, 2, 1, 9), (70, 33, 1, 1, 0, 5), (96, 64, 5, 1, 2, 7), (128, 96, 3, 1, 1, 4),
    (64, 64, 3, 2, 0, 8),
    (70, 40, 3, 2, 1, 30), (64, 64, 3, 2, 1, 34),  # tiles along pixel rows: an odd and an even number of them
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", packed.SUPPORTED_METHODS)
@pytest.mark.parametrize("pad_mode", ["zero", "minus_one"])
def test_int8_tiles_equal_the_popcount_kernel_and_the_float_reference(tiles, shape, method, pad_mode):
    c, o, k, s, p, size = shape
    layer = _layer(c, o, k, s, p, method, pad_mode, size)
    x = torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(1))
    x[x.abs() < 0.2] = 0.0  # sign(0) = -1
    int8 = PackedBinaryConv2d.from_binary_conv(layer, tiles.name)
    popcount = PackedBinaryConv2d.from_binary_conv(layer, "cpp_popcount")
    assert int8.amx and not popcount.amx
    y = int8(x)
    assert torch.equal(y, popcount(x))
    assert torch.equal(y, _reference(layer, x))


@pytest.mark.parametrize("method", ["direct", "case4"])
@pytest.mark.parametrize("o", [64, 640])  # weights expanded all at once (pixel blocks outermost), or per 32 outputs
def test_row_masks_give_the_same_outputs_as_int8_tiles(tiles, method, o):
    layer = _layer(128, o, 3, 1, 1, method, "zero", 6)
    x = torch.randn(3, 128, 6, 6, generator=torch.Generator().manual_seed(2))
    masks = PackedBinaryConv2d.from_binary_conv(layer, tiles.name)
    assert masks._kernel_weights().dtype == torch.int64  # the default for a multiple of 64 channels
    bytes_ = amx_weights(masks.weight_bits, 128, masks=False)
    y = tiles.kernel.amx_conv(masks.pack_input(x), bytes_, 3, 8, 8, 128, o, 3, 3, 1, 1, 6, 6, *masks.gamma_operands(), False,
                        None, None, None, False, None, None, 0, 0, -1, True)[0]
    assert torch.equal(masks(x), y.view(3, 6, 6, o).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="multiple of 64"):
        amx_weights(pack_weight(torch.randn(8, 70, 3, 3), "numpy"), 70, masks=True)


def test_weight_tiles_and_masks_hold_the_signs_where_the_kernel_reads_them():
    o, c, kh, kw = 40, 70, 3, 2
    w = torch.randn(o, c, kh, kw, generator=torch.Generator().manual_seed(3))
    tiles = amx_weights(pack_weight(w, "numpy"), c).numpy()  # (o_pad / 32, taps, blocks, 2, 16 rows, 16 outputs, 4)
    assert tiles.shape == (2, kh * kw, 2, 2, 16, 16, 4)
    signs = np.where(w.numpy() > 0, 1, -1)
    for pair, tap, block, half, row, out, byte in np.ndindex(*tiles.shape):
        oc, ch = 32 * pair + 16 * half + out, 64 * block + 4 * row + byte
        expected = signs[oc, ch, tap // kw, tap % kw] if oc < o and ch < c else 0
        assert tiles[pair, tap, block, half, row, out, byte] == expected
    w = torch.randn(64, 64, kh, kw, generator=torch.Generator().manual_seed(8))  # masks: whole blocks, no padding
    rows = amx_weights(pack_weight(w, "numpy"), 64, masks=False)
    masks = amx_weights(pack_weight(w, "numpy"), 64).numpy().view(np.uint64)
    assert rows.dtype == torch.int8 and masks.shape == (2, kh * kw, 1, 2, 16)
    rows = rows.numpy().reshape(*masks.shape, 64)
    bits = (masks[..., None] >> np.arange(64, dtype=np.uint64)) & 1
    np.testing.assert_array_equal(np.where(bits == 1, 1, -1), rows)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("border", [-1, 0])
def test_sign_bytes_layout(tiles, channels_last, border):
    x = torch.randn(2, 70, 3, 67, generator=torch.Generator().manual_seed(4))  # rows wider than 64 pixels
    x[0, 1, 0, 0] = 0.0
    scale, thr = torch.where(torch.arange(70) % 3 == 0, -1.0, 1.0), torch.linspace(-0.5, 0.5, 70)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for s, t in [(None, None), (scale, thr)]:
        out = tiles.kernel.pack_signs_i8(x, 1, 2, s, t, border)
        n, c, h, w = x.shape
        assert out.shape == (n * (h + 2) * (w + 4) + tiles.kernel.amx_tail_rows, 128) and out.dtype == torch.int8
        bit = x > 0 if s is None else s[:, None, None] * x > t[:, None, None]
        expected = torch.full((n, h + 2, w + 4, c), border, dtype=torch.int8)
        expected[:, 1:1 + h, 2:2 + w] = torch.where(bit, 1, -1).permute(0, 2, 3, 1).to(torch.int8)
        body = out[:n * (h + 2) * (w + 4)].view(n, h + 2, w + 4, 128)
        assert torch.equal(body[..., :c], expected)
        assert bool((out[n * (h + 2) * (w + 4):] == border).all())


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("pool", [(3, 2, 1), (3, 2, 0), (2, 2, 1), (3, 1, 1)])
def test_max_pooling_equals_torchs_with_its_sign_bytes(tiles, relu, pool):
    k, s, p = pool
    x = torch.randn(2, 70, 11, 9, generator=torch.Generator().manual_seed(5)).contiguous(
        memory_format=torch.channels_last)
    x[0, 3, 2, 2], x[1, 7, 0, 0] = float("nan"), float("-inf")
    reference = F.max_pool2d(torch.relu(x) if relu else x, k, s, p)
    scale, thr = torch.where(torch.arange(70) % 2 == 0, -1.0, 1.0), torch.linspace(-0.3, 0.3, 70)
    y, signs = tiles.kernel.max_pool_signs(x, k, k, s, s, p, p, relu, scale, thr, 1, 1, 0)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.isnan(), reference.isnan()) and bool(y.isnan().any())
    assert torch.equal(torch.nan_to_num(y), torch.nan_to_num(reference))
    n, c, h, w = y.shape
    bytes_ = signs[:n * (h + 2) * (w + 2)].view(n, h + 2, w + 2, 128)[:, 1:1 + h, 1:1 + w, :c].permute(0, 3, 1, 2)
    bit = scale[:, None, None] * y > thr[:, None, None]
    assert torch.equal(bytes_, torch.where(bit, 1, -1).to(torch.int8))
    plain, none = tiles.kernel.max_pool_signs(x, k, k, s, s, p, p, relu, None, None, 0, 0, -1)
    assert torch.equal(torch.nan_to_num(plain), torch.nan_to_num(y)) and none is None


def test_the_tile_kernel_refuses_what_it_cannot_read(tiles):
    kernel = tiles.kernel
    layer = PackedBinaryConv2d.from_binary_conv(_layer(64, 32, 3, 1, 1, "direct", "zero", 6), tiles.name)
    xi = layer.pack_input(torch.randn(1, 64, 6, 6))
    w = layer._kernel_weights()
    args = (1, 8, 8, 64, 32, 3, 3, 1, 1, 6, 6, None, None, None, False, None, None, None, False, None, None, 0, 0, -1,
            True)
    assert kernel.amx_conv(xi, w, *args)[0].shape == (1, 36, 32)
    with pytest.raises(RuntimeError, match="rows"):  # the tail the last tiles read is missing
        kernel.amx_conv(xi[:64].contiguous(), w, *args)
    with pytest.raises(RuntimeError, match="strides"):
        kernel.amx_conv(xi, w, *args[:7], 3, 3, *args[9:])
    with pytest.raises(RuntimeError, match="wi has"):
        kernel.amx_conv(xi, w.flatten()[:10].contiguous(), *args)
    with pytest.raises(RuntimeError, match="does not fit"):
        kernel.amx_conv(xi, w, *args[:9], 7, 7, *args[11:])


def test_unequal_or_large_strides_take_the_popcount_path(tiles):
    layer = _layer(64, 32, 3, (1, 2), 1, "case1", "zero", 8)
    packed_layer = PackedBinaryConv2d.from_binary_conv(layer, tiles.name)
    assert not packed_layer.amx
    x = torch.randn(1, 64, 8, 8)
    assert torch.equal(packed_layer(x), _reference(layer, x))


@pytest.mark.parametrize("scale_cls", [Case3Scale, Case4Scale])
def test_gamma_factors_reproduce_the_fused_gamma_or_are_not_used(scale_cls):
    scale = scale_cls(24, (5, 7))
    with torch.no_grad():
        for p in scale.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(6)))
    dense = scale.fused().reshape(24, 35).t().contiguous()
    alpha, beta, gamma = packed.layer._gamma_factors(scale, dense)
    rebuilt = alpha.t() * beta.reshape(1, -1) if gamma is None else (
        alpha.t()[:, :, None] * beta[None, :, None] * gamma[None, None, :]).reshape(24, 35)
    assert torch.equal(rebuilt.reshape(24, 35).t(), dense)
    other = dense.clone()
    other[3, 4] = torch.nextafter(other[3, 4], torch.tensor(float("inf")))
    assert packed.layer._gamma_factors(scale, other) is None


@pytest.mark.parametrize("stride", [(1, 1), (1, 2)])
def test_a_network_runs_on_tiles_only_when_every_binary_layer_can(tiles, stride):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.BatchNorm2d(64),
        _layer(64, 64, 3, 1, 1, "case1", "zero", 8), torch.nn.BatchNorm2d(64),
        _layer(64, 64, 3, stride, 1, "case1", "minus_one", 8), torch.nn.Flatten()).eval()
    net = PackedNetwork(model, tiles.name, input_size=8)
    assert net.amx == (stride == (1, 1))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(net(x), net.reference(x))


def _byte_operands(c, o, k, size, n, seed):
    """Random bytes (every value from -128 to 127) as the tile kernel's input rows and weight tiles, and the
    same numbers as float tensors for ``F.conv2d``: (xi, wi, x (n, cp, size, size), w (o, cp, k, k))."""
    g = torch.Generator().manual_seed(seed)
    cp, o_pad = -(-c // 64) * 64, -(-o // 32) * 32
    xi = torch.randint(-128, 128, (n * size * size + packed.backend_info(TILE_BACKENDS[0]).kernel.amx_tail_rows, cp),
                       generator=g).to(torch.int8)
    w = torch.zeros(o_pad, k * k, cp, dtype=torch.int8)  # (outputs, taps, channels), zero past o and c
    w[:o, :, :c] = torch.randint(-128, 128, (o, k * k, c), generator=g).to(torch.int8)
    # output 32 pair + 16 half + j, channel 64 block + 4 row + byte -> (pair, tap, block, half, row, j, byte)
    wi = w.view(o_pad // 32, 2, 16, k * k, cp // 64, 16, 4).permute(0, 3, 4, 1, 5, 2, 6).contiguous()
    x = xi[:n * size * size].view(n, size, size, cp).permute(0, 3, 1, 2).double()
    return xi, wi, x, w[:o].view(o, k, k, cp).permute(0, 3, 1, 2).double()


BYTE_SHAPES = [(70, 40, 3, 1, 7, 2), (64, 33, 3, 2, 9, 1), (130, 32, 1, 1, 5, 1)]  # (c, o, k, stride, size, n)


@pytest.mark.parametrize("shape", BYTE_SHAPES)
def test_tile_products_of_any_bytes_equal_a_float_convolution(tiles, shape):
    # the tile multiply-add on signed bytes of every value, not only +-1: TDPBSSD's int32 sums, exactly
    c, o, k, s, size, n = shape
    xi, wi, x, w = _byte_operands(c, o, k, size, n, seed=9)
    h = (size - k) // s + 1
    y = tiles.kernel.amx_conv(xi, wi, n, size, size, c, o, k, k, s, s, h, h, None, None, None, False, None, None,
                              None, False, None, None, 0, 0, -1, True)[0]  # (n, P, o)
    count = F.conv2d(x, w, stride=s)  # (n, o, h, h)
    assert count.abs().max() < 2 ** 24  # float32 holds every count exactly
    assert torch.equal(y.double(), count.flatten(2).transpose(1, 2))


def test_the_emulated_tiles_equal_the_hardware_ones():
    if not HARDWARE:
        pytest.skip("this CPU has no AMX-INT8 tiles: on one, every tile test of this file also runs on the hardware "
                    "(backend cpp), and this test compares the emulated tiles with it on bytes of every value, with "
                    "Gamma factors, ReLU, residual, a following batch norm and its ReLU, and the next layer's signs")
    hardware, emulated = _tile_backend("cpp"), _tile_backend("cpp_amx_emulated")
    assert hardware.kernel.amx_emulated is False and emulated.kernel.amx_emulated is True
    for c, o, k, s, size, n in BYTE_SHAPES:
        xi, wi, _, _ = _byte_operands(c, o, k, size, n, seed=10)
        h = (size - k) // s + 1
        g = torch.Generator().manual_seed(11)
        gamma, gy, gx = torch.rand(1, o, generator=g), torch.rand(h, generator=g), torch.rand(h, generator=g)
        residual, scale = torch.randn(n, h * h, o, generator=g), torch.where(torch.arange(o) % 3 == 0, -1.0, 1.0)
        thr = torch.randn(o, generator=g)
        post_scale, post_shift = torch.randn(o, generator=g), torch.randn(o, generator=g)
        args = (xi, wi, n, size, size, c, o, k, k, s, s, h, h, gamma, gy, gx, True, residual, post_scale, post_shift,
                True, scale, thr, 1, 1, 0, True)
        (y_hw, signs_hw), (y_emu, signs_emu) = hardware.kernel.amx_conv(*args), emulated.kernel.amx_conv(*args)
        assert torch.equal(y_hw, y_emu) and torch.equal(signs_hw, signs_emu)
