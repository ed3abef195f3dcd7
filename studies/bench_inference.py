"""The whole packed binary network against the real-valued one at its best, on this CPU.

    python -m studies.bench_inference [--arch resnet18] [--methods case1 case4] [--threads 1 2]
                                      [--batch-sizes 1 8] [--repeats 20] [--check-inputs 1000]

For each thread count and batch size, times one call at a time, the models
interleaved round by round in the same process (each round in a rotated order),
each given the input in the memory format it runs in (channels-last for the
folded, compiled and packed networks; converted before the clock starts):

- the real-valued network in several forms, all in eval mode under
  ``torch.inference_mode``: ``real_eager`` (our pre-activation ResNet-18 with
  float convolutions, or AlexNet), ``real_folded_cl`` (its real convolutions'
  BN folded, channels-last), ``tv_eager`` / ``tv_folded_cl`` (torchvision's
  ``resnet18``, every BN folded, channels-last) and, with ``--compile``, the
  ``torch.compile`` of each folded one. The fastest of them, per setting, is
  the denominator (``best_real``);
- ``emulated``: the float-emulated binary network (learned Gammas fused), as
  PyTorch binary-network code runs it;
- ``packed``: ``xnorpp_core.packed.PackedNetwork`` (BN -> sign folded into
  thresholds, packed bits between binary layers), with its time split by
  layer type (stem, binary convolutions, packing, shortcuts, glue, classifier).

``*_ms`` is the fastest call (the least disturbed by other processes),
``*_median_ms`` the median; speed-ups are given for both. Weights, BN
statistics and learned factors are random but trained-like (timing does not
depend on them). Exactness: on ``--check-inputs`` random inputs, the number
whose packed logits equal the fused float emulation's (``torch.equal``, row by
row) and whose predictions agree.

Writes to ``--out`` (default ``results/inference``): ``timing.csv`` (every model,
setting), ``speedup.csv``, ``breakdown.csv``, ``exactness.csv``, ``summary.md``
(tables naming the CPU), ``breakdown.png`` and ``run.json`` (config, load
average before and after, versions, hardware).
"""

import copy
import itertools
import os
import sys
import textwrap
import time
from dataclasses import asdict, dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from studies._cli import (add_config_flags, add_out_flag, check_out, config_from_args, fail,  # noqa: E402
                          make_parser, opt)
from xnorpp_core.models import ARCHS, build_model, fuse_model  # noqa: E402
from xnorpp_core.packed import BACKENDS, SUPPORTED_METHODS, backend_info  # noqa: E402
from xnorpp_core.packed.network import CATEGORIES, PackedNetwork, fused_emulation  # noqa: E402
from xnorpp_core.provenance import (atomic_write, cpu_markdown_table, environment, save_figure, write_csv,  # noqa: E402
                                    write_json)
from xnorpp_core.report.machine import cpu_label  # noqa: E402
from xnorpp_core.scales import LearnedScale  # noqa: E402

PROG = "python -m studies.bench_inference"
INPUT_SIZE = {"resnet18": 224, "alexnet": 227}


@dataclass(frozen=True)
class BenchInferenceConfig:
    """One run of the benchmark; validated here, written to ``run.json``."""

    arch: str = opt("resnet18", "network", choices=tuple(ARCHS))
    methods: tuple = opt(("case1", "case4"), "scale methods of the binary network", choices=SUPPORTED_METHODS)
    threads: tuple = opt((1, 2), "torch CPU threads, each count timed in turn", metavar="N")
    batch_sizes: tuple = opt((1, 8), "images per call, each timed in turn")
    repeats: int = opt(20, "timed rounds per setting")
    compile: bool = opt(True, "also time torch.compile of the folded real networks")
    check_inputs: int = opt(1000, "random inputs for the exactness check (0 skips it)")
    backend: str = opt("auto", "packed kernel backend (auto: $XNORPP_PACKED_BACKEND, else cpp, else numpy)",
                       choices=("auto", *BACKENDS))
    seed: int = opt(0, "seed of weights and inputs")

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {tuple(ARCHS)}, got {self.arch!r}")
        bad = [m for m in self.methods if m not in SUPPORTED_METHODS]
        if not self.methods or bad:
            raise ValueError(f"methods must be among {SUPPORTED_METHODS}, got {bad or 'none'}")
        for name in ("threads", "batch_sizes"):
            values = getattr(self, name)
            if not values or any(int(v) != v or v < 1 for v in values):
                raise ValueError(f"{name} must be positive integers, got {values}")
        if self.repeats < 3:
            raise ValueError(f"repeats must be at least 3, got {self.repeats}")
        if self.check_inputs < 0:
            raise ValueError(f"check_inputs must be >= 0, got {self.check_inputs}")
        if self.backend not in ("auto", *BACKENDS):
            raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {self.backend!r}")


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


def real_models(cfg, size):
    """The real-valued network's forms, by name (see the module docstring)."""
    from torch.fx.experimental.optimization import fuse

    ours = build_model(cfg.arch, "real", 1000, size).eval()
    models = {"real_eager": ours, "real_folded_cl": fused_emulation(ours)}
    if cfg.arch == "resnet18":
        import torchvision

        tv = torchvision.models.resnet18(weights=None).eval()
        models["tv_eager"] = tv
        models["tv_folded_cl"] = fuse(tv).to(memory_format=torch.channels_last)
    if cfg.compile:
        for name in [n for n in models if "folded" in n]:
            models[name.replace("folded_cl", "compiled")] = torch.compile(models[name], dynamic=False)
    return models


def _time_round(models, x, order, times):
    for name in order:
        channels_last = any(w in name for w in ("folded", "compiled", "packed"))  # the layout they run in
        x_in = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        t0 = time.perf_counter()
        models[name](x_in)
        times[name].append(time.perf_counter() - t0)


def bench(cfg, info, progress):
    """Timing, speed-up and breakdown tables over threads x batch sizes (interleaved rounds)."""
    g = torch.Generator().manual_seed(cfg.seed)
    size = INPUT_SIZE[cfg.arch]
    real = real_models(cfg, size)
    binary = {m: trained_like(build_model(cfg.arch, m, 1000, size), g) for m in cfg.methods}
    models = dict(real)
    for m, model in binary.items():
        models[f"emulated_{m}"] = fuse_model(copy.deepcopy(model))
        models[f"packed_{m}"] = PackedNetwork(model, info.name)
    timing, breakdown = [], []
    previous = torch.get_num_threads()
    try:
        for threads, batch in itertools.product(cfg.threads, cfg.batch_sizes):
            torch.set_num_threads(threads)
            x = torch.randn(batch, 3, size, size, generator=g)
            times = {name: [] for name in models}
            parts = {m: {c: [] for c in CATEGORIES} for m in cfg.methods}
            with torch.inference_mode():
                for name in models:  # warm-up (and compilation)
                    for _ in range(2):
                        _time_round(models, x, [name], {name: []})
                names = list(models)
                for r in range(cfg.repeats):
                    _time_round(models, x, names[r % len(names):] + names[:r % len(names)], times)
                    for m in cfg.methods:
                        t = {}
                        models[f"packed_{m}"](x.contiguous(memory_format=torch.channels_last), timings=t)
                        for c in CATEGORIES:
                            parts[m][c].append(t.get(c, 0.0))
                    progress.update()
            for name, ts in times.items():
                timing.append({"model": name, "threads": threads, "batch": batch, "ms": 1e3 * min(ts),
                               "median_ms": 1e3 * float(np.median(ts)), "calls": len(ts)})
            for m in cfg.methods:
                for c in CATEGORIES:
                    breakdown.append({"method": m, "threads": threads, "batch": batch, "part": c,
                                      "median_ms": 1e3 * float(np.median(parts[m][c]))})
    finally:
        torch.set_num_threads(previous)
    timing = pd.DataFrame(timing)
    rows = []
    for (threads, batch), part in timing.groupby(["threads", "batch"]):
        t = part.set_index("model")
        real_rows = t.loc[[n for n in real]]
        best, best_median = real_rows.ms.idxmin(), real_rows.median_ms.idxmin()
        for m in cfg.methods:
            p, e = t.loc[f"packed_{m}"], t.loc[f"emulated_{m}"]
            rows.append({"method": m, "threads": threads, "batch": batch, "packed_ms": p.ms,
                         "packed_median_ms": p.median_ms, "best_real": best, "best_real_ms": real_rows.ms[best],
                         "best_real_median_ms": real_rows.median_ms[best_median], "emulated_ms": e.ms,
                         "speedup_vs_best_real": real_rows.ms[best] / p.ms,
                         "speedup_vs_best_real_median": real_rows.median_ms[best_median] / p.median_ms,
                         "speedup_vs_emulated": e.ms / p.ms, "packed_ms_per_image": p.ms / batch})
    return timing, pd.DataFrame(rows), pd.DataFrame(breakdown), binary


def exactness(cfg, info, binary, progress):
    """Per method: random inputs whose packed logits equal the fused emulation's, and prediction agreement."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    size, rows = INPUT_SIZE[cfg.arch], []
    for m, model in binary.items():
        net, ref = PackedNetwork(model, info.name), fused_emulation(model)
        equal = agree = 0
        with torch.inference_mode():
            for start in range(0, cfg.check_inputs, 8):
                x = torch.randn(min(8, cfg.check_inputs - start), 3, size, size, generator=g)
                a, b = net(x), ref(x)
                equal += int((a == b).all(1).sum())
                agree += int((a.argmax(1) == b.argmax(1)).sum())
                progress.update()
        rows.append({"method": m, "inputs": cfg.check_inputs, "logits_equal": equal, "predictions_agree": agree,
                     "inputs_with_different_logits": cfg.check_inputs - equal})
    return pd.DataFrame(rows, columns=["method", "inputs", "logits_equal", "predictions_agree",
                                       "inputs_with_different_logits"])


def plot_breakdown(speed, breakdown, cpu):
    """Stacked packed time per layer type, per setting, beside the best real network's time."""
    keys = [tuple(k) for k in speed[["method", "threads", "batch"]].itertuples(index=False)]
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(keys) + 2.5), 4.8))
    bottom = np.zeros(len(keys))
    per_image = speed.batch.to_numpy()
    for c, color in zip(CATEGORIES, plt.cm.tab10.colors):
        ms = np.array([breakdown[(breakdown.method == m) & (breakdown.threads == t) & (breakdown.batch == b)
                                 & (breakdown.part == c)].median_ms.iloc[0] for m, t, b in keys]) / per_image
        ax.bar(range(len(keys)), ms, bottom=bottom, color=color, label=c.replace("_", " "))
        bottom += ms
    ax.scatter(range(len(keys)), speed.best_real_median_ms / per_image / 5, marker="_", s=600, color="black",
               label="best real / 5")
    ax.set_xticks(range(len(keys)), [f"{m}\n{t} thr, batch {b}" for m, t, b in keys], fontsize=8)
    ax.set_ylabel("ms per image (median call / batch)")
    ax.set_title("Packed binary network by layer type\n" + textwrap.fill(cpu, 70), fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def main(argv=None):
    parser = make_parser(PROG, __doc__)
    add_config_flags(parser, BenchInferenceConfig)
    add_out_flag(parser, "results/inference")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw breakdown.png from the speedup.csv and breakdown.csv already in --out")
    args = parser.parse_args(argv)
    cfg = config_from_args(PROG, BenchInferenceConfig, args)
    out = check_out(PROG, args.out)
    if args.plot_only:
        try:
            speed, breakdown = pd.read_csv(out / "speedup.csv"), pd.read_csv(out / "breakdown.csv")
        except (OSError, pd.errors.ParserError) as err:
            fail(PROG, f"--plot-only needs speedup.csv and breakdown.csv in {out}: {err}")
        fig = plot_breakdown(speed, breakdown, speed.cpu.iloc[0])
        save_figure(fig, out / "breakdown.png", dpi=120)
        plt.close(fig)
        return speed
    try:
        info = backend_info(cfg.backend)
    except RuntimeError as err:
        fail(PROG, str(err))
    cpu, load_before = cpu_label(environment()), os.getloadavg()
    print(f"packed backend: {info.name} ({info.path}; {info.reason}); CPU: {cpu}; "
          f"load average {load_before[0]:.2f}", file=sys.stderr)
    torch.manual_seed(cfg.seed)
    steps = len(cfg.threads) * len(cfg.batch_sizes) * cfg.repeats + len(cfg.methods) * -(-cfg.check_inputs // 8)
    with tqdm(total=steps, desc="bench_inference", disable=None) as progress:
        timing, speed, breakdown, binary = bench(cfg, info, progress)
        torch.set_num_threads(1)
        exact = exactness(cfg, info, binary, progress) if cfg.check_inputs else None
    load_after = os.getloadavg()
    for frame in (timing, speed, breakdown):
        frame.insert(0, "cpu", cpu)
    write_csv(out / "timing.csv", timing)
    write_csv(out / "speedup.csv", speed)
    write_csv(out / "breakdown.csv", breakdown)
    per_part = breakdown.pivot_table(index=["method", "threads", "batch"], columns="part", values="median_ms")
    per_part = per_part[list(CATEGORIES)].reset_index()
    summary = [f"# Whole-network inference: packed binary {cfg.arch} against the real one", "",
               f"Load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
               f"backend {info.name}: {info.path}.", "",
               "## Speed-up (fastest call; median-call ratio beside it)", "",
               cpu_markdown_table(speed, ["method", "threads", "batch", "packed_ms", "best_real", "best_real_ms",
                                          "speedup_vs_best_real", "speedup_vs_best_real_median", "emulated_ms",
                                          "speedup_vs_emulated"], cpu),
               "## Every model (ms per call)", "",
               cpu_markdown_table(timing, ["model", "threads", "batch", "ms", "median_ms"], cpu),
               "## Packed network by layer type (median ms per call)", "",
               cpu_markdown_table(per_part, ["method", "threads", "batch", *CATEGORIES], cpu)]
    if exact is not None:
        write_csv(out / "exactness.csv", exact)
        summary += ["## Exactness against the fused float emulation", "",
                    cpu_markdown_table(exact, list(exact.columns), cpu)]
    command = " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv)))
    summary += [f"Command: `{command}`"]
    atomic_write(out / "summary.md", "\n".join(summary) + "\n")
    fig = plot_breakdown(speed, breakdown, cpu)
    save_figure(fig, out / "breakdown.png", dpi=120)
    plt.close(fig)
    write_json(out / "run.json", {"command": command, "config": asdict(cfg), "backend": asdict(info), "cpu": cpu,
                                  "load_average_before": load_before, "load_average_after": load_after,
                                  "environment": environment("cpu")})
    print("\n".join(summary))
    return speed


if __name__ == "__main__":
    main()
