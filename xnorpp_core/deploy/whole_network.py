"""The whole packed binary network against the real-valued one at its best in fp32, bf16 and int8, on this CPU.

For each thread count and batch size, times one call at a time, the models
interleaved round by round in the same process (``timing``), each given the
input in the memory format it runs in, all under ``torch.inference_mode``:

- the real-valued network (our pre-activation ResNet-18 with float
  convolutions, ``real``, or AlexNet with its fully connected layers as linear
  ones, ``forms.linear_classifier``; for ResNet-18 also torchvision's
  ``resnet18``, ``tv``) in the forms a user would deploy (``forms``: torch's,
  ONNX Runtime's and OpenVINO's), each named by its precision. Forms that
  cannot be built are returned with the reason;
- ``emulated_<method>``: the float-emulated binary network (learned Gammas
  fused), as PyTorch binary-network code runs it;
- ``packed_<method>``: ``xnorpp_core.packed.PackedNetwork`` (BN -> sign folded
  into thresholds, packed bits between binary layers), and with int8 real
  layers ``packed_<method>_int8real``, each with its time split by layer type
  (``CATEGORIES``).

Speed-ups are given against the fastest form of each precision separately
(fp32, bf16, int8), chosen per statistic: the median call (first) and the
fastest call. Weights, BN statistics and learned factors are random but
trained-like (``trained_like``: timing does not depend on them). Exactness:
per method and real-layer option, the random inputs whose packed logits equal
the fused float emulation's (``torch.equal``, row by row) and whose predictions
agree.
"""

import copy
import itertools
import os
import textwrap
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ..limits import BATCH_SIZE, REPEATS, SEED, THREADS, check_fields, ints
from ..models import ARCHS, build_model, fuse_model
from ..packed import BACKENDS, SUPPORTED_METHODS
from ..packed.int8 import arithmetic as int8_arithmetic
from ..packed.network import CATEGORIES, REAL_LAYERS, PackedNetwork, fused_emulation
from ..provenance import cpu_markdown_table, disturbed_text
from ..scales import LearnedScale
from .forms import linear_classifier, real_forms
from .runtimes import versions as runtime_versions
from .timing import PRECISIONS, fastest_per_precision, no_garbage_collection, speedups, time_round

INPUT_SIZE = {"resnet18": 224, "alexnet": 227}
CALIBRATION_INPUTS = 4  # random inputs that calibrate each int8 form


def packed_name(method, real_layers):
    """``packed_case4`` (float real layers) or ``packed_case4_int8real``."""
    return f"packed_{method}" + ("" if real_layers == "float" else f"_{real_layers}real")


def emulation_of(net, model):
    """The fused float emulation that the packed network ``net`` (of ``model``) must equal: an independent one
    for float real layers; for int8 real layers its own ``reference``, which holds the same quantized modules."""
    return fused_emulation(model) if net.real_layers == "float" else net.reference


def _opt(default, help, **metadata):
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class BenchInferenceConfig:
    """One run of the benchmark; validated here, written to ``run.json``."""

    arch: str = _opt("resnet18", "network", choices=tuple(ARCHS))
    methods: tuple = _opt(("case1", "case4"), "scale methods of the binary network", choices=SUPPORTED_METHODS)
    threads: tuple = _opt((1, 2), "torch CPU threads (1 to the CPUs this process may use), each count timed in "
                                  "turn", bounds=THREADS)
    batch_sizes: tuple = _opt((1, 8), "images per call, each timed in turn", bounds=BATCH_SIZE)
    repeats: int = _opt(20, "timed rounds per setting (at least 3)", bounds=REPEATS)
    compile: bool = _opt(True, "also time torch.compile of the folded real networks (fp32, bf16)")
    check_inputs: int = _opt(1000, "random inputs for the exactness check (0 skips it)", bounds=ints(0, 1_000_000))
    backend: str = _opt("auto", "packed kernel backend (auto: $XNORPP_PACKED_BACKEND, else cpp, else numpy)",
                       choices=("auto", *BACKENDS))
    real_layers: tuple = _opt(REAL_LAYERS, "real layers (stem, downsampling shortcuts, classifier) of the packed "
                                          "network: float, or int8; each given is timed and checked",
                             choices=REAL_LAYERS)
    seed: int = _opt(0, "seed of weights and inputs", bounds=SEED)

    def __post_init__(self):
        check_fields(self)
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {tuple(ARCHS)}, got {self.arch!r}")
        bad = [m for m in self.methods if m not in SUPPORTED_METHODS]
        if not self.methods or bad:
            raise ValueError(f"methods must be among {SUPPORTED_METHODS}, got {bad or 'none'}")
        for name in ("threads", "batch_sizes"):
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one value")
        if self.backend not in ("auto", *BACKENDS):
            raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {self.backend!r}")
        bad = [r for r in self.real_layers if r not in REAL_LAYERS]
        if not self.real_layers or bad:
            raise ValueError(f"real_layers must be among {REAL_LAYERS}, got {bad or 'none'}")


def trained_like(model, generator):
    """BN statistics away from (0, 1) and learned factors away from 1, as training leaves them; eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
            if isinstance(m, LearnedScale):
                for p in m.parameters():
                    p.mul_(torch.rand(p.shape, generator=generator) + 0.5)
    return model.eval()


def real_models(cfg, size, generator):
    """``(forms, unavailable)``: the real-valued network's forms by name (see the module docstring) and the
    forms that could not be built, with the reason."""
    from torch.fx.experimental.optimization import fuse

    nets = {"real": linear_classifier(build_model(cfg.arch, "real", 1000, size).eval())}
    folded = {"real": fused_emulation(nets["real"])}
    if cfg.arch == "resnet18":
        import torchvision

        nets["tv"] = torchvision.models.resnet18(weights=None).eval()
        folded["tv"] = fuse(nets["tv"]).to(memory_format=torch.channels_last)
    calibration = [torch.randn(1, 3, size, size, generator=generator) for _ in range(CALIBRATION_INPUTS)]
    return real_forms(nets, folded, cfg.compile, calibration)


def bench(cfg, info, progress):
    """Timing, speed-up and breakdown tables over threads x batch sizes (interleaved rounds), the binary models,
    and the real forms left out (with the reason)."""
    g = torch.Generator().manual_seed(cfg.seed)
    size = INPUT_SIZE[cfg.arch]
    real, unavailable = real_models(cfg, size, g)
    binary = {m: trained_like(build_model(cfg.arch, m, 1000, size), g) for m in cfg.methods}
    models = dict(real)
    packed = {}  # name -> (method, real_layers)
    for m, model in binary.items():
        models[f"emulated_{m}"] = fuse_model(copy.deepcopy(model))
        for r in cfg.real_layers:
            packed[packed_name(m, r)] = (m, r)
            models[packed_name(m, r)] = PackedNetwork(model, info.name, real_layers=r)
    timing, breakdown, layers = [], [], []
    previous = torch.get_num_threads()
    try:
        for threads, batch in itertools.product(cfg.threads, cfg.batch_sizes):
            torch.set_num_threads(threads)
            x = torch.randn(batch, 3, size, size, generator=g)
            times = {name: [] for name in models}
            parts = {p: {c: [] for c in CATEGORIES} for p in packed}
            steps = {p: {} for p in packed}  # step name -> seconds per round
            with torch.inference_mode():
                for name in models:  # warm-up (and compilation)
                    for _ in range(2):
                        time_round(models, x, [name], {name: []})
                names = list(models)
                for r in range(cfg.repeats):
                    time_round(models, x, names[r % len(names):] + names[:r % len(names)], times)
                    for p in packed:
                        t, per_step = {}, []
                        with no_garbage_collection():
                            models[p](x.contiguous(memory_format=torch.channels_last), timings=t, per_step=per_step)
                        for c in CATEGORIES:
                            parts[p][c].append(t.get(c, 0.0))
                        for _, name, seconds in per_step:
                            steps[p].setdefault(name, []).append(seconds)
                    progress.update()
            for name, ts in times.items():
                timing.append({"model": name, "threads": threads, "batch": batch, "ms": 1e3 * min(ts),
                               "median_ms": 1e3 * float(np.median(ts)), "calls": len(ts)})
            for p, (m, r) in packed.items():
                for c in CATEGORIES:
                    breakdown.append({"method": m, "real_layers": r, "threads": threads, "batch": batch, "part": c,
                                      "median_ms": 1e3 * float(np.median(parts[p][c]))})
                for name, (kind, shape, macs) in models[p].layer_work(batch).items():
                    layers.append({"method": m, "real_layers": r, "threads": threads, "batch": batch, "layer": name,
                                   "kind": kind, "shape": shape, "multiply_adds": macs,
                                   "median_ms": 1e3 * float(np.median(steps[p][name]))})
    finally:
        torch.set_num_threads(previous)
    timing = pd.DataFrame(timing)
    return (timing, speed_table(timing, packed, info), pd.DataFrame(breakdown), pd.DataFrame(layers), binary,
            unavailable)


def ceilings(info, seconds=0.3):
    """What this core does at best on the packed network's paths (``backend.kernel``'s microbenchmarks):
    ``clock_hz`` (cycles per second of a chain of dependent adds), ``binary_peak`` (binary multiply-adds per
    second of the XNOR-popcount inner loop on data in the first-level cache; None on the int8 tiles, which have
    no microbenchmark here) and ``int8_peak`` (int8 multiply-adds per second of ``int8_conv``'s inner loop),
    each on the path ``info`` runs; None on the numpy backend."""
    if info.name == "numpy":
        return {"clock_hz": None, "binary_peak": None, "int8_peak": None}
    k = info.kernel
    return {"clock_hz": k.core_clock(seconds), "binary_peak": None if info.amx else k.popcount_peak(seconds, info.simd),
            "int8_peak": k.vnni_peak(seconds, info.simd)}


def layer_table(layers, limits):
    """``layers`` (``bench``'s per-step rows) with the achieved rate per core: ``per_second`` (multiply-adds per
    second), ``per_cycle`` (per cycle of the clock ``limits["clock_hz"]``, per thread), ``ceiling_per_cycle``
    (the path's microbenchmark, ``ceilings``) and ``of_ceiling`` (the fraction reached)."""
    out = layers.copy()
    out["per_second"] = out.multiply_adds / (out.median_ms / 1e3)
    clock = limits.get("clock_hz") or np.nan
    peak = out.kind.map({"binary": limits.get("binary_peak"), "int8": limits.get("int8_peak")}).astype(float)
    out["per_cycle"] = out.per_second / out.threads / clock
    out["ceiling_per_cycle"] = peak / clock
    out["of_ceiling"] = out.per_cycle / out.ceiling_per_cycle
    return out


def speed_table(timing, packed, info):
    """Per packed network (``{name: (method, real_layers)}``) and setting: its speed-ups over the fastest form
    of each precision (``timing.speedups``), over its float emulation, and its arithmetic (``path``: the
    backend ``info``'s, and that of int8 real layers)."""
    t = timing.set_index(["model", "threads", "batch"])
    paths = {"float": info.path, "int8": f"{info.path}; {int8_arithmetic(info)}"}
    frames = []
    for name, (m, r) in packed.items():
        s = speedups(timing, name).rename(columns={"model": "packed", "ms": "packed_ms",
                                                              "median_ms": "packed_median_ms"})
        s.insert(0, "real_layers", r)
        s.insert(0, "method", m)
        emulated = [t.loc[(f"emulated_{m}", th, b), "ms"] for th, b in zip(s.threads, s.batch)]
        s["emulated_ms"] = emulated
        s["speedup_vs_emulated"] = s.emulated_ms / s.packed_ms
        s["packed_ms_per_image"] = s.packed_ms / s.batch
        s["path"] = paths[r]
        frames.append(s)
    return pd.concat(frames, ignore_index=True).sort_values(["threads", "batch", "method", "real_layers"],
                                                             kind="stable", ignore_index=True)


def exactness(cfg, info, binary, progress):
    """Per method and real-layer option: random inputs whose packed logits equal the fused emulation's, and
    prediction agreement."""
    size, rows = INPUT_SIZE[cfg.arch], []
    for m, model in binary.items():
        for r in cfg.real_layers:
            g = torch.Generator().manual_seed(cfg.seed + 1)
            net = PackedNetwork(model, info.name, real_layers=r)
            ref = emulation_of(net, model)
            equal = agree = 0
            with torch.inference_mode():
                for start in range(0, cfg.check_inputs, 8):
                    x = torch.randn(min(8, cfg.check_inputs - start), 3, size, size, generator=g)
                    a, b = net(x), ref(x)
                    equal += int((a == b).all(1).sum())
                    agree += int((a.argmax(1) == b.argmax(1)).sum())
                    progress.update()
            rows.append({"method": m, "real_layers": r, "inputs": cfg.check_inputs, "logits_equal": equal,
                         "predictions_agree": agree, "inputs_with_different_logits": cfg.check_inputs - equal})
    return pd.DataFrame(rows, columns=["method", "real_layers", "inputs", "logits_equal", "predictions_agree",
                                       "inputs_with_different_logits"])


def plot_breakdown(speed, breakdown, cpu):
    """Stacked packed time per layer type, per setting, beside the fastest int8 and fp32 forms' median calls."""
    import matplotlib.pyplot as plt

    if "real_layers" not in breakdown.columns:  # files written before the real-layer option
        breakdown, speed = breakdown.assign(real_layers="float"), speed.assign(real_layers="float")
    keys = [tuple(k) for k in speed[["method", "real_layers", "threads", "batch"]].itertuples(index=False)]
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(keys) + 2.5), 4.8))
    bottom = np.zeros(len(keys))
    per_image = speed.batch.to_numpy()
    for c, color in zip(CATEGORIES, plt.cm.tab10.colors):
        ms = np.array([breakdown[(breakdown.method == m) & (breakdown.real_layers == r) & (breakdown.threads == t)
                                 & (breakdown.batch == b) & (breakdown.part == c)].median_ms.iloc[0]
                       for m, r, t, b in keys]) / per_image
        ax.bar(range(len(keys)), ms, bottom=bottom, color=color, label=c.replace("_", " "))
        bottom += ms
    for column, marker, label in (("fastest_int8_median_ms", "_", "fastest int8"),
                                  ("fastest_fp32_median_ms", "x", "fastest fp32 / 5")):
        if column in speed.columns:
            scale = 5 if "fp32" in column else 1
            ax.scatter(range(len(keys)), speed[column] / per_image / scale, marker=marker, s=600 if marker == "_"
                       else 60, color="black", label=label)
    ax.set_xticks(range(len(keys)), [f"{m}{'' if r == 'float' else ', ' + r + ' real'}\n{t} thr, batch {b}"
                                     for m, r, t, b in keys], fontsize=8)
    ax.set_ylabel("ms per image (median call / batch)")
    ax.set_title("Packed binary network by layer type (each step timed on its own)\n" + textwrap.fill(cpu, 70),
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


SPEEDUP_COLUMNS = ["method", "real_layers", "threads", "batch", "packed_median_ms", "packed_ms",
                   *[c for p in PRECISIONS for c in (f"speedup_vs_{p}_median", f"speedup_vs_{p}")],
                   "speedup_vs_emulated"]


LAYER_COLUMNS = ["method", "real_layers", "threads", "batch", "layer", "kind", "shape", "median_ms", "per_cycle",
                 "ceiling_per_cycle", "of_ceiling"]


def summary_text(cfg, info, speed, timing, breakdown, layers, limits, exact, load, command, cpu):
    """``summary.md``: speed-ups per precision, the fastest forms, every model, the breakdown, each layer's rate
    against the ceiling of its path (``layer_table``; ``limits`` from ``ceilings``), exactness."""
    per_part = breakdown.pivot_table(index=["method", "real_layers", "threads", "batch"], columns="part",
                                     values="median_ms")
    per_part = per_part[list(CATEGORIES)].reset_index()
    fastest = fastest_per_precision(timing)
    runtimes = ", ".join(f"{name} {version or 'not installed'}" for name, version in runtime_versions().items())
    disturbed = disturbed_text(load[0], os.cpu_count(), cfg.threads)  # the thread counts the load disturbs
    disturbed = f" ({disturbed})" if disturbed else ""
    lines = [f"# Whole-network inference: packed binary {cfg.arch} against the real one in fp32, bf16 and int8", "",
             f"Load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after{disturbed}; packed backend {info.name}: "
             f"{info.path}" + (f"; {int8_arithmetic(info)}" if "int8" in cfg.real_layers else "") + ".", "",
             f"Real network's runtimes: torch {torch.__version__}, {runtimes}.", "",
             "## Speed-up over the fastest form of each precision (median call; fastest call beside it)", "",
             cpu_markdown_table(speed, SPEEDUP_COLUMNS, cpu),
             "## The fastest form of each precision (ms per call)", "",
             cpu_markdown_table(fastest, list(fastest.columns), cpu),
             "## Every model (ms per call)", "",
             cpu_markdown_table(timing, ["model", "threads", "batch", "median_ms", "ms"], cpu),
             "## Packed network by layer type (median ms per call)", "",
             "Each step timed on its own, the steps run one by one from Python; where every step is compiled (int8 "
             "real layers on the XNOR-popcount path) the untimed network runs them in one call, in less time than "
             "their sum.", "",
             cpu_markdown_table(per_part, ["method", "real_layers", "threads", "batch", *CATEGORIES], cpu)]
    if limits.get("clock_hz"):
        peaks = "; ".join(f"{what} {limits[key] / limits['clock_hz']:.1f} per cycle" for key, what in (
            ("binary_peak", "binary multiply-adds (XNOR-popcount inner loop)"),
            ("int8_peak", "int8 multiply-adds (int8_conv's inner loop)")) if limits.get(key))
        lines += ["## Each layer against the ceiling of its path (median call, per thread)", "",
                  f"The core ran a chain of dependent adds at {limits['clock_hz'] / 1e9:.2f} GHz; on data in the "
                  f"first-level cache it does at best {peaks} (microbenchmarks of the kernels' inner loops). "
                  "`per_cycle`: each layer's multiply-adds per cycle of that clock and per thread, in the whole "
                  "network's timed calls; `of_ceiling`: the fraction of the ceiling reached.", "",
                  cpu_markdown_table(layers, LAYER_COLUMNS, cpu)]
    if exact is not None:
        lines += ["## Exactness against the fused float emulation", "", cpu_markdown_table(exact, list(exact.columns),
                                                                                          cpu)]
    return "\n".join(lines + [f"Command: `{command}`"]) + "\n"
