"""The bit-packed XNOR-popcount convolution against the float emulation, on every backend.

The compiled backends build on first use (about half a minute, once per
machine: torch's extension cache). Where no compiler is present they are
skipped, and the numpy fallback carries the same tests.
"""

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xnorpp_core import packed
from xnorpp_core.layers import BinaryConv2d, binary_conv2d
from xnorpp_core.models import binary_resnet18, fuse_model
from xnorpp_core.packed import PackedBinaryConv2d, backend_info, pack_model, pack_signs, pack_weight, storage_bytes
from xnorpp_core.scales import LearnedScale


@pytest.fixture(params=packed.BACKENDS)
def backend(request):
    """Each backend by name; the compiled ones skip where the kernel does not build."""
    try:
        return backend_info(request.param).name
    except RuntimeError as err:
        pytest.skip(str(err))


def _layer(c, o, k, stride, padding, method="direct", pad_mode="zero", input_size=None, bias=False, seed=0):
    """A BinaryConv2d with random weights and, for learned methods, random positive scale factors."""
    g = torch.Generator().manual_seed(seed)
    layer = BinaryConv2d(c, o, k, stride, padding, bias=bias, method=method, input_size=input_size,
                         pad_mode=pad_mode).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.rand(p.shape, generator=g) + 0.5 if p is not layer.weight else
                    torch.randn(p.shape, generator=g))
    return layer


# ---------------------------------------------------------------- backends


def test_backend_names_and_env_var(monkeypatch):
    with pytest.raises(ValueError, match="unknown packed backend"):
        backend_info("fortran")
    monkeypatch.setenv(packed.ENV_VAR, "numpy")
    assert backend_info() == packed.BackendInfo("numpy", False, "requested")
    monkeypatch.setenv(packed.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match="unknown packed backend"):
        backend_info()


def test_auto_falls_back_to_numpy_when_the_build_fails(monkeypatch):
    monkeypatch.setattr(packed.backend, "_compiled", lambda: (None, "RuntimeError: no compiler"))
    info = backend_info("auto")
    assert info.name == "numpy" and "no compiler" in info.reason
    with pytest.raises(RuntimeError, match="did not build"):
        backend_info("cpp")


def test_a_build_that_really_fails_falls_back(tmp_path):
    # a fresh extension cache and a compiler that always fails: auto must still give a working backend
    env = {**os.environ, "CXX": "false", "TORCH_EXTENSIONS_DIR": str(tmp_path), "PYTHONPATH": str(Path(packed.__file__).parents[2])}
    env.pop(packed.ENV_VAR, None)
    code = ("from xnorpp_core.packed import backend_info, pack_signs; import torch; i = backend_info(); "
            "print(i.name, pack_signs(torch.ones(1, 3, 1, 1)).item(), 'did not build' in i.reason)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["numpy", "7", "True"]


@pytest.mark.skipif(shutil.which("c++") is None or shutil.which("ninja", path=packed.backend._ninja_path()) is None,
                    reason="no C++ compiler or ninja on this machine")
def test_kernel_builds_where_a_compiler_exists():
    info = backend_info("auto")
    assert info.name == "cpp", info.reason


# ---------------------------------------------------------------- packing


def test_pack_signs_bit_layout(backend):
    # channel 64 k + b -> bit b of word k; x > 0 -> 1; x <= 0 (zero included) -> 0; border words 0
    x = -torch.ones(1, 70, 1, 2)
    x[0, [0, 5, 63, 64, 69], 0, 0] = 1.0
    x[0, 1, 0, 0] = 0.0  # sign(0) = -1 (Eq. 1)
    x[0, 66, 0, 1] = 2.0
    words = pack_signs(x, padding=1, backend=backend)
    assert words.shape == (1, 3, 4, 2) and words.dtype == torch.int64
    expected = np.zeros((3, 4, 2), dtype=np.uint64)
    expected[1, 1] = [(1 << 0) | (1 << 5) | (1 << 63), (1 << 0) | (1 << 5)]
    expected[1, 2] = [0, 1 << 2]
    np.testing.assert_array_equal(words[0].numpy().view(np.uint64), expected)


@pytest.mark.parametrize("channels_last", [False, True])
def test_pack_signs_agrees_across_backends_and_memory_formats(backend, channels_last):
    x = torch.randn(2, 130, 5, 70)  # rows wider than one 64-pixel block
    x[x.abs() < 0.1] = 0.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(pack_signs(x, (1, 2), backend), pack_signs(x.contiguous(), (1, 2), "numpy"),
                               rtol=0, atol=0)


def test_pack_weight_storage_is_one_bit_per_weight_rounded_to_words():
    w = torch.randn(33, 70, 3, 3)
    bits = pack_weight(w, "numpy")
    assert bits.shape == (33, 3, 3, 2) and bits.nbytes == 33 * 3 * 3 * 2 * 8


# ---------------------------------------------------------------- exact counts

SHAPES = [  # (c, o, kernel, stride, padding, input size)
    (3, 8, 3, 1, 1, 6),
    (70, 40, 3, 1, 1, 7),
    (70, 40, 3, 2, 1, 9),
    (64, 33, 3, 2, 1, (8, 5)),
    (130, 64, 1, 2, 0, 8),
    (100, 36, 1, 1, 0, 5),
    (65, 32, 3, 1, 0, 6),
]


@pytest.mark.parametrize("pad_mode", ["zero", "minus_one"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_counts_equal_the_float_emulation(backend, shape, pad_mode):
    c, o, k, stride, padding, size = shape
    size = (size, size) if isinstance(size, int) else size
    layer = _layer(c, o, k, stride, padding, "direct", pad_mode, seed=c + o)
    x = torch.randn(2, c, *size, generator=torch.Generator().manual_seed(1))
    x[:, :, 0, 0] = 0.0  # sign(0) = -1 on both paths
    expected = binary_conv2d(x, layer.weight, stride, padding, pad_mode=pad_mode)  # exact integers
    got = PackedBinaryConv2d.from_binary_conv(layer, backend)(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("pad_mode,expected", [("zero", 4.0), ("minus_one", -1.0)])
def test_hand_computed_border(backend, pad_mode, expected):
    # all-(+1) 2x2 input, all-(+1) 3x3 kernel, padding 1: every output sees the 4 inputs and 5 border taps,
    # which count 0 ("zero") or -1 each ("minus_one"): 4 + 5 * 0 = 4, 4 - 5 = -1.
    layer = _layer(1, 1, 3, 1, 1, "direct", pad_mode)
    with torch.no_grad():
        layer.weight.fill_(0.3)
    y = PackedBinaryConv2d.from_binary_conv(layer, backend)(torch.ones(1, 1, 2, 2))
    assert torch.equal(y, torch.full((1, 1, 2, 2), expected))


@pytest.mark.parametrize("threads", [1, 2, 5], indirect=True)
@pytest.mark.parametrize("c", [200, 300], ids=["pixels outermost", "channels outermost"])
def test_counts_on_more_channels_than_one_tile(backend, c, threads):
    """More than 32 output channels and 6 pixels per tile, odd remainders on both, rows of 3 pixels (a tile spans
    rows and images); each thread starts at a tile of its own, in both tile orders (weights that fit the
    first-level cache go pixels outermost)."""
    layer = _layer(c, 70, 3, 1, 1, "direct", "zero", seed=3)
    x = torch.randn(3, c, 5, 3, generator=torch.Generator().manual_seed(4))
    expected = binary_conv2d(x, layer.weight, 1, 1)
    torch.testing.assert_close(PackedBinaryConv2d.from_binary_conv(layer, backend)(x), expected, rtol=0, atol=0)


# ---------------------------------------------------------------- a fuzz of shapes

FUZZ_CHANNELS = (1, 63, 64, 65, 127, 128, 129)  # around the 64-channel words and blocks


def _fuzz_cases(draws):
    """``draws`` random layers for each of pad mode x stride x batch x channel count: (c, o, k, stride, padding,
    (h, w), batch, method, pad_mode); the input is down to 1x1 (the smallest the kernel and padding allow)."""
    rng = np.random.default_rng(12)
    cases = []
    for _, pad_mode, stride, batch, c in itertools.product(range(draws), ("zero", "minus_one"), (1, 2), (1, 3),
                                                            FUZZ_CHANNELS):
        k = int(rng.choice([1, 2, 3, 5]))
        padding = int(rng.integers(0, k // 2 + 1))
        low = max(1, k - 2 * padding)
        h, w = (int(v) for v in rng.choice([low, low, low + 1, low + 4, 9], size=2))
        cases.append((c, int(rng.choice([1, 31, 32, 33, 64, 65])), k, stride, padding, (h, w), batch,
                      str(rng.choice(packed.SUPPORTED_METHODS)), pad_mode))
    return cases


def test_a_fuzz_of_shapes_equals_the_fused_layer(backend):
    # more draws under the sanitizers (scripts/sanitize.sh sets XNORPP_FUZZ_DRAWS)
    cases = _fuzz_cases(int(os.environ.get("XNORPP_FUZZ_DRAWS", "1")))
    assert {1} <= {min(case[5]) for case in cases} and {1, 2} == {case[3] for case in cases}
    for i, (c, o, k, stride, padding, size, batch, method, pad_mode) in enumerate(cases):
        layer = _layer(c, o, k, stride, padding, method, pad_mode, input_size=size, seed=i)
        x = torch.randn(batch, c, *size, generator=torch.Generator().manual_seed(i))
        x[x.abs() < 0.1] = 0.0  # sign(0) = -1 on both sides
        with torch.no_grad():
            expected = layer.fuse()(x)
        got = PackedBinaryConv2d.from_binary_conv(layer, backend)(x)
        assert torch.equal(got, expected), (c, o, k, stride, padding, size, batch, method, pad_mode)


# ---------------------------------------------------------------- times the fused Gamma


@pytest.mark.parametrize("method", packed.SUPPORTED_METHODS)
@pytest.mark.parametrize("pad_mode", ["zero", "minus_one"])
def test_scaled_output_equals_the_fused_layer_bit_for_bit(backend, method, pad_mode):
    # one multiply per output on both sides, so the float results are identical, not merely close
    layer = _layer(70, 40, 3, 2, 1, method, pad_mode, input_size=(9, 7), bias=method == "case3", seed=5)
    x = torch.randn(2, 70, 9, 7, generator=torch.Generator().manual_seed(6))
    packed_layer = PackedBinaryConv2d.from_binary_conv(layer, backend)
    assert isinstance(layer.scale, (LearnedScale, type(None)))  # the source layer is left unfused
    with torch.no_grad():
        expected = layer.fuse()(x)
    assert torch.equal(packed_layer(x), expected)


def test_learned_gamma_shapes_are_stored_compactly():
    case1 = PackedBinaryConv2d.from_binary_conv(_layer(8, 16, 3, 1, 1, "case1", input_size=6), "numpy")
    case2 = PackedBinaryConv2d.from_binary_conv(_layer(8, 16, 3, 1, 1, "case2", input_size=6), "numpy")
    direct = PackedBinaryConv2d.from_binary_conv(_layer(8, 16, 3, 1, 1, "direct"), "numpy")
    assert case1.gamma.shape == (1, 16) and case2.gamma.shape == (36, 16) and direct.gamma is None


# ---------------------------------------------------------------- what it refuses


@pytest.mark.parametrize("method", ["xnor", "real"])
def test_unsupported_methods_raise(method):
    with pytest.raises(ValueError, match="has no packed form"):
        PackedBinaryConv2d.from_binary_conv(_layer(8, 8, 3, 1, 1, method), "numpy")


def test_unsupported_layers_and_inputs_raise():
    with pytest.raises(ValueError, match="groups=1 and dilation=1"):
        PackedBinaryConv2d.from_binary_conv(BinaryConv2d(8, 8, 3, groups=2, method="direct"), "numpy")
    with pytest.raises(TypeError, match="BinaryConv2d"):
        PackedBinaryConv2d.from_binary_conv(torch.nn.Conv2d(8, 8, 3), "numpy")
    layer = PackedBinaryConv2d.from_binary_conv(_layer(8, 8, 3, 1, 1, "case2", input_size=6), "numpy")
    with pytest.raises(ValueError, match="built for 6x6"):
        layer(torch.randn(1, 8, 7, 7))
    with pytest.raises(ValueError, match=r"expected input \(N, 8, H, W\)"):
        layer(torch.randn(1, 4, 6, 6))
    with pytest.raises(ValueError, match="float32 CPU tensor"):
        pack_signs(torch.randn(1, 8, 6, 6, dtype=torch.float64))


# ---------------------------------------------------------------- whole model


def _resnet(method, seed=0):
    """A small-input binary ResNet-18 with non-trivial BN statistics and learned factors, in eval mode."""
    torch.manual_seed(seed)
    model = binary_resnet18(method, num_classes=10, input_size=16, small_input=True).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, LearnedScale):
                for p in m.parameters():
                    p.mul_(torch.rand_like(p) + 0.5)  # spatial factors no longer constant
    return model


@pytest.mark.parametrize("method", packed.SUPPORTED_METHODS)
def test_packed_resnet18_gives_the_float_emulated_logits(backend, method):
    model = _resnet(method)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = fuse_model(model)(x)
    packed_model = pack_model(model, backend)
    with torch.no_grad():
        got = packed_model(x)
    assert torch.equal(got, expected)  # the same logits, hence the same predictions
    assert not any(isinstance(m, BinaryConv2d) for m in packed_model.modules())
    assert sum(isinstance(m, PackedBinaryConv2d) for m in packed_model.modules()) == 16


def test_pack_model_refuses_xnor():
    with pytest.raises(ValueError, match="has no packed form"):
        pack_model(binary_resnet18("xnor", num_classes=10, input_size=16, small_input=True), "numpy")


def test_storage_bytes_of_packed_resnet18():
    model = _resnet("case4")
    float_size, packed_size = storage_bytes(fuse_model(model)), storage_bytes(pack_model(model, "numpy"))
    binary_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, BinaryConv2d))
    assert float_size["binary_weights"] == 4 * binary_weights
    # every binary layer has c a multiple of 64, so packing is exactly one bit per weight: 32x
    assert packed_size["binary_weights"] * 32 == float_size["binary_weights"]
    assert packed_size["other"] == float_size["other"]  # real layers and BN untouched
    assert packed_size["scales"] == float_size["scales"]  # the dense fused Gamma of Case 4
    assert packed_size["total"] == sum(packed_size[k] for k in ("binary_weights", "scales", "other"))


# ---------------------------------------------------------------- inputs smaller than the kernel, stale caches


@pytest.mark.parametrize("size", [1, 2])
def test_an_input_smaller_than_the_kernel_is_a_value_error(backend, size):
    # 3x3 kernel, no padding: a 1x1 input has output -1x-1, a 2x2 input 0x0; neither may reach the kernel
    layer = PackedBinaryConv2d.from_binary_conv(BinaryConv2d(64, 8, 3, method="direct"), backend)
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        layer(torch.randn(1, 64, size, size))
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        layer.forward_packed(pack_signs(torch.randn(1, 64, size, size), 0, backend), (size, size))


def test_the_compiled_kernel_checks_the_output_size_itself(kernel):
    layer = PackedBinaryConv2d.from_binary_conv(BinaryConv2d(64, 8, 3, method="direct"), "cpp_popcount")
    xb = pack_signs(torch.randn(1, 64, 1, 1), 0, "cpp")
    for h_out in (-1, 0):  # what (1 - 3) // 1 + 1 and (2 - 3) // 1 + 1 give
        with pytest.raises(RuntimeError, match="smaller than the kernel"):
            kernel.packed_conv(xb, layer._kernel_weights(), 64, 8, 3, 3, 1, 1, h_out, h_out, None, None, None,
                               None, None, None, False, None, None, None, False, None, None, 0, 0, True, False)


@pytest.mark.parametrize("simd", [False, True])
@pytest.mark.parametrize("method", ["case1", "case4"])
def test_relu_and_residual_written_anew_or_over_the_residual(kernel, simd, method):
    # packed_conv's float epilogue, residual + max(count * Gamma, 0), against the fused float layer; write_y 2
    # writes it over the residual (the memory of the residual tensor), 1 into a new tensor: the same values;
    # then a per-channel multiply, add and ReLU after it (a following batch norm), as torch rounds them
    layer = _layer(70, 40, 3, 1, 1, method, "zero", input_size=(9, 7), seed=7)
    x = torch.randn(2, 70, 9, 7, generator=torch.Generator().manual_seed(8))
    packed_layer = PackedBinaryConv2d.from_binary_conv(layer, "cpp_popcount")
    residual = torch.randn(2, 9 * 7, 40, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = residual + torch.relu(layer.fuse()(x)).permute(0, 2, 3, 1).reshape(2, 9 * 7, 40)
    xb = pack_signs(x, 1, "cpp")
    head = (xb, packed_layer._kernel_weights(), 70, 40, 3, 3, 1, 1, 9, 7, *packed_layer.correction_table((9, 7)),
            *packed_layer.gamma_operands(), True)
    none = (None, None, False, None, None)  # no affine map after the residual, no next layer's threshold
    y_new = kernel.packed_conv(*head, residual, *none, 0, 0, 1, simd)[0]
    assert torch.equal(y_new, expected)
    over = residual.clone()
    y_over = kernel.packed_conv(*head, over, *none, 0, 0, 2, simd)[0]
    assert torch.equal(y_over, expected) and torch.equal(over, expected)
    assert y_over.data_ptr() == over.data_ptr()
    scale, shift = torch.randn(2, 40, generator=torch.Generator().manual_seed(10))
    y_post = kernel.packed_conv(*head, residual, scale, shift, True, None, None, 0, 0, 1, simd)[0]
    assert torch.equal(y_post, torch.relu(expected * scale + shift))  # a following batch norm and ReLU
    with pytest.raises(RuntimeError, match="the residual, which is not given"):
        kernel.packed_conv(*head, None, *none, 0, 0, 2, simd)
    with pytest.raises(RuntimeError, match="write_y must be 0"):
        kernel.packed_conv(*head, residual, *none, 0, 0, 3, simd)


@pytest.mark.parametrize("simd", [False, True])
@pytest.mark.parametrize("c", [64, 130], ids=["one word, unrolled", "three words"])
@pytest.mark.parametrize("kind", ["y", "signs", "block"])
@pytest.mark.parametrize("method", packed.SUPPORTED_METHODS)
@pytest.mark.parametrize("pad_mode", ["zero", "minus_one"])
def test_each_epilogue_on_tiles_within_a_row_and_across_rows(kernel, simd, c, kind, method, pad_mode):
    """packed_conv's float epilogues (the float output alone; the next layer's signs alone; a block's ReLU,
    residual, output and signs) on rows of 20 pixels: tiles of 6 pixels inside a row, at its border columns, and
    across two rows, every Gamma (Case 3's per-pixel factor, Case 4's per-row and per-column ones) and pad mode,
    against the fused float layer and pack_signs of its output."""
    layer = _layer(c, 40, 3, 1, 1, method, pad_mode, input_size=(5, 20), seed=11)
    x = torch.randn(2, c, 5, 20, generator=torch.Generator().manual_seed(12))
    packed_layer = PackedBinaryConv2d.from_binary_conv(layer, "cpp_popcount")
    g = torch.Generator().manual_seed(13)
    scale, thr = torch.where(torch.arange(40) % 3 == 0, -1.0, 1.0), torch.randn(40, generator=g) * 20
    residual = torch.randn(2, 5 * 20, 40, generator=g) * 20
    with torch.no_grad():
        y = layer.fuse()(x)  # (2, 40, 5, 20)
    relu, res, write_y = {"y": (False, None, 1), "signs": (False, None, 0), "block": (True, residual, 1)}[kind]
    if kind == "block":
        y = residual + torch.relu(y).permute(0, 2, 3, 1).reshape(2, 100, 40)
        y = y.reshape(2, 5, 20, 40).permute(0, 3, 1, 2)
    nxt = (None, None) if kind == "y" else (scale, thr)
    out, bits = kernel.packed_conv(pack_signs(x, 1, "cpp"), packed_layer._kernel_weights(), c, 40, 3, 3, 1, 1, 5, 20,
                                   *packed_layer.correction_table((5, 20)), *packed_layer.gamma_operands(), relu, res,
                                   None, None, False, *nxt, 1, 1, write_y, simd)
    if kind == "signs":
        assert out is None
    else:
        assert torch.equal(out, y.permute(0, 2, 3, 1).reshape(2, 100, 40))
    if kind != "y":
        assert torch.equal(bits, kernel.pack_signs(y.contiguous(), 1, 1, scale, thr, False))


@pytest.mark.parametrize("method", ["case2", "case4"])  # case4: the int8 tiles' Gamma factors must go too
@pytest.mark.parametrize("pad_mode", ["zero", "minus_one"])
def test_load_state_dict_after_a_call_takes_the_new_weights(backend, pad_mode, method):
    old, new = (PackedBinaryConv2d.from_binary_conv(_layer(70, 40, 3, 1, 1, method, pad_mode, 5, seed=s), backend)
                for s in (1, 2))
    x = torch.randn(2, 70, 5, 5, generator=torch.Generator().manual_seed(3))
    old(x)  # fills the caches (kernel weights, border correction) from the old weights
    old.load_state_dict(new.state_dict())
    assert torch.equal(old(x), new(x))


# ---------------------------------------------------------------- backend selection


def test_auto_defers_to_the_environment_variable(monkeypatch):
    monkeypatch.setenv(packed.ENV_VAR, "numpy")
    assert backend_info("auto").name == "numpy"
    assert backend_info(None).name == "numpy"


def test_a_fallback_warns_once_and_names_the_cause(monkeypatch):
    error = packed.backend._build_error(RuntimeError("Error building extension 'x'\n[1/2] c++ -c packed_conv.cpp\n"
                                             "/bin/sh: 1: c++: not found\nninja: build stopped"))
    assert "c++: not found" in error
    monkeypatch.delenv(packed.ENV_VAR, raising=False)
    monkeypatch.setattr(packed.backend, "_compiled", lambda: (None, error))
    packed.backend._warn_fallback.cache_clear()
    with pytest.warns(RuntimeWarning, match="c\\+\\+: not found"):
        backend_info("auto")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend_info("auto").name == "numpy"  # no second warning


def test_the_build_is_portable_and_avx512_is_a_run_time_choice():
    assert not any("march" in flag for flag in packed.backend._CFLAGS)
    try:
        info = backend_info("cpp")
    except RuntimeError as err:
        pytest.skip(str(err))
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if flags:
        has = all(f in flags.split() for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vpopcntdq"))
        assert info.simd == has
    assert backend_info("cpp_generic").simd is False


@pytest.mark.parametrize("k,stride,padding,size", [(3, 1, 1, 5), (3, 2, 1, 7), (5, 1, 2, 4), (5, 2, 2, 9), (3, 1, 1, 1),
                                                   (3, 2, 1, (6, 3))])
def test_the_correction_table_gives_every_pixel_its_correction(k, stride, padding, size):
    size = (size, size) if isinstance(size, int) else size
    layer = PackedBinaryConv2d.from_binary_conv(_layer(70, 9, k, stride, padding, pad_mode="zero", seed=k), "numpy")
    table, rows, cols = layer.correction_table(size)
    h_out, w_out = layer.out_size(size)
    assert rows.shape == (h_out,) and cols.shape == (w_out,) and table.shape[2] == 9
    assert table.shape[0] <= 2 * padding + 1 and table.shape[1] <= 2 * padding + 1  # one row per kind of border
    want = layer._correction(size).view(h_out, w_out, 9)
    for y in range(h_out):
        for x in range(w_out):
            assert torch.equal(table[rows[y], cols[x]], want[y, x])
