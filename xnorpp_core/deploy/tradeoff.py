"""What binarization costs and buys on the digits: top-1 and latency of the real ResNet-18 in fp32, bf16 and int8
against the packed binary one, both trained, the binary one through its model file.

The digits-trained ResNet-18 twice: the real-valued one and the binary one of
a method (default Case 4). The binary one is exported as a model file
(``packed.model_file``, its int8 real layers calibrated on the
``CALIBRATION_IMAGES`` training images that also calibrate the real network's
int8 forms) and loaded back, as a user deploys it. Then, on one thread, batch 1:

- top-1 on the digits' validation split of every deployable form of the real
  network (``forms.real_forms``: ``fp32_*``, ``bf16_*``, ``int8_*``), of the
  binary network's fused float emulation (``emulated``) and of the packed
  binary network loaded from the file (``packed``, and ``packed_int8real``
  with its int8 real layers), with the validation images whose packed logits
  equal those of the emulation of the network the file was exported from
  (``top1``);
- the median latency of each, interleaved round by round, at the digits' input
  size and at 224x224 (the same forms of the ImageNet-shaped network of the
  same method, 7x7 stem, 10 classes, random trained-like weights, also through
  a model file: latency does not depend on the weights).

The conclusion sentence is chosen by the numbers (``conclusion``).
"""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..limits import EPOCHS, REPEATS, SEED, check_fields
from ..models import build_model
from ..packed import BACKENDS, SUPPORTED_METHODS
from ..packed.model_file import export_bytes, load_network
from ..packed.network import REAL_LAYERS, fused_emulation
from ..training.data import calibration_images
from .forms import real_forms
from .timing import channels_last_input, precision_of, time_interleaved
from .whole_network import packed_name, trained_like

LARGE = 224  # the second input size timed
LARGE_CALIBRATION = 4  # random inputs that calibrate the int8 forms at LARGE (the weights are random too)
EQUAL_BAND = 0.1  # a latency ratio within 1 +- this is "about as fast"
BINARY = {"packed": "binary, packed", "emulated": "binary, fp32 emulation"}  # the binary forms' precision column


def _opt(default, help, **metadata):
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class DeployTradeoffConfig:
    """One run of the study; validated here, written to ``run.json``."""

    method: str = _opt("case4", "scale method of the binary network (a binary checkpoint's own method wins)",
                      choices=SUPPORTED_METHODS)
    checkpoints: tuple[str, ...] = _opt((), "training checkpoints of digits ResNet-18s to use instead of training: "
                                           "the real one and/or the binary one (default: train both)",
                                        metavar="FILE")
    epochs: int | None = _opt(None, "epochs of each network trained here (default: the digits recipe's)",
                              bounds=EPOCHS)
    repeats: int = _opt(20, "timed rounds per input size (at least 3)", bounds=REPEATS)
    backend: str = _opt("auto", "packed kernel backend (auto: $XNORPP_PACKED_BACKEND, else cpp, else numpy)",
                       choices=("auto", *BACKENDS))
    seed: int = _opt(0, "seed of training, of the 224x224 networks' weights and of the inputs", bounds=SEED)

    def __post_init__(self):
        check_fields(self)
        if self.method not in SUPPORTED_METHODS:
            raise ValueError(f"method must be one of {SUPPORTED_METHODS}, got {self.method!r}")
        if len(self.checkpoints) > 2:
            raise ValueError(f"checkpoints: at most two (the real and the binary one), got {len(self.checkpoints)}")
        if self.backend not in ("auto", *BACKENDS):
            raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {self.backend!r}")


def verdict(ratio, band=EQUAL_BAND):
    """``faster`` / ``about as fast`` / ``slower`` for a latency ratio (the other's time over the packed one's)."""
    return "faster than" if ratio > 1 + band else "slower than" if ratio < 1 - band else "about as fast as"


def conclusion(table, small, large=LARGE):
    """The sentence that sums ``table`` up (columns ``form, precision, top1, median_ms_<size>``; one row per form:
    ``packed`` the packed binary network, ``packed_int8real`` the same with int8 real layers where timed,
    ``fp32_real_eager`` the real network): each packed network against the fastest int8 and fp32 forms at each
    size, and its top-1 against the real network's."""
    packed = table[table.form.str.startswith("packed")]
    parts = []
    for size in (small, large):
        column, clauses = f"median_ms_{size}", []
        for _, net in packed.iterrows():
            words = []
            for p in ("int8", "fp32"):
                rows = table[table.precision == p]
                if rows.empty:
                    continue
                best = rows.loc[rows[column].idxmin()]
                ratio = best[column] / net[column]
                words.append(f"{verdict(ratio)} the fastest {p} form ({best.form}, {best[column]:.2f} ms: "
                             f"{ratio:.1f}x)")
            clauses.append(f"{_what(net.form)} ({net[column]:.2f} ms) is " + " and ".join(words))
        parts.append(f"at {size}x{size} " + ", and ".join(clauses))
    real = table[table.form == "fp32_real_eager"].iloc[0]
    accuracy = "; ".join(f"the digits top-1 of {_what(net.form)} is {net.top1:.1f}% against the real network's "
                         f"{real.top1:.1f}% in fp32 ({net.top1 - real.top1:+.1f} points)" for _, net in packed.iterrows())
    return ("By the median call, " + "; ".join(parts) + "; " + accuracy
            + " (one training seed each: no ordering of accuracy is claimed).")


def _what(form):
    return "the packed binary network" + ("" if form == "packed" else " with int8 real layers")


def packed_form(real_layers):
    """``packed`` (float real layers) or ``packed_int8real``."""
    return packed_name("", real_layers).replace("packed_", "packed")


def tradeoff_forms(real, binary, binary_kwargs, info, calibration, folder, calibration_data=None):
    """``(forms, references, unavailable, file_bytes)``: every timed form of the networks by name, the fused
    emulation each packed form must equal, the real forms left out (with the reason), and the size of the model
    file. ``calibration`` (float32 ``(n, 3, H, W)``) calibrates the int8 forms: the real network's, and the
    binary network's int8 real layers when it is exported (as ``folder/model.xnorpp``, from ``binary`` built with
    ``binary_kwargs``); the packed forms are that file loaded back with each real-layer option, and their
    references the emulations of ``binary`` itself (with int8 real layers calibrated on the same inputs)."""
    forms, unavailable = real_forms({"real": real}, {"real": fused_emulation(real)},
                                    calibration=list(calibration.split(8)))
    forms["emulated"] = fused_emulation(binary)
    data = export_bytes(binary, "resnet18", binary_kwargs, calibration=calibration, calibration_data=calibration_data)
    path = Path(folder) / "model.xnorpp"
    path.write_bytes(data)
    references = {}
    for r in REAL_LAYERS:
        forms[packed_form(r)] = load_network(path, info.name, r)
        references[packed_form(r)] = fused_emulation(binary, r, calibration if r == "int8" else None)
    return forms, references, unavailable, len(data)


def top1(forms, binary_ref, val):
    """Top-1 (%) of each form on ``val`` and, per packed form, the images whose logits equal its emulation's."""
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.tensor([val[i][1] for i in range(len(val))])
    top1, equal = {}, {}
    with torch.inference_mode():
        for name, form in forms.items():
            logits = torch.cat([form(_layout(name, x[i:i + 64])) for i in range(0, len(x), 64)]).float()
            top1[name] = 100.0 * float((logits.argmax(1) == y).float().mean())
            if name.startswith("packed"):
                ref = torch.cat([binary_ref[name](x[i:i + 64]) for i in range(0, len(x), 64)])
                equal[name] = int((logits == ref).all(1).sum())
    return top1, equal


def _layout(name, x):
    """``x`` in the memory format the form ``name`` runs in."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last_input(name) else x


def measure(real, binary, binary_kwargs, info, val, repeats, seed):
    """``(table, unavailable, file_bytes)``: one row per form (``tradeoff_forms``) with its precision, digits
    top-1, the validation images whose packed logits equal the emulation's, and its median and fastest call (ms)
    at the digits' input size and at ``LARGE`` (one thread is the caller's setting); the real forms left out,
    with the reason; and the model files' sizes by input size. ``real`` and ``binary`` are the trained digits
    networks (eval mode; ``binary`` built with ``binary_kwargs``); the int8 forms are calibrated on the digits'
    ``calibration_images``."""
    small = real.input_size[0]
    calibration, _ = calibration_images(None, small)
    with tempfile.TemporaryDirectory() as folder:
        forms, references, unavailable, small_bytes = tradeoff_forms(
            real, binary, binary_kwargs, info, calibration, folder, "the embedded digits' training split")
        accuracy, equal = top1(forms, references, val)
        g = torch.Generator().manual_seed(seed)
        times = {small: time_interleaved(forms, torch.randn(1, 3, small, small, generator=g), repeats)}
        big_kwargs = {"num_classes": 10, "input_size": LARGE, "pad_mode": "zero", "small_input": False}
        big_real = build_model("resnet18", "real", **big_kwargs).eval()
        big_binary = trained_like(build_model("resnet18", binary.method, **big_kwargs), g)
        big_forms, _, _, large_bytes = tradeoff_forms(
            trained_like(big_real, g), big_binary, big_kwargs, info,
            torch.randn(LARGE_CALIBRATION, 3, LARGE, LARGE, generator=g), folder, "N(0, 1) draws")
        times[LARGE] = time_interleaved(big_forms, torch.randn(1, 3, LARGE, LARGE, generator=g), repeats)
    rows = []
    for name in forms:
        row = {"form": name, "precision": precision_of(name) or BINARY[name.split("_")[0]],
               "top1": accuracy[name], "logits_equal_emulation": f"{equal[name]}/{len(val)}" if name in equal else ""}
        for size in (small, LARGE):
            ts = times[size].get(name, [])
            row[f"median_ms_{size}"] = 1e3 * float(np.median(ts)) if ts else np.nan
            row[f"fastest_ms_{size}"] = 1e3 * min(ts) if ts else np.nan
        rows.append(row)
    return pd.DataFrame(rows), unavailable, {small: small_bytes, LARGE: large_bytes}
