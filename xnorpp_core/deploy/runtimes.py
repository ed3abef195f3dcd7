"""The real network in the runtimes an x86 user deploys it with: ONNX Runtime and OpenVINO.

The network is exported to ONNX once (``torch.onnx.export``, the ``torch.export``-based exporter, the
batch dimension dynamic) and run as:

- ``fp32_ort_<net>``: ONNX Runtime, CPU execution provider, every graph optimization;
- ``fp32_ov_<net>`` / ``bf16_ov_<net>``: OpenVINO on the CPU with the inference precision hint set to
  ``f32`` / ``bf16`` (left unset, OpenVINO runs bf16 where the CPU has AVX-512 BF16 or AMX); the bf16
  form only where OpenVINO offers bf16 on this CPU;
- ``int8_ort_<net>`` / ``int8_ov_<net>``: static post-training quantization by ONNX Runtime's tools
  (``quant_pre_process``, then ``quantize_static`` in the QDQ format: int8 weights per output channel,
  uint8 activations, ranges by min-max over the calibration inputs), the same QDQ model run by ONNX
  Runtime and compiled by OpenVINO (precision hint ``f32`` for what stays in float);
- ``int8_nncf_<net>``: OpenVINO's own post-training quantization (``nncf.quantize`` of the OpenVINO
  model with its default preset, on the same calibration inputs), compiled as above.

Each form is an ``nn.Module`` that takes and returns a torch tensor (``torch.from_numpy`` / ``.numpy()``
views around the runtime's call). Its session (ONNX Runtime; OpenVINO: a compiled model) has as many
intra-op threads as torch has at the call (``torch.get_num_threads()``): one is built at the first call
under a thread count and kept until the count changes, so a timed call after a warm-up never includes
it. Inter-op parallelism is off (ONNX Runtime: one inter-op thread, sequential execution; OpenVINO: one
stream, latency hint). ONNX Runtime's intra-op workers do not spin-wait after a call
(``session.intra_op.allow_spinning`` off): in one process where forms are timed in turn, a runtime whose
workers keep spinning takes the cores from whichever form comes next (on 2 cores at 2 threads, seen to
slow the next form more than twofold), and costs itself a little (a worker woken for each call).

The packages (``onnx``, ``onnxscript``, ``onnxruntime``, ``openvino``, ``nncf``: the ``deploy`` extra)
are imported only when a form is built: a form whose package is missing, or whose export, quantization
or first call fails, is left out with its reason, never raised.
"""

import contextlib
import ctypes
import functools
import io
import logging
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from ..provenance import package_versions

__all__ = ["RUNTIME_PACKAGES", "versions", "export_onnx", "quantize_qdq", "quantize_nncf", "OrtForm",
           "OpenVinoForm", "openvino_core", "signal_stack", "keeping_signal_stack", "build_form", "runtime_forms"]

RUNTIME_PACKAGES = ("onnx", "onnxscript", "onnxruntime", "openvino", "nncf")


def versions():
    """``{package: version or None}`` of ``RUNTIME_PACKAGES``."""
    return package_versions(RUNTIME_PACKAGES)


def export_onnx(model, example):
    """``model`` (eval) as ONNX bytes, traced on ``example`` with a dynamic batch dimension."""
    program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    return program.model_proto.SerializeToString()


@contextlib.contextmanager
def _quiet():
    """The quantizers' log messages (per-tensor fallbacks, statistics) and progress bars held back; the
    logging switch restored after."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


class _SignalStack(ctypes.Structure):  # POSIX stack_t
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _sigaltstack():
    """The C library's ``sigaltstack``, or ``None`` where it has none."""
    return getattr(ctypes.CDLL(None, use_errno=True), "sigaltstack", None)


def signal_stack():
    """The calling thread's alternate signal stack as ``(address, flags, size)`` (``sigaltstack``); ``None``
    where the C library offers no ``sigaltstack``."""
    if _sigaltstack() is None:
        return None
    current = _SignalStack()
    _sigaltstack()(None, ctypes.byref(current))
    return current.ss_sp, current.ss_flags, current.ss_size


@contextlib.contextmanager
def keeping_signal_stack():
    """The calling thread's alternate signal stack put back as it was when the block ends.

    OpenVINO's CPU plugin gives the thread that compiles a model (or quantizes one, ``nncf``) an alternate
    signal stack of its own, freed with the plugin; Python runs its signal handlers on the thread's alternate
    stack, so a handler that runs after the plugin is freed (a ``DataLoader``'s ``SIGCHLD``, faulthandler's)
    would run on freed memory and crash the process. With the thread's own stack back, no handler ever
    runs on the plugin's."""
    saved = signal_stack()
    try:
        yield
    finally:
        if saved is not None and signal_stack() != saved:
            address, flags, size = saved
            _sigaltstack()(ctypes.byref(_SignalStack(address, flags, size)), None)


@functools.cache
def openvino_core():
    """The process's one OpenVINO ``Core``, as OpenVINO advises.

    One is also needed for safety: OpenVINO's CPU plugin gives the thread that loads it an alternate signal
    stack of its own and puts the previous one back only when plugins are freed in the reverse order of their
    loading; ``Core`` objects made and dropped per model leave the thread a freed signal stack, and the next
    Python signal handler (a ``DataLoader``'s ``SIGCHLD``) then crashes the process."""
    import openvino as ov

    return ov.Core()


class _Calibration:
    """The calibration inputs as ONNX Runtime's quantizer reads them (a ``CalibrationDataReader``)."""

    def __init__(self, name, calibration):
        self.items = iter([{name: x.detach().contiguous().numpy()} for x in calibration])

    def get_next(self):
        return next(self.items, None)


def quantize_qdq(onnx_bytes, calibration):
    """The QDQ int8 model (ONNX bytes) of ``onnx_bytes`` by ONNX Runtime's static quantization: int8
    weights per output channel, uint8 activations, min-max ranges over ``calibration`` (input tensors)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    reader = type("Reader", (_Calibration, CalibrationDataReader), {})
    model = onnx.load_from_string(onnx_bytes)
    with tempfile.TemporaryDirectory() as folder:
        pre, out = Path(folder) / "pre.onnx", Path(folder) / "int8.onnx"
        with _quiet():
            quant_pre_process(model, pre)
            quantize_static(pre, out, reader(model.graph.input[0].name, calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return out.read_bytes()


def quantize_nncf(onnx_bytes, calibration):
    """The OpenVINO model of ``onnx_bytes`` quantized to int8 by ``nncf.quantize`` (default preset),
    calibrated on ``calibration`` (input tensors)."""
    import nncf

    model = openvino_core().read_model(io.BytesIO(onnx_bytes))
    data = nncf.Dataset([x.detach().contiguous().numpy() for x in calibration])
    with _quiet():
        return nncf.quantize(model, data, subset_size=len(calibration))


class _RuntimeForm(nn.Module):
    """A runtime's model as a torch module; ``session`` (an ONNX Runtime session, an OpenVINO infer request) is
    built for torch's thread count at the call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.session, self.threads = model, None, None

    def forward(self, x):  # (N, C, H, W) float32 -> (N, classes) float32
        threads = torch.get_num_threads()
        if self.session is None or self.threads != threads:
            self.session, self.threads = None, threads  # the previous one freed first
            with keeping_signal_stack():
                self.session = self.build(threads)
        return torch.from_numpy(self.run(x.detach().contiguous().numpy()))


class OrtForm(_RuntimeForm):
    """``model`` (ONNX bytes) in an ONNX Runtime session on the CPU execution provider."""

    def build(self, threads):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        # its workers sleep after a call rather than spin on the cores that the next form timed needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(self.model, options, providers=["CPUExecutionProvider"])
        self.input = session.get_inputs()[0].name
        return session

    def run(self, x):
        return self.session.run(None, {self.input: x})[0]


class OpenVinoForm(_RuntimeForm):
    """``model`` (ONNX bytes or an OpenVINO model) compiled by OpenVINO for the CPU, inference precision
    ``precision`` (``f32`` or ``bf16``)."""

    def __init__(self, model, precision):
        super().__init__(model)
        self.precision = precision

    def build(self, threads):
        core = openvino_core()
        model = core.read_model(io.BytesIO(self.model)) if isinstance(self.model, bytes) else self.model
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": self.precision,
                                                     "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                     "PERFORMANCE_HINT": "LATENCY"})
        return compiled.create_infer_request()

    def run(self, x):
        return self.session.infer({0: x}, share_inputs=True)[0]


def _openvino_bf16(model):
    """``OpenVinoForm(model, "bf16")`` where OpenVINO's CPU plugin offers bf16 on this CPU; raises where not."""
    if "BF16" not in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise RuntimeError("OpenVINO's CPU plugin offers no bf16 on this CPU")
    return OpenVinoForm(model, "bf16")


def build_form(forms, unavailable, name, make):
    """``forms[name] = make()``; where it raises (a missing package, a failing tool), ``unavailable[name]`` is
    the reason instead, never raised."""
    try:
        with keeping_signal_stack():
            forms[name] = make()
    except Exception as err:  # noqa: BLE001 - any failure leaves the form out, with its reason
        unavailable[name] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def _ready(form, x):
    """``form`` (eval) after one call on ``x``, which builds its session for the current thread count."""
    form.eval()
    with torch.inference_mode():
        form(x)
    return form


def runtime_forms(net, model, calibration):
    """``(forms, unavailable)``: the forms of the module docstring of ``model`` (eval), named for ``net``,
    each called once on ``calibration[0]``; and ``{name: reason}`` for those that could not be built.
    ``calibration``: input tensors ``(N, C, H, W)`` that calibrate the int8 forms; the first shapes the export."""
    sources, missing = {}, {}  # what the forms run (ONNX bytes, an OpenVINO model), or why it is missing
    build_form(sources, missing, "fp32", lambda: export_onnx(model, calibration[0]))
    for kind, quantize in (("qdq", quantize_qdq), ("nncf", quantize_nncf)):
        if "fp32" in sources:
            build_form(sources, missing, kind, lambda: quantize(sources["fp32"], calibration))
    plan = {f"fp32_ort_{net}": ("fp32", OrtForm), f"int8_ort_{net}": ("qdq", OrtForm),
            f"fp32_ov_{net}": ("fp32", lambda m: OpenVinoForm(m, "f32")), f"bf16_ov_{net}": ("fp32", _openvino_bf16),
            f"int8_ov_{net}": ("qdq", lambda m: OpenVinoForm(m, "f32")),
            f"int8_nncf_{net}": ("nncf", lambda m: OpenVinoForm(m, "f32"))}
    forms, unavailable = {}, {}
    for name, (source, make) in plan.items():
        if source in sources:
            build_form(forms, unavailable, name, lambda: _ready(make(sources[source]), calibration[0]))
        else:
            unavailable[name] = missing.get(source, missing.get("fp32"))
    return forms, unavailable
