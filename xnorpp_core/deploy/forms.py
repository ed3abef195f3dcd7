"""The real-valued network as a user would deploy it on a CPU: float32, bfloat16 and int8 forms.

A form's name starts with its precision: ``fp32_*``, ``bf16_*`` or ``int8_<engine>_*``
(``timing.precision_of``). The forms of one real network (``real_forms``):

- ``fp32_<net>_eager``: the model as built, eval mode;
- ``fp32_<net>_folded_cl``: every BN folded into its convolution, channels-last;
- ``bf16_<net>_folded_cl``: the same under ``torch.autocast("cpu", torch.bfloat16)`` (``Autocast``);
- ``fp32_<net>_compiled`` / ``bf16_<net>_compiled``: ``torch.compile`` of each folded form (``compile=True``)
  with inductor's freezing (``COMPILE_OPTIONS``: the weights become constants of the compiled graph, as
  PyTorch recommends for CPU inference), set for these compiles only;
- ``int8_<engine>_<net>``: torch's own post-training quantization, FX graph mode
  (``torch.ao.quantization.quantize_fx.prepare_fx`` / ``convert_fx`` with the engine's default qconfig
  mapping), calibrated on a few inputs, one per quantized engine that this torch offers on the
  CPU. The quantized engine is a process-wide setting of torch; ``QuantizedEngine`` sets it to the
  form's own engine for each call and restores it after;
- ``int8_pt2e_<net>_compiled``: PT2E quantization for inductor (``compile=True``), compiled with freezing;
- ``fp32_ort_<net>``, ``int8_ort_<net>``, ``fp32_ov_<net>``, ``bf16_ov_<net>``, ``int8_ov_<net>``,
  ``int8_nncf_<net>``: ONNX Runtime and OpenVINO (``runtimes``), with int8 calibrated on the same inputs.

A real network's fully connected layers run as linear layers: AlexNet's, written as convolutions over the
whole feature map, are given to ``real_forms`` rewritten by ``linear_classifier``.

A form that cannot be built (an API or a package missing, a quantizer or an exporter that fails on the
network) is left out and its reason returned beside the forms, never raised.
"""

import copy

import torch
import torch.nn as nn

from ..models import BinaryAlexNet
from .runtimes import build_form, runtime_forms

__all__ = ["INT8_API", "COMPILE_OPTIONS", "Autocast", "QuantizedEngine", "int8_engines", "quantize_int8_fx",
           "quantize_int8_pt2e", "compiled", "linear_classifier", "real_forms"]

INT8_API = "torch.ao.quantization.quantize_fx (FX graph mode), default qconfig mapping of each engine"
COMPILE_OPTIONS = {"freezing": True}  # inductor's settings for the compiled forms, applied while they compile


class Autocast(nn.Module):
    """Runs ``model`` under ``torch.autocast("cpu", torch.bfloat16)`` (bf16 convolutions and matmuls)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.autocast("cpu", torch.bfloat16):
            return self.model(x)


class QuantizedEngine(nn.Module):
    """Runs a quantized ``model`` with ``torch.backends.quantized.engine`` set to ``engine`` (restored after)."""

    def __init__(self, model, engine):
        super().__init__()
        self.model, self.engine = model, engine

    def forward(self, x):
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = self.engine
        try:
            return self.model(x)
        finally:
            torch.backends.quantized.engine = previous


def quantize_int8_fx(model, engine, calibration):
    """``model`` (eval) quantized to int8 by FX graph mode for ``engine``, calibrated on each tensor of
    ``calibration``; a ``QuantizedEngine``. Raises whatever torch raises when it cannot."""
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's deprecation notices of torch.ao.quantization
            prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping(engine),
                                  (calibration[0],))
            with torch.no_grad():
                for x in calibration:
                    prepared(x)
            quantized = convert_fx(prepared)
    finally:
        torch.backends.quantized.engine = previous
    return QuantizedEngine(quantized, engine).eval()


def quantize_int8_pt2e(model, calibration):
    """``model`` quantized to int8 by PT2E with ``X86InductorQuantizer`` (to be run through ``torch.compile``),
    from torch or, where torch no longer has it, from the ``torchao`` package. Raises ``ImportError`` when
    neither has it, and whatever torch raises when it cannot quantize."""
    try:
        from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torch.ao.quantization.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        try:
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
        except ImportError:
            raise ImportError("PT2E quantization is in neither torch.ao.quantization nor torchao") from None
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    graph = torch.export.export(copy.deepcopy(model).eval(), (calibration[0],)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in calibration:
            prepared(x)
    return convert_pt2e(prepared)


def compiled(model):
    """``torch.compile(model)`` for a fixed input shape, compiled (at its first call) with ``COMPILE_OPTIONS``.

    Inductor applies the options while it compiles this model only: ``torch._inductor.config`` is left as it
    is. Freezing takes effect when the first call runs without gradients (``torch.inference_mode``)."""
    return torch.compile(model, dynamic=False, options=COMPILE_OPTIONS)


def _linear(conv):
    """A convolution whose kernel covers its whole input (no padding), as the ``nn.Linear`` of the flattened input
    (channel, row, column order: the weights' own)."""
    kernel = tuple(conv.kernel_size)
    if conv.input_size != kernel or tuple(conv.padding) != (0, 0) or conv.groups != 1 or conv.dilation != (1, 1):
        raise ValueError(f"{conv} does not cover its whole input of {conv.input_size}")
    linear = nn.Linear(conv.weight[0].numel(), conv.out_channels, bias=conv.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.reshape(conv.out_channels, -1))  # (o, c kh kw)
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    return linear


def _batch_norm_1d(bn):
    """``nn.BatchNorm2d`` on a 1x1 map as the ``nn.BatchNorm1d`` of the flattened one (the same state)."""
    out = nn.BatchNorm1d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    out.load_state_dict(bn.state_dict())
    return out


def linear_classifier(model):
    """The real AlexNet (``BinaryAlexNet``, ``method="real"``) with fc6 and fc7 as the linear layers they are.

    The model writes them as convolutions over the whole feature map (fc6 a 6x6 kernel on the 6x6 map, fc7 a
    1x1 one on the 1x1 result); the copy returned (eval) has the same weights reshaped::

        BN2d -> flatten -> fc6 linear -> ReLU -> dropout -> BN1d -> fc7 linear -> ReLU -> dropout -> BN1d -> ReLU

    then fc8 as before. Any other network is returned as it is."""
    if not (isinstance(model, BinaryAlexNet) and model.method == "real"):
        return model
    fc6, drop6, fc7, drop7, bn8, relu8, _ = model.classifier
    out = copy.deepcopy(model).eval()
    out.classifier = nn.Sequential(copy.deepcopy(fc6.bn), nn.Flatten(), _linear(fc6.conv), copy.deepcopy(fc6.relu),
                                   copy.deepcopy(drop6), _batch_norm_1d(fc7.bn), _linear(fc7.conv),
                                   copy.deepcopy(fc7.relu), copy.deepcopy(drop7), _batch_norm_1d(bn8),
                                   copy.deepcopy(relu8)).eval()
    return out


def int8_engines():
    """The quantized engines this torch offers on the CPU (``torch.backends.quantized.supported_engines``)."""
    return tuple(e for e in torch.backends.quantized.supported_engines if e != "none")


def real_forms(models, folded, compile=False, calibration=(), engines=None, runtimes=True):
    """``(forms, unavailable)``: every form (module docstring) of each real network in ``models``
    (``{net: eval module}``), and ``{form: reason}`` for those that could not be built.

    ``folded`` gives each network BN-folded, channels-last (``{net: module}``); ``calibration`` the inputs
    int8 calibration runs (the first also shapes the ONNX export); ``engines`` the quantized engines (default:
    all offered); ``runtimes``: also the ONNX Runtime and OpenVINO forms."""
    forms, unavailable = {}, {}
    for net, model in models.items():
        forms[f"fp32_{net}_eager"] = model
        forms[f"fp32_{net}_folded_cl"] = folded[net]
        forms[f"bf16_{net}_folded_cl"] = Autocast(folded[net]).eval()
        if compile:
            forms[f"fp32_{net}_compiled"] = compiled(folded[net])
            forms[f"bf16_{net}_compiled"] = compiled(Autocast(folded[net]).eval())
        for engine in (int8_engines() if engines is None else engines):
            build_form(forms, unavailable, f"int8_{engine}_{net}", lambda: quantize_int8_fx(model, engine, calibration))
        if compile:
            build_form(forms, unavailable, f"int8_pt2e_{net}_compiled",
                       lambda: compiled(quantize_int8_pt2e(model, calibration)))
        if runtimes:
            built, missing = runtime_forms(net, model, calibration)
            forms.update(built)
            unavailable.update(missing)
    return forms, unavailable
