"""The real-valued network as a user would deploy it on a CPU: float32, bfloat16 and int8 forms.

A form's name starts with its precision: ``fp32_*``, ``bf16_*`` or ``int8_<engine>_*``
(``precision_of``). The forms of one real network (``real_forms``):

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

``fastest_per_precision`` and ``speedups`` turn a timing table into the fastest form of each precision
per setting (chosen per statistic: fastest call and median call separately) and into the speed-up of
another network (the packed binary one) over each.
"""

import copy
import math
import time

import pandas as pd
import torch
import torch.nn as nn

__all__ = ["PRECISIONS", "INT8_API", "precision_of", "channels_last_input", "Autocast", "QuantizedEngine", "int8_engines", "time_round", "time_interleaved",
           "quantize_int8_fx", "quantize_int8_pt2e", "real_forms", "fastest_per_precision", "speedups", "STATISTICS"]

PRECISIONS = ("fp32", "bf16", "int8")
INT8_API = "torch.ao.quantization.quantize_fx (FX graph mode), default qconfig mapping of each engine"
STATISTICS = {"median": "median_ms", "fastest": "ms"}  # statistic -> column of a timing table


def precision_of(name):
    """``fp32``, ``bf16`` or ``int8`` from a form's name (its first word), else ``None``."""
    head = str(name).split("_", 1)[0]
    return head if head in PRECISIONS else None


def channels_last_input(name):
    """Whether a model of this name is given its input channels-last (the folded, compiled and packed forms
    run in it); the eager and int8 forms get the input as it comes (contiguous)."""
    return any(w in name for w in ("folded", "compiled", "packed"))


def time_round(models, x, order, times):
    """One round: each model of ``order`` called once on ``x`` (in the memory format it runs in, converted before
    the clock starts), its seconds appended to ``times[name]``."""
    for name in order:
        x_in = x.contiguous(memory_format=torch.channels_last) if channels_last_input(name) else x
        t0 = time.perf_counter()
        models[name](x_in)
        times[name].append(time.perf_counter() - t0)


def time_interleaved(models, x, repeats, warmup=2):
    """``{name: [seconds]}``: ``warmup`` untimed calls of each model, then ``repeats`` rounds of one call per
    model, each round in a rotated order; under ``torch.inference_mode``."""
    names, times = list(models), {name: [] for name in models}
    with torch.inference_mode():
        for name in names:
            for _ in range(warmup):
                time_round(models, x, [name], {name: []})
        for r in range(repeats):
            time_round(models, x, names[r % len(names):] + names[:r % len(names)], times)
    return times


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


def fastest_per_precision(timing):
    """Per setting (threads, batch) and precision, the fastest form by each statistic.

    ``timing`` has columns ``model, threads, batch, ms, median_ms`` (``ms`` the fastest call); rows whose
    model has no precision (``precision_of``) are ignored. Returns one row per (threads, batch, precision)
    present: ``fastest`` and ``fastest_ms`` (the form with the least fastest call, and that call),
    ``fastest_median`` and ``fastest_median_ms`` (the form with the least median, and that median)."""
    t = timing.assign(precision=timing["model"].map(precision_of)).dropna(subset=["precision"])
    rows = []
    for (threads, batch, precision), part in t.groupby(["threads", "batch", "precision"], sort=False):
        by_min, by_median = part.loc[part["ms"].idxmin()], part.loc[part["median_ms"].idxmin()]
        rows.append({"threads": threads, "batch": batch, "precision": precision,
                     "fastest": by_min["model"], "fastest_ms": float(by_min["ms"]),
                     "fastest_median": by_median["model"], "fastest_median_ms": float(by_median["median_ms"])})
    return pd.DataFrame(rows, columns=["threads", "batch", "precision", "fastest", "fastest_ms", "fastest_median",
                                       "fastest_median_ms"])


def speedups(timing, name):
    """Per setting, the speed-up of model ``name`` over the fastest form of each precision, median call first.

    One row per (threads, batch) where ``name`` was timed: ``model, threads, batch, ms, median_ms`` of
    ``name``, then for each precision ``p`` of ``PRECISIONS``: ``fastest_<p>_median``,
    ``fastest_<p>_median_ms``, ``speedup_vs_<p>_median`` (the fastest median over ``name``'s median),
    ``fastest_<p>``, ``fastest_<p>_ms``, ``speedup_vs_<p>`` (the fastest call over ``name``'s fastest
    call); NaN / empty where no form of ``p`` was timed in that setting."""
    best = fastest_per_precision(timing).set_index(["threads", "batch", "precision"])
    rows = []
    for _, r in timing[timing["model"] == name].iterrows():
        row = {"model": name, "threads": r["threads"], "batch": r["batch"], "ms": float(r["ms"]),
               "median_ms": float(r["median_ms"])}
        for p in PRECISIONS:
            key = (r["threads"], r["batch"], p)
            b = best.loc[key] if key in best.index else None
            row[f"fastest_{p}_median"] = b["fastest_median"] if b is not None else ""
            row[f"fastest_{p}_median_ms"] = b["fastest_median_ms"] if b is not None else math.nan
            row[f"speedup_vs_{p}_median"] = row[f"fastest_{p}_median_ms"] / row["median_ms"]
            row[f"fastest_{p}"] = b["fastest"] if b is not None else ""
            row[f"fastest_{p}_ms"] = b["fastest_ms"] if b is not None else math.nan
            row[f"speedup_vs_{p}"] = row[f"fastest_{p}_ms"] / row["ms"]
        rows.append(row)
    return pd.DataFrame(rows)
