"""The real-valued network as a user would deploy it on a CPU: float32, bfloat16 and int8 forms.

A form's name starts with its precision: ``fp32_*``, ``bf16_*`` or ``int8_<engine>_*``
(``timing.precision_of``). The forms of one real network (``real_forms``):

- ``fp32_<net>_eager``: the model as built, eval mode;
- ``fp32_<net>_folded_cl``: every BN folded into its convolution, channels-last;
- ``bf16_<net>_folded_cl``: the same under ``torch.autocast("cpu", torch.bfloat16)`` (``Autocast``);
- ``fp32_<net>_compiled`` / ``bf16_<net>_compiled``: ``torch.compile`` of each folded form (``compile=True``);
- ``int8_<engine>_<net>``: torch's own post-training quantization, FX graph mode
  (``torch.ao.quantization.quantize_fx.prepare_fx`` / ``convert_fx`` with the engine's default qconfig
  mapping), calibrated on a few random inputs, one per quantized engine that this torch offers on the
  CPU. The quantized engine is a process-wide setting of torch; ``QuantizedEngine`` sets it to the
  form's own engine for each call and restores it after.

A form that cannot be built (an API missing from the installed torch, a quantizer that fails on the
network) is left out and its reason returned beside the forms, never raised.
"""

import copy

import torch
import torch.nn as nn

__all__ = ["INT8_API", "Autocast", "QuantizedEngine", "int8_engines", "quantize_int8_fx", "quantize_int8_pt2e",
           "real_forms"]

INT8_API = "torch.ao.quantization.quantize_fx (FX graph mode), default qconfig mapping of each engine"


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


def int8_engines():
    """The quantized engines this torch offers on the CPU (``torch.backends.quantized.supported_engines``)."""
    return tuple(e for e in torch.backends.quantized.supported_engines if e != "none")


def real_forms(models, folded, compile=False, calibration=(), engines=None):
    """``(forms, unavailable)``: every form (module docstring) of each real network in ``models``
    (``{net: eval module}``), and ``{form or API: reason}`` for those that could not be built.

    ``folded`` gives each network BN-folded, channels-last (``{net: module}``); ``calibration`` the inputs
    int8 calibration runs; ``engines`` the quantized engines (default: all offered)."""
    forms, unavailable = {}, {}
    for net, model in models.items():
        forms[f"fp32_{net}_eager"] = model
        forms[f"fp32_{net}_folded_cl"] = folded[net]
        forms[f"bf16_{net}_folded_cl"] = Autocast(folded[net]).eval()
        if compile:
            forms[f"fp32_{net}_compiled"] = torch.compile(folded[net], dynamic=False)
            forms[f"bf16_{net}_compiled"] = torch.compile(Autocast(folded[net]).eval(), dynamic=False)
        for engine in (int8_engines() if engines is None else engines):
            name = f"int8_{engine}_{net}"
            try:
                forms[name] = quantize_int8_fx(model, engine, calibration)
            except Exception as err:  # noqa: BLE001 - any failure leaves the form out, with its reason
                unavailable[name] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        if compile:
            name = f"int8_pt2e_{net}_compiled"
            try:
                forms[name] = torch.compile(quantize_int8_pt2e(model, calibration), dynamic=False)
            except Exception as err:  # noqa: BLE001
                unavailable[name] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
    return forms, unavailable
