"""The whole-network benchmark: the exactness check covers every real-layer option of the packed network; each layer's
work and its rate against the ceilings of its path."""

import pandas as pd
import pytest
import torch
import torch.nn as nn

from xnorpp_core.deploy import whole_network as bench
from xnorpp_core.layers import BinaryConv2d
from xnorpp_core.models import build_model
from xnorpp_core.packed import backend_info
from xnorpp_core.packed.network import PackedNetwork


class _Progress:
    def update(self, n=1):
        pass


def test_exactness_counts_every_real_layer_option():
    cfg = bench.BenchInferenceConfig(methods=("case4",), check_inputs=3, real_layers=bench.REAL_LAYERS)
    g = torch.Generator().manual_seed(0)
    binary = {"case4": bench.trained_like(build_model("resnet18", "case4", 1000, 224), g)}
    exact = bench.exactness(cfg, backend_info("auto"), binary, _Progress())
    assert list(exact.real_layers) == list(bench.REAL_LAYERS)
    assert (exact.inputs == 3).all() and (exact.logits_equal == 3).all() and (exact.predictions_agree == 3).all()


def test_packed_names_and_real_layer_choices():
    assert bench.packed_name("case1", "float") == "packed_case1"
    assert bench.packed_name("case1", "int8") == "packed_case1_int8real"
    with pytest.raises(ValueError, match="real_layers must be among"):
        bench.BenchInferenceConfig(real_layers=("double",))


def test_layer_work_counts_every_layers_multiply_adds():
    # against hooks on the float model: each binary convolution's output elements times c kh kw, and the int8
    # layers' likewise (the stem before its pooling)
    model = build_model("resnet18", "case4", 10, 64).eval()
    net = PackedNetwork(model, "cpp", real_layers="int8")
    expected = {}

    def count(name):
        def hook(m, args, out):
            k = m.weight[0].numel()  # c kh kw, or in_features
            expected[name] = ("int8" if m.method == "real" else "binary") if isinstance(m, BinaryConv2d) else "int8", \
                out.numel() * k
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(count(name))
    with torch.no_grad():
        model(torch.zeros(3, 3, 64, 64))
    work = net.layer_work(3)
    assert {name: (kind, macs) for name, (kind, _, macs) in work.items()} == expected
    assert sum(macs for kind, _, macs in work.values() if kind == "binary") == 3 * sum(
        o * c * 9 * h * w for c, o, h in [(64, 64, 16)] * 4 + [(64, 128, 8)] + [(128, 128, 8)] * 3 + [(128, 256, 4)]
        + [(256, 256, 4)] * 3 + [(256, 512, 2)] + [(512, 512, 2)] * 3 for w in [h])


def test_layer_table_rates_against_the_ceiling():
    layers = pd.DataFrame([{"threads": 1, "kind": "binary", "multiply_adds": 6e9, "median_ms": 2.0},
                           {"threads": 2, "kind": "int8", "multiply_adds": 1e9, "median_ms": 1.0}])
    table = bench.layer_table(layers, {"clock_hz": 3e9, "binary_peak": 1.2e12, "int8_peak": 2e11})
    assert list(table.per_second) == [3e12, 1e12]
    assert table.per_cycle.tolist() == pytest.approx([1000.0, 1e12 / 2 / 3e9])  # per thread
    assert table.ceiling_per_cycle.tolist() == pytest.approx([400.0, 2e11 / 3e9])
    assert table.of_ceiling.tolist() == pytest.approx([2.5, (1e12 / 2) / 2e11])
    none = bench.layer_table(layers, {"clock_hz": None, "binary_peak": None, "int8_peak": None})
    assert none.per_cycle.isna().all() and none.of_ceiling.isna().all()


@pytest.mark.parametrize("simd", [False, True])
def test_the_ceilings_are_rates_of_this_core(kernel, simd):
    clock = kernel.core_clock(0.02)
    assert 1e8 < clock < 1e10  # cycles per second: a core between 0.1 and 10 GHz
    for peak in (kernel.popcount_peak(0.02, simd), kernel.vnni_peak(0.02, simd)):
        assert 0 < peak / clock < 4096  # multiply-adds per cycle: positive, and below what 8 AVX-512 units could do
    for fn in (kernel.core_clock, lambda s: kernel.popcount_peak(s, simd), lambda s: kernel.vnni_peak(s, simd)):
        for bad in (0.0, -1.0, float("inf"), float("nan"), 61.0):
            with pytest.raises(RuntimeError, match="seconds must be"):
                fn(bad)
