"""The whole-network packed engine: threshold folding against brute force, exact logits on small networks."""

import functools

import numpy as np
import pytest
import torch
import torch.nn as nn

from xnorpp_core import packed
from xnorpp_core.models import BinaryResNet, binary_alexnet, binary_resnet18
from xnorpp_core.models.resnet import BasicBlock
from xnorpp_core.packed import backend_info
from xnorpp_core.packed.network import (PackedNetwork, _popcount_bounds, count_thresholds, float_thresholds,
                                        fused_emulation)
from xnorpp_core.scales import LearnedScale


@pytest.fixture(params=packed.BACKENDS)  # the emulated int8 tiles too: the tile path on every CPU
def backend(request):
    try:
        return backend_info(request.param).name
    except RuntimeError as err:
        pytest.skip(str(err))


def _bn(c, weight, bias, mean, var):
    bn = nn.BatchNorm2d(c).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        bn.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        bn.running_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        bn.running_var.copy_(torch.as_tensor(var, dtype=torch.float32))
    return bn


def _brute_force_counts(scale, chain, n_bits, shape):
    """bit(c) for every integer count c in [-n_bits, n_bits]: (2 n_bits + 1, o, h, w), straight from torch."""
    counts = torch.arange(-n_bits, n_bits + 1, dtype=torch.float32)[:, None, None, None].expand(-1, *shape)
    y = scale(counts.contiguous(memory_format=torch.channels_last))
    for m in chain:
        y = m(y)
    return y > 0


def _predicate(kind, t, counts):
    c = counts[:, None, None, None]
    return torch.where(kind == 2, c >= t, torch.where(kind == 3, c <= t, kind == 1))


# ---------------------------------------------------------------- threshold folding


def test_sign_of_zero_at_the_threshold_is_minus_one():
    # BN(relu(c)) = (c - 2) / 1 is exactly 0 at c = 2: sign(0) = -1, so the first +1 is c = 3
    bn = _bn(1, [1.0], [0.0], [2.0], [1.0 - 1e-5])
    kind, t = count_thresholds(lambda c: c, [nn.ReLU(), bn], 9, (1, 1, 1))
    assert kind.item() == 2 and t.item() == 3
    kind, t = count_thresholds(lambda c: c, [], 9, (1, 1, 1))  # plain sign: count > 0
    assert kind.item() == 2 and t.item() == 1


@pytest.mark.parametrize("gamma_shape", ["channel", "element"])
def test_count_thresholds_equal_brute_force(gamma_shape):
    # negative and positive Gamma, negative, zero and positive BN weights, per-channel or per-element Gamma
    g = torch.Generator().manual_seed(0)
    o, h, w, n_bits = 6, 3, 2, 40
    gamma = torch.randn(o, 1, 1, generator=g) if gamma_shape == "channel" else torch.randn(o, h, w, generator=g)
    gamma[0] = -gamma[0].abs()
    bn = _bn(o, [1.5, -0.7, 0.0, 2.0, -1.0, 0.3], torch.randn(o, generator=g), torch.randn(o, generator=g),
             torch.rand(o, generator=g) + 0.5)
    scale = lambda c: c * gamma  # noqa: E731
    for chain in ([nn.ReLU(), bn], [bn], [nn.ReLU()], []):
        kind, t = count_thresholds(scale, chain, n_bits, (o, h, w))
        expected = _brute_force_counts(scale, chain, n_bits, (o, h, w))
        got = _predicate(kind, t, torch.arange(-n_bits, n_bits + 1))
        assert torch.equal(got, expected)
    assert (kind == 3).any() and (kind == 2).any()  # both directions were exercised (the last chain: sign alone)


def test_float_thresholds_equal_brute_force():
    g = torch.Generator().manual_seed(1)
    c = 5
    bn = _bn(c, [1.5, -0.7, 0.0, 2.0, 1e-3], torch.randn(c, generator=g), torch.randn(c, generator=g),
             torch.rand(c, generator=g) + 0.5)
    for chain in ([bn], [nn.ReLU(), bn], []):
        s, t = float_thresholds(chain, (c, 2, 2))
        x = torch.cat([torch.randn(4000, c, generator=g) * 3, torch.zeros(1, c), -torch.zeros(1, c)])
        finite = t.isfinite()
        near = torch.where(finite, t * s, 0.0)  # the threshold itself and its float neighbours
        x = torch.cat([x, near[None], torch.nextafter(near, torch.tensor(np.inf))[None],
                       torch.nextafter(near, torch.tensor(-np.inf))[None]])
        y = x[:, :, None, None].expand(-1, -1, 2, 2).contiguous(memory_format=torch.channels_last)
        for m in chain:
            y = m(y)
        assert torch.equal(s * x > t, y[:, :, 0, 0] > 0)


def test_popcount_bounds_follow_the_count_thresholds():
    # count = n_bits + corr - 2 v; bit = (v <= bound) xor flip must equal the count predicate for every v
    g = torch.Generator().manual_seed(2)
    o, p, n_bits = 40, 3, 27
    kind = torch.randint(0, 4, (o, p), generator=g)
    t = torch.randint(-n_bits, n_bits + 1, (o, p), generator=g)
    corr = torch.randint(-6, 7, (p, o), generator=g, dtype=torch.int32)
    bound, flip = _popcount_bounds(kind, t, n_bits, corr, 64)
    assert bound.shape == (p, 64) and flip.shape == (p, 2)
    flips = ((flip.long()[..., None] >> torch.arange(32)) & 1).flatten(1).bool()  # (p, 64)
    for v in range(n_bits + 1):
        count = n_bits + corr.long() - 2 * v  # (p, o)
        expected = torch.where(kind.t() == 2, count >= t.t(), torch.where(kind.t() == 3, count <= t.t(),
                                                                          kind.t() == 1))
        got = (v <= bound.long()) ^ flips
        assert torch.equal(got[:, :o], expected)
        assert not got[:, o:].any()  # padding channels stay 0


# ---------------------------------------------------------------- whole networks, exact


def _randomized(model, seed=0):
    """Non-trivial BN (negative weights too) and learned factors of both signs, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                if m.affine:
                    m.weight.normal_(0, 1, generator=g)
                    m.bias.normal_(0, 0.5, generator=g)
            if isinstance(m, LearnedScale):
                for p in m.parameters():
                    p.mul_(torch.rand(p.shape, generator=g) - 0.3)
    return model.eval()


@pytest.mark.parametrize("pad_mode", ["zero", "minus_one"])
@pytest.mark.parametrize("method", packed.SUPPORTED_METHODS)
def test_packed_resnet_logits_equal_the_fused_emulation(backend, method, pad_mode):
    # one block per stage; widths that are not multiples of 64 (partial words) nor all of 32 (padded tiles)
    model = _randomized(BinaryResNet((1, 1, 1, 1), (16, 32, 48, 80), method, num_classes=10, input_size=12,
                                     pad_mode=pad_mode, small_input=True))
    net = PackedNetwork(model, backend)
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(net(x), fused_emulation(model)(x))
    kinds = [(b.source[0], b.folded, b.relu, b.residual is not None) for b in net.binaries]
    # every block folded and fused; with a compiled kernel each block's output is also packed for the next block
    first = [("float", True, False, False), ("bits", False, True, True)]
    rest = [("bits" if net.backend.name != "numpy" else "float", True, False, False), ("bits", False, True, True)]
    assert kinds == first + rest * 3
    assert [b.emit is not None for b in net.binaries[1::2]] == [net.backend.name != "numpy"] * 3 + [False]
    # each block's output is written over its residual (read by nothing after), by the compiled kernels, except
    # the first block's: its residual is the stem's ReLU, which the rule does not take for a new tensor
    assert [b.in_place for b in net.binaries] == [False, False] + [False, net.backend.name != "numpy"] * 3
    # the head's batch norm and ReLU run in the last binary layer's epilogue, by the compiled kernels
    assert [b.post[2] for b in net.binaries] == [False] * 7 + [net.backend.name != "numpy"]


class _ResidualReadAgain(nn.Module):
    """A block whose input is read again after the block's residual addition: ``block(x) + x``."""

    def __init__(self, method):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.block = BasicBlock(16, 16, 1, (8, 8), method, "zero")
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.block(x) + x)


@pytest.mark.parametrize("method", ["case1", "case4"])
def test_a_residual_read_again_is_not_written_over(backend, method):
    model = _randomized(_ResidualReadAgain(method))
    net = PackedNetwork(model, backend, input_size=8)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(net(x), fused_emulation(model)(x))
    assert [b.residual is not None for b in net.binaries] == [False, True]
    assert not any(b.in_place for b in net.binaries)


def test_packed_resnet18_logits_equal_the_fused_emulation():
    model = _randomized(binary_resnet18("case4", num_classes=10, input_size=12, small_input=True))
    net = PackedNetwork(model)
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(net(x), fused_emulation(model)(x))
    assert len(net.binaries) == 16


@pytest.mark.parametrize("method,pad_mode", list(zip(packed.SUPPORTED_METHODS, ["zero", "minus_one"] * 3)))
def test_packed_alexnet_logits_equal_the_fused_emulation(method, pad_mode):
    # one pad mode per method and the default backend: AlexNet's 4096-wide layers make each case a few seconds
    model = _randomized(binary_alexnet(method, num_classes=10, input_size=32, pad_mode=pad_mode, small_input=True))
    net = PackedNetwork(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(net(x), fused_emulation(model)(x))
    assert sum(b.folded for b in net.binaries) >= 2  # at least conv3 -> conv4 and fc6 -> fc7 folded


def test_fused_emulation_predicts_as_the_model():
    model = _randomized(binary_resnet18("case4", num_classes=10, input_size=12, small_input=True))
    x = torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(fused_emulation(model)(x), model(x), rtol=1e-4, atol=1e-4)


def test_timings_cover_every_category(backend):
    net = PackedNetwork(_randomized(binary_resnet18("case1", num_classes=10, input_size=12, small_input=True)),
                        backend)
    timings = {}
    net(torch.randn(1, 3, 12, 12), timings=timings)
    assert set(timings) == set(packed.network.CATEGORIES) and all(v > 0 for v in timings.values())


def test_bad_inputs_and_models_raise():
    net = PackedNetwork(_randomized(binary_resnet18("direct", 10, 12, small_input=True)), "numpy")
    with pytest.raises(ValueError, match=r"expected input \(N, 3, 12, 12\)"):
        net(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="has no packed form"):
        PackedNetwork(binary_resnet18("xnor", 10, 12, small_input=True).eval(), "numpy")
    with pytest.raises(ValueError, match="no binary convolution"):
        PackedNetwork(binary_resnet18("real", 10, 12, small_input=True).eval(), "numpy")


# ---------------------------------------------------------------- fused pooling, int8 real layers


@pytest.mark.parametrize("channels", [64, 70, 128])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("simd", [False, True])
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_max_pool_bits_equal_torch_then_pack_signs(kernel, channels, relu, simd, k, s, p):
    g = torch.Generator().manual_seed(channels + k)
    x = torch.randn(3, channels, 9, 8, generator=g).contiguous(memory_format=torch.channels_last)
    x[0, 1, 2, 3] = float("nan")
    scale = torch.where(torch.rand(channels, generator=g) > 0.3, 1.0, -1.0)
    thr = torch.randn(channels, generator=g) * 0.5
    y, bits = kernel.max_pool_bits(x, k, k, s, s, p, p, relu, scale, thr, 1, 2, simd)
    want = nn.functional.max_pool2d(torch.relu(x) if relu else x, k, s, p)
    torch.testing.assert_close(y, want, rtol=0, atol=0, equal_nan=True)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(bits, packed.pack_signs(scale[:, None, None] * want - thr[:, None, None], (1, 2), "numpy"))


@pytest.mark.parametrize("method,pad_mode", [("case1", "zero"), ("case4", "zero"), ("case3", "minus_one"),
                                             ("direct", "minus_one")])
def test_packed_resnet18_with_its_pooling_stem_equals_the_fused_emulation(backend, method, pad_mode):
    # the 7x7/2 stem and its max pooling (fused with the packing of the first block's input)
    model = _randomized(binary_resnet18(method, num_classes=10, input_size=40, pad_mode=pad_mode))
    net = PackedNetwork(model, backend)
    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(net(x), fused_emulation(model)(x))


@pytest.mark.parametrize("method", ["case1", "case4"])
def test_int8_real_layers_equal_their_emulation(backend, method):
    model = _randomized(binary_resnet18(method, num_classes=10, input_size=40))
    net = PackedNetwork(model, backend, real_layers="int8")
    x = torch.randn(3, 3, 40, 40, generator=torch.Generator().manual_seed(7))
    kinds = {name: type(m).__name__ for name, m in net.reference.named_modules()
             if isinstance(m, (packed.int8.Int8Conv, packed.int8.Int8Gemm))}
    assert kinds == {"graph.stem.0": "Int8Conv", "graph.fc": "Int8Gemm", **{
        f"graph.blocks.{i}.shortcut.0": "Int8Gemm" for i in (2, 4, 6)}}
    with torch.no_grad():
        logits = net(x)
        assert torch.equal(logits, net.reference(x))
        assert torch.equal(logits, fused_emulation(model, "int8", net_calibration(net))(x))
        real = fused_emulation(model)(x)
    assert not torch.equal(logits, real)  # the real layers did run in int8 ...
    torch.testing.assert_close(logits, real, rtol=0.2, atol=0.2 * float(real.abs().max()))  # ... close to float
    # compiled: the shortcuts and classifier by int8_gemm, the stem by int8_conv, which also packs the next layer's
    # signs (bits) where the binary layers take bits
    steps = [step for _, step in net._steps]
    compiled = net.backend.name != "numpy"
    assert [type(s).__name__ for s in steps].count("_Gemm") == 4 * compiled
    stems = [s for s in steps if type(s).__name__ == "_Int8Conv"]
    assert len(stems) == int(compiled) and all((s.emit is not None) == (not net.amx) for s in stems)


@pytest.mark.parametrize("pad_mode", ["zero", "minus_one"])
@pytest.mark.parametrize("method", packed.SUPPORTED_METHODS)
def test_one_call_runs_the_steps_of_forward(backend, method, pad_mode):
    """With int8 real layers every step is compiled, and the network runs them all in one call (``_one_call``),
    except on the int8 tiles and in numpy: the same logits as the steps one by one (the timed forward), and as
    the reference. Widths that are not multiples of 64, identity shortcuts (aliases) and int8 ones, a batch of 3."""
    model = _randomized(BinaryResNet((1, 1, 1, 1), (16, 32, 48, 80), method, num_classes=10, input_size=12,
                                     pad_mode=pad_mode, small_input=True), seed=8)
    net = PackedNetwork(model, backend, real_layers="int8")
    assert (net._one_call is not None) == (net.backend.name != "numpy" and not net.amx)
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        logits = net(x)
        assert torch.equal(logits, net(x, timings={}))
        assert torch.equal(logits, net.reference(x))
        assert torch.equal(net(x[:1]), logits[:1])  # the batch size is read per call


def test_a_plan_reads_each_view_and_refuses_what_it_cannot_call(kernel):
    x = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(10))
    expected = kernel.channel_mean(x.contiguous(memory_format=torch.channels_last), True)
    view = kernel.plan_views
    for given, seen in ((x, "channels_last"), (x.permute(0, 2, 3, 1).contiguous(), "nchw")):
        plan = kernel.Plan(2, 1)
        plan.add("channel_mean", (None, True), [(0, 0, view[seen])], [(0, 1, [])], [])
        assert torch.equal(plan.run(given), expected)
    plan = kernel.Plan(2, 1)  # a linear layer's rows (N, 1, 1, K) from (N, K); a result viewed as a given shape
    plan.add("channel_mean", (None, True), [(0, 0, view["rows"])], [(0, 1, [-1, 1])], [])
    assert torch.equal(plan.run(expected), kernel.channel_mean(expected.view(2, 1, 1, 5), True).view(2, 1))
    for args, inputs, message in (((), [], "no kernel nope"), ((None, True), [(0, 5, 0)], "no slot 5"),
                                  ((None, True), [(1, 0, 0)], "input at argument 1, which takes no tensor"),
                                  ((None, True, 1), [(0, 0, 0)], "2 arguments expected, got 3")):
        with pytest.raises(RuntimeError, match=message):
            kernel.Plan(2, 1).add("nope" if not args else "channel_mean", args, inputs, [], [])


def test_one_call_is_left_to_the_steps_where_a_real_layer_runs_in_torch(kernel):  # kernel: skips without a build
    model = _randomized(BinaryResNet((1, 1), (16, 32), "case1", num_classes=10, input_size=8, small_input=True))
    assert PackedNetwork(model, "cpp_generic")._one_call is None  # float real layers: torch modules


def net_calibration(net):
    """The default calibration inputs of ``PackedNetwork``: 8 draws of N(0, 1), seed 0."""
    return torch.randn(8, net.in_channels, *net.input_size, generator=torch.Generator().manual_seed(0))


def test_int8_real_layers_need_calibration_and_a_known_name():
    model = _randomized(binary_resnet18("case1", num_classes=10, input_size=12, small_input=True))
    with pytest.raises(ValueError, match="needs calibration inputs"):
        fused_emulation(model, "int8")
    with pytest.raises(ValueError, match="real_layers must be one of"):
        PackedNetwork(model, "numpy", real_layers="int4")


# ---------------------------------------------------------------- the head: batch norm and global pooling

@pytest.mark.parametrize("simd", [False, True])
@pytest.mark.parametrize("shape", [(1, 512, 7, 7), (3, 20, 2, 5), (2, 16, 1, 1)])
def test_channel_mean_equals_the_global_mean_module(kernel, simd, shape):
    # the kernel sums each channel's pixels in the order _GlobalMean states; both close to torch's own pooling
    x = torch.randn(shape, generator=torch.Generator().manual_seed(8)).contiguous(memory_format=torch.channels_last)
    mean = packed.network._GlobalMean()(x)
    assert torch.equal(kernel.channel_mean(x, simd), mean)
    torch.testing.assert_close(mean, x.mean((2, 3)))


def test_a_batch_norm_no_binary_layer_reads_becomes_a_multiply_and_add():
    model = _randomized(binary_resnet18("case4", num_classes=10, input_size=12, small_input=True))
    emulation = fused_emulation(model).graph
    affine = [n for n, m in emulation.named_modules() if isinstance(m, packed.network._ChannelAffine)]
    means = [n for n, m in emulation.named_modules() if isinstance(m, packed.network._GlobalMean)]
    assert affine == ["head.0"] and means == ["head.2"]  # the blocks' batch norms feed signs: kept
    bn, x = model.head[0], torch.randn(2, 512, 3, 3, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        y = emulation.get_submodule("head.0")(x)
        assert torch.equal(y, x * emulation.get_submodule("head.0").scale.view(1, -1, 1, 1)
                           + emulation.get_submodule("head.0").shift.view(1, -1, 1, 1))
        torch.testing.assert_close(y, bn(x))
    real = fused_emulation(binary_resnet18("real", num_classes=10, input_size=12, small_input=True).eval()).graph
    assert not any(isinstance(m, (packed.network._ChannelAffine, packed.network._GlobalMean))  # a real network's
                   for m in real.modules())  # folded form keeps torch's own batch norm and pooling


# ---------------------------------------------------------------- what the Python API refuses


def _small(method="case4", **kw):
    return _randomized(binary_resnet18(method, num_classes=10, input_size=16, small_input=True, **kw))


API_MISTAKES = {  # name: (model, PackedNetwork keywords, the one message)
    "an input size the layers were not built for": (
        _small, {"input_size": 20}, r"^input_size 20x20 does not fit the model: case4 layer was built for 16x16 "
                                    r"inputs, got 20x20$"),
    "input size 0": (_small, {"input_size": 0}, r"^input_size must be a side or an \(h, w\) pair, each an integer "
                                                r"from 1 to 4096, got 0$"),
    "a negative input size": (_small, {"input_size": -5}, r"^input_size must be .* got -5$"),
    "an input size as text": (_small, {"input_size": "96"}, r"^input_size must be .* got '96'$"),
    "a huge input size": (_small, {"input_size": 100_000}, r"^input_size must be .* got 100000$"),
    "an input size of three sides": (_small, {"input_size": (16, 16, 3)}, r"^input_size must be"),
    "calibration of another size": (
        _small, {"real_layers": "int8", "calibration": torch.zeros(4, 3, 32, 32)},
        r"^calibration must be float32 inputs \(n, 3, 16, 16\), n >= 1, got torch.float32 of shape \(4, 3, 32, 32\)$"),
    "no calibration inputs": (_small, {"real_layers": "int8", "calibration": torch.zeros(0, 3, 16, 16)},
                              r"^calibration must be float32 inputs"),
    "calibration of float64": (_small, {"real_layers": "int8", "calibration": torch.zeros(2, 3, 16, 16).double()},
                               r"^calibration must be float32 inputs .* got torch.float64"),
    "calibration with float real layers": (_small, {"calibration": torch.zeros(2, 3, 16, 16)},
                                           r"^calibration is read with real_layers='int8' only"),
    "unknown real layers": (_small, {"real_layers": "int4"}, r"^real_layers must be one of"),
    "a model in training mode": (lambda: _small().train(), {}, r"^model is in training mode: call model.eval\(\)"),
    "one module in training mode": (lambda: _trained_block(), {},
                                    r"^model is in training mode"),
    "a float64 model": (lambda: _small().double(), {}, r"^model holds torch.float64 tensors; the packed network "
                                                       r"takes a float32 model \(model.float\(\)\)$"),
    "an nn.Sequential": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), {"input_size": 8},
                         r"^model \(Sequential\) has no binary convolution to pack"),
    "a real-valued network": (lambda: _small("real"), {}, r"^model \(BinaryResNet\) has no binary convolution"),
    "not a module": (lambda: "resnet18", {}, r"^model must be an nn.Module, got str$"),
}


def _trained_block():
    model = _small()
    model.blocks[1].train()  # the root in eval mode, one block not
    return model


@pytest.mark.parametrize("case", API_MISTAKES)
def test_the_api_refuses_in_one_message_naming_the_argument(case, capsys):
    build, kwargs, message = API_MISTAKES[case]
    with pytest.raises(ValueError, match=message) as err:
        PackedNetwork(build(), "numpy", **kwargs)
    assert "\n" not in str(err.value)
    assert capsys.readouterr().err == ""  # no traceback printed on the way (torch.fx's ShapeProp prints one)


@functools.lru_cache(maxsize=None)
def _small_net(backend, real_layers):
    """``(model, its PackedNetwork)``, built once per backend and real-layer option for the tests below."""
    model = _small()
    return model, PackedNetwork(model, backend, real_layers=real_layers)


@pytest.mark.parametrize("real_layers", packed.network.REAL_LAYERS)
def test_an_empty_batch_gives_an_empty_result_of_the_logits_shape(backend, real_layers):
    _, net = _small_net(backend, real_layers)
    empty = torch.zeros(0, 3, 16, 16)
    assert net(empty).shape == net.reference(empty).shape == (0, 10)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    assert torch.equal(net(torch.cat([empty, x])), net.reference(x))  # and the batch after it is unchanged


def _non_finite(kind):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    if kind == "all NaN":
        return torch.full_like(x, float("nan"))
    x[1, 2, 5, 7] = {"one NaN": float("nan"), "one +inf": float("inf"), "one -inf": -float("inf")}[kind]
    return x


@pytest.mark.parametrize("real_layers", packed.network.REAL_LAYERS)
def test_non_finite_inputs_are_refused_by_the_packed_network_and_its_reference_alike(backend, real_layers):
    """With int8 real layers, a compiled network counts them in its stem's quantizing pass instead of a pass of its
    own: the same error."""
    model, net = _small_net(backend, real_layers)
    assert net._stem_checks == (real_layers == "int8" and backend != "numpy")
    for kind, count in (("all NaN", 3 * 16 * 16 * 2), ("one NaN", 1), ("one +inf", 1), ("one -inf", 1)):
        x = _non_finite(kind)
        for run in (net, net.reference, fused_emulation(model)):
            with pytest.raises(ValueError, match=f"^x holds {count} NaN or infinite values; the packed network "
                                                 "and its emulation take finite inputs only$"):
                run(x)
