"""What binarization costs and buys on the digits: top-1 and latency of the real ResNet-18 in fp32, bf16 and int8
against the packed binary one.

    python -m studies.deploy_tradeoff                                   # trains both networks (fixed seed)
    python -m studies.deploy_tradeoff --checkpoints REAL.pt BINARY.pt   # or uses training checkpoints

Takes the digits-trained ResNet-18 twice: the real-valued one and the binary one
of ``--method`` (default Case 4), each trained by ``xnorpp_core.training`` with
the digits recipe and ``--seed`` (a few minutes on a CPU), or read from
``--checkpoints`` (``python -m studies.train`` writes them; a checkpoint of
method ``real`` is the real network, any other the binary one; the network not
given is trained). Then, on one thread, batch 1:

- top-1 on the digits' validation split of every deployable form of the real
  network (``xnorpp_core.baselines``: ``fp32_*``, ``bf16_*``, ``int8_<engine>_*``,
  int8 calibrated on training images), of the binary network's fused float
  emulation (``emulated``) and of the packed binary network (``packed``, and
  ``packed_int8real`` where the packed network offers int8 real layers), with
  the validation images whose packed logits equal the emulation's;
- the median latency of each, interleaved round by round, at the digits' input
  size and at 224x224 (the same forms of the ImageNet-shaped network of the
  same method, 7x7 stem, 10 classes, random trained-like weights: latency does
  not depend on the weights).

The conclusion sentence is chosen by the numbers (``conclusion``). Writes to
``--out`` (default ``results/inference/digits/tradeoff``): ``tradeoff.csv``,
``tradeoff.md`` (the table and the conclusion, naming the CPU and the packed
arithmetic path), ``run.json`` (config, checkpoints, forms left out and why,
load average, versions, hardware), and ``runs/<method>/`` for each network it
trained (metrics, config, summary; the checkpoint itself is not committed).
"""

import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from studies._cli import add_config_flags, add_out_flag, check_out, config_from_args, fail, make_parser, opt
from studies.bench_inference import REAL_LAYERS, emulation_of, packed_name, trained_like
from studies.export import load_checkpoint
from xnorpp_core import baselines
from xnorpp_core.models import build_model
from xnorpp_core.packed import BACKENDS, SUPPORTED_METHODS, backend_info
from xnorpp_core.packed.int8 import arithmetic as int8_arithmetic
from xnorpp_core.packed.network import PackedNetwork
from xnorpp_core.provenance import atomic_write, cpu_markdown_table, environment, write_csv, write_json
from xnorpp_core.report.machine import cpu_label
from xnorpp_core.training import DataError, TrainConfig, TrainingError, train
from xnorpp_core.training.data import digits_splits

PROG = "python -m studies.deploy_tradeoff"
LARGE = 224  # the second input size timed
CALIBRATION_IMAGES = 32  # training images that calibrate each int8 form
EQUAL_BAND = 0.1  # a latency ratio within 1 +- this is "about as fast"
BINARY = {"packed": "binary, packed", "emulated": "binary, fp32 emulation"}  # the binary forms' precision column


@dataclass(frozen=True)
class DeployTradeoffConfig:
    """One run of the study; validated here, written to ``run.json``."""

    method: str = opt("case4", "scale method of the binary network (a binary checkpoint's own method wins)",
                      choices=SUPPORTED_METHODS)
    checkpoints: tuple[str, ...] = opt((), "training checkpoints of digits ResNet-18s to use instead of training: "
                                           "the real one and/or the binary one")
    epochs: int | None = opt(None, "epochs of each network trained here (default: the digits recipe's)")
    repeats: int = opt(20, "timed rounds per input size")
    backend: str = opt("auto", "packed kernel backend (auto: $XNORPP_PACKED_BACKEND, else cpp, else numpy)",
                       choices=("auto", *BACKENDS))
    seed: int = opt(0, "seed of training, of the 224x224 networks' weights and of the inputs")

    def __post_init__(self):
        if self.method not in SUPPORTED_METHODS:
            raise ValueError(f"method must be one of {SUPPORTED_METHODS}, got {self.method!r}")
        if len(self.checkpoints) > 2:
            raise ValueError(f"checkpoints: at most two (the real and the binary one), got {len(self.checkpoints)}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        if self.repeats < 3:
            raise ValueError(f"repeats must be at least 3, got {self.repeats}")
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


def _checkpoints(cfg):
    """``{"real": model, "binary": model}`` from ``--checkpoints``; one-line exits for unusable ones."""
    loaded = {}
    for path in cfg.checkpoints:
        model, arch, kwargs, _ = load_checkpoint(PROG, path)
        if arch != "resnet18" or not kwargs["small_input"]:
            fail(PROG, f"checkpoint {path} is not a digits ResNet-18 (arch {arch}, small_input "
                       f"{kwargs['small_input']})")
        kind = "real" if model.method == "real" else "binary"
        if kind in loaded:
            fail(PROG, f"checkpoints: two {kind} networks given ({path})")
        loaded[kind] = model
    return loaded


def _train(cfg, method, out):
    """A digits ResNet-18 of ``method`` trained into ``out`` (the recipe, ``cfg.seed``), in eval mode."""
    config = TrainConfig(arch="resnet18", method=method, out=str(out), seed=cfg.seed, device="cpu", quiet=True,
                         **({} if cfg.epochs is None else {"epochs": cfg.epochs}))
    print(f"training the {method} network into {out} ...", file=sys.stderr)
    train(config)
    model, _, _, _ = load_checkpoint(PROG, out / "checkpoint.pt")
    return model


def _packed(real_layers):
    """``packed`` (float real layers) or ``packed_int8real``."""
    return packed_name("", real_layers).replace("packed_", "packed")


def _forms(real, binary, info, calibration):
    """``(forms, references, unavailable)``: every timed form of the networks by name, the fused emulation each
    packed form must equal, and the real forms left out (with the reason). ``calibration``: a list of input
    batches that calibrate the int8 forms (the real network's and the packed one's real layers)."""
    from xnorpp_core.packed.network import fused_emulation

    forms, unavailable = baselines.real_forms({"real": real}, {"real": fused_emulation(real)},
                                              calibration=calibration)
    forms["emulated"] = fused_emulation(binary)
    references = {}
    for r in REAL_LAYERS:
        forms[_packed(r)] = PackedNetwork(binary, info.name, real_layers=r, calibration=torch.cat(calibration))
        references[_packed(r)] = emulation_of(forms[_packed(r)], binary)
    return forms, references, unavailable


def _top1(forms, binary_ref, val):
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
    return x.contiguous(memory_format=torch.channels_last) if baselines.channels_last_input(name) else x


def main(argv=None):
    parser = make_parser(PROG, __doc__)
    add_config_flags(parser, DeployTradeoffConfig)
    add_out_flag(parser, "results/inference/digits/tradeoff")
    args = parser.parse_args(argv)
    cfg = config_from_args(PROG, DeployTradeoffConfig, args)
    out = check_out(PROG, args.out)
    for path in cfg.checkpoints:
        if not Path(path).is_file():
            fail(PROG, f"checkpoint {path} does not exist")
    given = _checkpoints(cfg)
    try:
        info = backend_info(cfg.backend)
    except RuntimeError as err:
        fail(PROG, str(err))
    if "binary" in given:
        cfg = replace(cfg, method=given["binary"].method)
    cpu, load_before = cpu_label(environment()), os.getloadavg()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            real = given.get("real") or _train(cfg, "real", out / "runs" / "real")
            binary = given.get("binary") or _train(cfg, cfg.method, out / "runs" / cfg.method)
        except (DataError, TrainingError) as err:
            fail(PROG, str(err))
        small = real.input_size[0]
        train_set, val, _ = digits_splits(small)
        calibration = [torch.stack([val.transform(img.expand(3, -1, -1)) for img in train_set.images[i:i + 8]])
                       for i in range(0, CALIBRATION_IMAGES, 8)]
        forms, references, unavailable = _forms(real, binary, info, calibration)
        top1, equal = _top1(forms, references, val)
        g = torch.Generator().manual_seed(cfg.seed)
        times = {small: baselines.time_interleaved(forms, torch.randn(1, 3, small, small, generator=g), cfg.repeats)}
        big_real = build_model("resnet18", "real", 10, LARGE).eval()
        big_binary = trained_like(build_model("resnet18", cfg.method, 10, LARGE), g)
        big_forms, _, _ = _forms(trained_like(big_real, g), big_binary, info,
                              [torch.randn(1, 3, LARGE, LARGE, generator=g) for _ in range(4)])
        times[LARGE] = baselines.time_interleaved(big_forms, torch.randn(1, 3, LARGE, LARGE, generator=g),
                                                  cfg.repeats)
    finally:
        torch.set_num_threads(previous)
    rows = []
    for name in forms:
        row = {"form": name, "precision": baselines.precision_of(name) or BINARY[name.split("_")[0]],
               "top1": top1[name], "logits_equal_emulation": f"{equal[name]}/{len(val)}" if name in equal else ""}
        for size in (small, LARGE):
            ts = times[size].get(name, [])
            row[f"median_ms_{size}"] = 1e3 * float(np.median(ts)) if ts else np.nan
            row[f"fastest_ms_{size}"] = 1e3 * min(ts) if ts else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    text = conclusion(table, small)
    load_after = os.getloadavg()
    table.insert(0, "cpu", cpu)
    command = " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv)))
    md = [f"# What binarization costs and buys: digits ResNet-18 ({cfg.method}) against the real one", "",
          f"One thread, batch 1, median call (ms) at {small}x{small} (the digits) and {LARGE}x{LARGE}; top-1 on the "
          f"digits' {len(val)} validation images; packed backend {info.name}: {info.path}; {int8_arithmetic(info)}. "
          "Load average (1 min) "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after.", "",
          cpu_markdown_table(table, ["form", "precision", "top1", f"median_ms_{small}", f"median_ms_{LARGE}",
                                     "logits_equal_emulation"], cpu),
          text, "", f"Command: `{command}`"]
    write_csv(out / "tradeoff.csv", table)
    atomic_write(out / "tradeoff.md", "\n".join(md) + "\n")
    write_json(out / "run.json", {"command": command, "config": asdict(cfg), "backend": asdict(info), "cpu": cpu,
                                  "conclusion": text, "int8_api": baselines.INT8_API,
                                  "calibration_images": CALIBRATION_IMAGES, "forms_left_out": unavailable,
                                  "load_average_before": load_before, "load_average_after": load_after,
                                  "environment": environment("cpu")})
    print("\n".join(md))
    return table


if __name__ == "__main__":
    main()
