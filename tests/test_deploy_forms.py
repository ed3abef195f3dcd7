"""The real network's deployable forms (fp32, bf16, int8) and the choice of the fastest one per precision."""

import math

import pandas as pd
import pytest
import torch
import torch.nn as nn

from xnorpp_core.deploy import forms
from xnorpp_core.deploy.timing import fastest_per_precision, precision_of, speedups
from xnorpp_core.deploy.whole_network import trained_like
from xnorpp_core.models import build_model


def _timing(rows):
    return pd.DataFrame(rows, columns=["model", "threads", "batch", "ms", "median_ms"])


# Hand-made: in setting (1, 1) the fastest fp32 form by the fastest call (compiled, 30) is not the fastest by the
# median (folded, 33); int8 likewise (onednn by the fastest call, x86 by the median); packed and emulated have no
# precision. Setting (2, 8) has no bf16 form.
TIMING = _timing([
    ("fp32_tv_eager", 1, 1, 45.0, 48.0),
    ("fp32_tv_folded_cl", 1, 1, 31.0, 33.0),
    ("fp32_tv_compiled", 1, 1, 30.0, 36.0),
    ("bf16_tv_folded_cl", 1, 1, 20.0, 22.0),
    ("int8_x86_tv", 1, 1, 7.5, 8.0),
    ("int8_onednn_tv", 1, 1, 6.0, 9.0),
    ("emulated_case4", 1, 1, 1.0, 1.0),  # faster than all, but not a real form
    ("packed_case4", 1, 1, 2.0, 4.0),
    ("fp32_tv_folded_cl", 2, 8, 100.0, 110.0),
    ("int8_x86_tv", 2, 8, 20.0, 22.0),
    ("packed_case4", 2, 8, 10.0, 11.0),
])


@pytest.mark.parametrize("name, precision", [("fp32_tv_eager", "fp32"), ("bf16_real_compiled", "bf16"),
                                             ("int8_onednn_tv", "int8"), ("packed_case4", None),
                                             ("emulated_case1", None), ("fp32", "fp32"), ("int8real", None)])
def test_precision_of(name, precision):
    assert precision_of(name) == precision


def test_fastest_per_precision_chooses_per_statistic():
    best = fastest_per_precision(TIMING).set_index(["threads", "batch", "precision"])
    assert set(best.index) == {(1, 1, "fp32"), (1, 1, "bf16"), (1, 1, "int8"), (2, 8, "fp32"), (2, 8, "int8")}
    fp32 = best.loc[(1, 1, "fp32")]
    assert (fp32.fastest, fp32.fastest_ms, fp32.fastest_median, fp32.fastest_median_ms) == \
        ("fp32_tv_compiled", 30.0, "fp32_tv_folded_cl", 33.0)
    int8 = best.loc[(1, 1, "int8")]
    assert (int8.fastest, int8.fastest_ms, int8.fastest_median, int8.fastest_median_ms) == \
        ("int8_onednn_tv", 6.0, "int8_x86_tv", 8.0)
    assert best.loc[(2, 8, "int8")].fastest_median_ms == 22.0


def test_speedups_against_each_precision():
    s = speedups(TIMING, "packed_case4").set_index(["threads", "batch"])
    one = s.loc[(1, 1)]
    # median call: fastest median of the precision over packed's median (4.0); fastest call: over 2.0
    assert one.speedup_vs_fp32_median == pytest.approx(33.0 / 4.0)
    assert one.speedup_vs_fp32 == pytest.approx(30.0 / 2.0)
    assert one.speedup_vs_bf16_median == pytest.approx(22.0 / 4.0)
    assert one.speedup_vs_bf16 == pytest.approx(20.0 / 2.0)
    assert one.speedup_vs_int8_median == pytest.approx(8.0 / 4.0)
    assert one.speedup_vs_int8 == pytest.approx(6.0 / 2.0)
    assert (one.fastest_int8_median, one.fastest_int8) == ("int8_x86_tv", "int8_onednn_tv")
    two = s.loc[(2, 8)]
    assert two.speedup_vs_int8_median == pytest.approx(22.0 / 11.0)
    assert math.isnan(two.speedup_vs_bf16_median) and two.fastest_bf16 == ""


def test_speedups_of_an_untimed_model_is_empty():
    assert speedups(TIMING, "packed_case1").empty


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_real_forms_names_precisions_and_stays_near_the_float_network():
    """Every form is named by its precision and runs near the float network; an engine that cannot quantize is
    left out with its reason."""
    torch.manual_seed(0)
    model = _Tiny().eval()
    calibration = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    engines = tuple(e for e in ("x86", "onednn", "fbgemm") if e in forms.int8_engines())
    built, unavailable = forms.real_forms({"net": model}, {"net": model}, calibration=calibration,
                                          engines=(*engines, "no_such_engine"), runtimes=False)
    assert set(built) == {"fp32_net_eager", "fp32_net_folded_cl", "bf16_net_folded_cl",
                          *[f"int8_{e}_net" for e in engines]}
    assert set(unavailable) == {"int8_no_such_engine_net"}
    x = calibration[0]
    with torch.inference_mode():
        ref = model(x)
        for name, form in built.items():
            y = form(x)
            assert y.dtype == (torch.bfloat16 if name.startswith("bf16") else torch.float32), name
            tol = {"fp32": 1e-5, "bf16": 0.05, "int8": 0.1}[precision_of(name)]
            assert (y.float() - ref).abs().max() <= tol * ref.abs().max() + 1e-3, name
            if precision_of(name) == "int8":
                assert any("quantized" in type(m).__module__ for m in form.modules()), name


class _Engine(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(torch.backends.quantized.engine)
        return x


@pytest.mark.parametrize("engine", forms.int8_engines())
def test_quantized_engine_is_set_for_the_call_and_restored(engine):
    other = next(e for e in forms.int8_engines() if e != engine)
    inner, before = _Engine(), torch.backends.quantized.engine
    torch.backends.quantized.engine = other
    try:
        forms.QuantizedEngine(inner, engine)(torch.zeros(1))
        assert inner.seen == [engine]
        assert torch.backends.quantized.engine == other
    finally:
        torch.backends.quantized.engine = before


def test_compiled_forms_freeze_for_their_compile_only(monkeypatch):
    """The compiled form freezes its weights (inductor's ``freeze`` runs), gives the eager logits, and leaves
    inductor's global settings as they were."""
    import torch._inductor.config as inductor_config
    import torch._inductor.freezing as freezing

    frozen, freeze = [], freezing.freeze
    monkeypatch.setattr(freezing, "freeze", lambda *a, **k: frozen.append(1) or freeze(*a, **k))
    torch.manual_seed(0)
    model, x, before = _Tiny().eval(), torch.randn(2, 3, 8, 8), inductor_config.freezing
    torch._dynamo.reset()
    form = forms.compiled(model)
    with torch.inference_mode():
        y, ref = form(x), model(x)
    torch._dynamo.reset()
    assert frozen, "the compile did not freeze"
    assert inductor_config.freezing == before
    assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_real_forms_compile_every_compiled_form_with_freezing(monkeypatch):
    seen = []
    monkeypatch.setattr(forms, "compiled", lambda model: seen.append(model) or model)
    monkeypatch.setattr(forms, "quantize_int8_pt2e", lambda model, calibration: model)
    model = _Tiny().eval()
    built, _ = forms.real_forms({"net": model}, {"net": model}, compile=True, calibration=[torch.randn(1, 3, 8, 8)],
                                engines=(), runtimes=False)
    assert {n for n in built if n.endswith("_compiled")} == {"fp32_net_compiled", "bf16_net_compiled",
                                                               "int8_pt2e_net_compiled"}
    assert len(seen) == 3


@pytest.mark.parametrize("widths, size", [("paper", 227), ("torchvision", 224), ("paper", 64)])
def test_alexnet_classifier_as_linear_layers_gives_the_same_logits(widths, size):
    """fc6 and fc7 (convolutions over the whole map) as ``nn.Linear``: the same logits, no convolution left in
    the classifier; the binary AlexNet and other networks are returned as they are."""
    g = torch.Generator().manual_seed(0)
    model = trained_like(build_model("alexnet", "real", 10, size, widths=widths, small_input=size < 100), g)
    linear = forms.linear_classifier(model)
    assert not any(isinstance(m, nn.Conv2d) for m in linear.classifier.modules())
    assert [m.weight.shape[1] for m in linear.modules() if isinstance(m, nn.Linear)] == \
        [model.classifier[0].conv.weight[0].numel(), 4096, 4096]
    x = torch.randn(3, 3, size, size, generator=g)
    with torch.inference_mode():
        ref, y = model(x), linear(x)
    assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert isinstance(model.classifier[0].conv, nn.Conv2d)  # the model itself is left as it was
    binary = build_model("alexnet", "case4", 10, size, widths=widths, small_input=size < 100)
    assert forms.linear_classifier(binary) is binary
    resnet = build_model("resnet18", "real", 10, 32, small_input=True)
    assert forms.linear_classifier(resnet) is resnet
