"""The real network in ONNX Runtime and OpenVINO (``xnorpp_core.deploy.runtimes``), as ``real_forms`` gives it."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from xnorpp_core.deploy import forms, runtimes
from xnorpp_core.deploy.timing import precision_of

RUNTIME_FORMS = ("fp32_ort", "int8_ort", "fp32_ov", "bf16_ov", "int8_ov", "int8_nncf")
OPENVINO_PRECISION = {"fp32_ov": "f32", "bf16_ov": "bf16", "int8_ov": "f32", "int8_nncf": "f32"}


class _Tiny(nn.Module):
    """A convolution (BN, ReLU) and a linear layer: the two layer types every real network has."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _openvino_offers_bf16():
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def tiny():
    """``(model, calibration, forms, unavailable)``: the runtime forms of a tiny network, built by ``real_forms``."""
    torch.manual_seed(0)
    model = _Tiny().eval()
    with torch.no_grad():
        model.bn.running_mean.normal_(0, 0.3)
        model.bn.running_var.uniform_(0.5, 2.0)
    calibration = [torch.randn(2, 3, 8, 8) for _ in range(4)]
    built, unavailable = forms.real_forms({"net": model}, {"net": model}, calibration=calibration, engines=())
    return model, calibration, built, unavailable


def _form(tiny, kind):
    """The form ``<kind>_net`` of ``tiny``; only OpenVINO's bf16 may be missing, on a CPU without bf16."""
    _, _, built, unavailable = tiny
    name = f"{kind}_net"
    if kind == "bf16_ov" and not _openvino_offers_bf16():
        assert "no bf16" in unavailable[name]
        return None
    assert name in built, unavailable.get(name)
    return built[name]


@pytest.mark.parametrize("kind", RUNTIME_FORMS)
def test_each_runtime_form_stays_near_the_float_network(tiny, kind):
    model, calibration, _, _ = tiny
    form = _form(tiny, kind)
    if form is None:
        return
    x = torch.randn(3, 3, 8, 8)  # a batch size the export did not see
    with torch.inference_mode():
        ref, y = model(x), form(x)
    assert y.dtype == torch.float32 and y.shape == ref.shape
    tol = {"fp32": 1e-5, "bf16": 0.05, "int8": 0.1}[precision_of(f"{kind}_net")]
    assert (y - ref).abs().max() <= tol * ref.abs().max() + 1e-6, kind


def _producer(graph, name):
    return next(n for n in graph.node if name in n.output)


def test_int8_onnx_model_is_qdq_with_per_channel_int8_weights_and_uint8_activations(tiny):
    import onnx
    from onnx import TensorProto, numpy_helper

    qdq = _form(tiny, "int8_ort").model
    assert _form(tiny, "int8_ov").model is qdq  # OpenVINO compiles the very same QDQ model
    graph = onnx.load_from_string(qdq).graph
    initializers = {i.name: i for i in graph.initializer}
    layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert sorted(n.op_type for n in layers) == ["Conv", "Gemm"]
    for layer in layers:
        activation, weight = (_producer(graph, name) for name in layer.input[:2])
        assert activation.op_type == "DequantizeLinear" and weight.op_type == "DequantizeLinear", layer.name
        assert initializers[activation.input[2]].data_type == TensorProto.UINT8, layer.name
        assert _producer(graph, activation.input[0]).op_type == "QuantizeLinear", layer.name
        w, scale = initializers[weight.input[0]], numpy_helper.to_array(initializers[weight.input[1]])
        axis = next(a.i for a in weight.attribute if a.name == "axis")
        assert w.data_type == TensorProto.INT8, layer.name
        assert scale.shape == (w.dims[axis],) and w.dims[axis] > 1, layer.name  # one scale per output channel
        codes = np.abs(numpy_helper.to_array(w).astype(np.int32))
        per_channel = codes.max(axis=tuple(i for i in range(codes.ndim) if i != axis))
        assert (per_channel == 127).all(), (layer.name, per_channel)  # symmetric: each channel's largest is 127
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and all(initializers[n.input[2]].data_type == TensorProto.UINT8 for n in quantize)


def test_nncf_form_is_quantized_by_openvino():
    import openvino as ov

    calibration = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    model = runtimes.quantize_nncf(runtimes.export_onnx(_Tiny().eval(), calibration[0]), calibration)
    ops = [op.get_type_name() for op in model.get_ordered_ops()]
    assert isinstance(model, ov.Model) and ops.count("FakeQuantize") >= 2, ops


def _settings(form):
    """``(intra-op threads, inter-op parallelism, precision)`` as the runtime's own session reports them."""
    session = form.session
    if isinstance(form, runtimes.OrtForm):
        import onnxruntime as ort

        options = session.get_session_options()
        sequential = options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        return options.intra_op_num_threads, (options.inter_op_num_threads, sequential), "f32"
    compiled = session.get_compiled_model()
    precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    return compiled.get_property("INFERENCE_NUM_THREADS"), (compiled.get_property("NUM_STREAMS"), True), precision


@pytest.mark.parametrize("kind", RUNTIME_FORMS)
def test_each_session_follows_torchs_thread_count(tiny, kind):
    form = _form(tiny, kind)
    if form is None:
        return
    x, before = tiny[1][0], torch.get_num_threads()
    try:
        for threads in (2, 1, 2):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                form(x)
            assert _settings(form) == (threads, (1, True), OPENVINO_PRECISION.get(kind, "f32")), (kind, threads)
            session = form.session
            form(x)
            assert form.session is session  # built once per thread count, not per call
    finally:
        torch.set_num_threads(before)


MISSING = {  # package -> the forms it leaves out
    "onnxscript": RUNTIME_FORMS,  # the exporter needs it
    "onnxruntime": ("fp32_ort", "int8_ort", "int8_ov"),  # the QDQ model comes from its quantizer
    "openvino": ("fp32_ov", "bf16_ov", "int8_ov", "int8_nncf"),
    "nncf": ("int8_nncf",),
}


@pytest.mark.parametrize("package", MISSING)
def test_a_missing_package_leaves_its_forms_out_by_name(monkeypatch, package):
    missing = {f"{kind}_net" for kind in MISSING[package]}
    no_bf16 = set() if _openvino_offers_bf16() else {"bf16_ov_net"} - missing  # left out for the CPU's sake
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")] + [package]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as for a package not installed
    built, unavailable = runtimes.runtime_forms("net", _Tiny().eval(), [torch.randn(1, 3, 8, 8)])
    assert set(unavailable) == missing | no_bf16, unavailable
    assert all(package in unavailable[name] for name in missing), unavailable
    assert set(built) == {f"{kind}_net" for kind in RUNTIME_FORMS} - missing - no_bf16


def test_the_library_imports_without_the_runtimes():
    blocked = ", ".join(repr(p) for p in runtimes.RUNTIME_PACKAGES)
    code = (f"import sys\nfor p in ({blocked},): sys.modules[p] = None\n"
            "import xnorpp_core.deploy.whole_network, xnorpp_core.deploy.tradeoff\n"
            "from xnorpp_core.deploy import runtimes\n"
            "print(runtimes.runtime_forms('net', None, [])[0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{}"


def test_versions_names_every_runtime_package():
    found = runtimes.versions()
    assert set(found) == set(runtimes.RUNTIME_PACKAGES)
    assert found["onnxruntime"] and found["openvino"]  # the deploy extra is installed with the suite
