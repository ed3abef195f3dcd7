"""The packed binary convolution on this CPU, measured beside Eq. 8/9 (Section 4.3).

    python -m studies.kernel_bench [--threads 1 2] [--methods case4] [--batch-size 1] [--min-run-time 0.5]

For every binary convolution shape of ResNet-18 at 224x224 (the paper's
256 -> 256 3x3 layer at 14x14 is one of them), on each thread count, times
call by call, the functions below taking turns in rounds of a few calls each
(``_time``; ``*_ms``: the fastest call, the least disturbed by other processes;
``*_median_ms``: the median call):

- ``float_ms``: torch's float32 ``F.conv2d`` (the faster of NCHW and
  channels-last, both kept as ``float_nchw_ms``, ``float_cl_ms``);
- ``emulated_ms``: the float emulation, ``BinaryConv2d`` fused (sign, float
  conv of +-1, times Gamma; it binarizes its float weights on every call),
  as PyTorch binary-network code runs it;
- ``packed_ms``: ``PackedBinaryConv2d`` (pack sign(I), XNOR-popcount or the
  int8 tiles, times Gamma), and its two parts ``pack_ms`` (packing the input alone) and
  ``conv_ms`` (the convolution of an already packed input); ``conv_channel_gamma_ms``
  is the latter with a per-channel Gamma (Case 1), which does not read a
  dense ``(o, h_out, w_out)`` Gamma;

``spread`` is the largest median / fastest ratio of a row (near 1 on a quiet
machine); then ``speedup = float_ms / packed_ms``, ``speedup_conv_only = float_ms /
conv_ms`` beside ``eq9`` / ``eq8`` (as printed) and ``eq9_consistent`` (a float
op charged as 64 binary ops, ``xnorpp_core.speedup``). The whole network's time
is ``python -m studies.bench_inference``'s, its model file's size
``python -m studies.model_size``'s.

Writes to ``--out`` (default ``results/kernel_bench``; ``--plot-only`` measures
nothing and redraws ``speedup.png`` and ``kernel_bench_summary.md`` from the
files there): ``kernel_bench.csv``,
``kernel_bench.md``, ``speedup.png``,
``kernel_bench_summary.md`` and ``run.json`` (config, backend, CPU, load average,
versions, hardware). Every table names the CPU. Timings depend on the machine
and its load: rerun on a quiet one.
"""

import itertools
import json
import os
import sys
import textwrap
import time
from collections import Counter
from dataclasses import asdict, dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from studies._cli import (add_config_flags, add_out_flag, check_out, config_from_args, fail,  # noqa: E402
                          make_parser, opt)
from xnorpp_core.layers import BinaryConv2d  # noqa: E402
from xnorpp_core.limits import BATCH_SIZE, SEED, THREADS, check_fields, reals  # noqa: E402
from xnorpp_core.models import binary_resnet18  # noqa: E402
from xnorpp_core.packed import BACKENDS, SUPPORTED_METHODS, BackendInfo, PackedBinaryConv2d, backend_info  # noqa: E402
from xnorpp_core.provenance import (atomic_write, cpu_markdown_table, disturbed_text, disturbed_threads,  # noqa: E402
                                    environment, save_figure, write_csv, write_json)
from xnorpp_core.report.machine import cpu_label  # noqa: E402
from xnorpp_core.scales import LearnedScale  # noqa: E402
from xnorpp_core.speedup import CONSISTENT_MODEL, speedup_ours, speedup_xnor  # noqa: E402

PROG = "python -m studies.kernel_bench"
PAPER_LAYER = (256, 256, 3, 1, 1, 14)  # Section 4.3: o = 256, 3x3; at ResNet-18's 14x14 stage


@dataclass(frozen=True)
class KernelBenchConfig:
    """One run of the benchmark; validated here, written to ``run.json``."""

    threads: tuple = opt((1, 2), "torch CPU threads (1 to the CPUs this process may use), each count timed in turn",
                         bounds=THREADS)
    methods: tuple = opt(("case4",), "scales of the binary layers", choices=SUPPORTED_METHODS)
    batch_size: int = opt(1, "images per layer call", bounds=BATCH_SIZE)
    min_run_time: float = opt(0.5, "seconds of calls per function and measurement (calls interleaved; at most 60)",
                              bounds=reals(0, 60, open_low=True))
    backend: str = opt("auto", "packed kernel backend (auto: $XNORPP_PACKED_BACKEND, else cpp, else numpy)",
                       choices=("auto", *BACKENDS))
    layers: str = opt("all", "all (ResNet-18's binary layers and the paper's) or paper", choices=("all", "paper"))
    seed: int = opt(0, "seed of weights and inputs", bounds=SEED)

    def __post_init__(self):
        check_fields(self)
        if not self.threads:
            raise ValueError("threads needs at least one value")
        bad = [m for m in self.methods if m not in SUPPORTED_METHODS]
        if not self.methods or bad:
            raise ValueError(f"methods must be among {SUPPORTED_METHODS}, got {bad or 'none'}")
        if self.layers not in ("all", "paper"):
            raise ValueError(f"layers must be 'all' or 'paper', got {self.layers!r}")
        if self.backend not in ("auto", *BACKENDS):
            raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {self.backend!r}")


def resnet18_layer_shapes(input_size=224):
    """``{(c, o, k, stride, padding, H): count}`` of ResNet-18's binary convolutions, in network order."""
    with torch.device("meta"):
        model = binary_resnet18("direct", 1000, input_size)
    return Counter((m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0], m.input_size[0])
                   for m in model.modules() if isinstance(m, BinaryConv2d))


def _randomize_scales(model, generator):
    """Learned factors away from their constant start, as training leaves them (so fused Gammas vary)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LearnedScale):
                for p in m.parameters():
                    p.mul_(torch.rand(p.shape, generator=generator) + 0.5)
    return model


REPEATS = 3  # timed calls per function and round


def _time(calls, threads, min_run_time):
    """``{name: (fastest, median)}`` time in ms of single calls of each function of ``calls``, with ``threads``
    torch threads.

    The functions take turns in rounds, so that a slower spell of the machine
    falls on all of them alike: in each round each function is called once
    untimed (its data back in cache, as when it is called repeatedly) and then
    ``REPEATS`` times, each call timed. Rounds go on for at least ``min_run_time``
    seconds per function (and 10 rounds). The fastest call is the one least
    disturbed by other processes (as ``timeit`` advises), so speed-ups use it;
    on a quiet machine the fastest and the median agree closely.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times, start, rounds = {name: [] for name in calls}, time.perf_counter(), 0
        while rounds < 10 or time.perf_counter() - start < min_run_time * len(calls):
            for name, fn in calls.items():
                fn()
                for _ in range(REPEATS):
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
            rounds += 1
    finally:
        torch.set_num_threads(previous)
    return {name: (min(t) * 1e3, float(np.median(t)) * 1e3) for name, t in times.items()}


def layer_shapes(which):
    """The shapes to time: ResNet-18's binary layers and the paper's (``"all"``), or the paper's alone."""
    shapes = resnet18_layer_shapes()
    if which == "paper":
        return {PAPER_LAYER: shapes.get(PAPER_LAYER, 0)}
    return {**shapes, PAPER_LAYER: shapes.get(PAPER_LAYER, 0)}


def bench_layers(cfg, backend, progress):
    shapes = layer_shapes(cfg.layers)
    g = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for ((c, o, k, s, p, size), count), method in itertools.product(shapes.items(), cfg.methods):
        x = torch.randn(cfg.batch_size, c, size, size, generator=g)
        layer = BinaryConv2d(c, o, k, s, p, method=method, input_size=size).eval()
        with torch.no_grad():
            layer.weight.normal_(generator=g)
        _randomize_scales(layer, g)
        packed = PackedBinaryConv2d.from_binary_conv(layer, backend)  # from the factors of Cases 3-4, if any
        layer.fuse()  # the emulated layer in its inference form
        per_channel = BinaryConv2d(c, o, k, s, p, method="case1").eval()  # Gamma (o, 1, 1): no dense read
        with torch.no_grad():
            per_channel.weight.copy_(layer.weight)
        packed_channel = PackedBinaryConv2d.from_binary_conv(per_channel, backend)
        x_cl, w = x.contiguous(memory_format=torch.channels_last), layer.weight.detach()
        w_cl, xb = w.contiguous(memory_format=torch.channels_last), packed.pack_input(x)
        calls = {"float_nchw": lambda: F.conv2d(x, w, None, s, p),
                 "float_cl": lambda: F.conv2d(x_cl, w_cl, None, s, p),
                 "emulated": lambda: layer(x),
                 "packed": lambda: packed(x),
                 "pack": lambda: packed.pack_input(x),
                 "conv": lambda: packed.forward_packed(xb, (size, size)),
                 "conv_channel_gamma": lambda: packed_channel.forward_packed(xb, (size, size))}
        for threads in cfg.threads:
            row = {"layer": f"{c}->{o} {k}x{k}/{s} @{size}", "method": method, "in_channels": c, "out_channels": o, "kernel": k,
                   "stride": s, "padding": p, "input_size": size, "output_size": layer.out_size[0],
                   "in_resnet18": count, "paper_layer": (c, o, k, s, p, size) == PAPER_LAYER,
                   "words_per_output": k * k * -(-c // 64), "threads": threads}
            with torch.no_grad():
                for name, (fastest, median) in _time(calls, threads, cfg.min_run_time).items():
                    row[f"{name}_ms"], row[f"{name}_median_ms"] = fastest, median
                    progress.update()
            row["float_ms"] = min(row["float_nchw_ms"], row["float_cl_ms"])
            row["float_median_ms"] = min(row["float_nchw_median_ms"], row["float_cl_median_ms"])
            row["spread"] = max(row[f"{n}_median_ms"] / row[f"{n}_ms"] for n in calls)  # ~1 on a quiet machine
            macs = cfg.batch_size * c * k * k * o * layer.out_size[0] * layer.out_size[1]
            row.update({"float_gflops": 2 * macs / row["float_ms"] / 1e6,
                        "packed_gbinops": macs / row["conv_ms"] / 1e6,  # binary multiply-adds per ns
                        "pack_share": row["pack_ms"] / row["packed_ms"],
                        "speedup": row["float_ms"] / row["packed_ms"],
                        "speedup_conv_only": row["float_ms"] / row["conv_ms"],
                        "speedup_vs_emulated": row["emulated_ms"] / row["packed_ms"],
                        "eq9": speedup_ours(o, k, k), "eq8": speedup_xnor(o, k, k),
                        "eq9_consistent": speedup_ours(o, k, k, float_cost=CONSISTENT_MODEL)})
            rows.append(row)
    return pd.DataFrame(rows)


def plot_speedup(table, info, cpu):
    """Measured speed-ups per layer shape and thread count beside Eq. 9; ``info`` the ``BackendInfo`` that ran."""
    table = table[table.method == table.method.iloc[0]]
    layers = list(dict.fromkeys(table.layer))
    threads = sorted(int(t) for t in table.threads.unique())
    fig, ax = plt.subplots(figsize=(10, 5.6))
    xs = np.arange(len(layers))
    width = 0.8 / (2 * len(threads))
    for i, t in enumerate(threads):
        part = table[table.threads == t].set_index("layer").loc[layers]
        ax.bar(xs + (2 * i - len(threads)) * width + width / 2, part.speedup, width,
               label=f"measured, packed incl. packing, {t} thread{'s' if t > 1 else ''}", color=f"C{i}")
        ax.bar(xs + (2 * i + 1 - len(threads)) * width + width / 2, part.speedup_conv_only, width,
               label=f"measured, convolution of a packed input, {t} thread{'s' if t > 1 else ''}", color=f"C{i}",
               alpha=0.45)
    first = table[table.threads == threads[0]].set_index("layer").loc[layers]
    ax.plot(xs, first.eq9, "k_", ms=30, mew=2, label="theory: Eq. 9 as printed")
    ax.plot(xs, first.eq9_consistent, "x", color="grey", ms=7, label="theory: Eq. 9, float op = 64 binary ops")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(xs, [lbl + (" *" if p else "") for lbl, p in zip(layers, first.paper_layer)], rotation=20,
                  ha="right", fontsize=8)
    ax.set_ylabel("speed-up over torch float32 conv")
    ax.set_title(f"Packed binary convolution vs torch float32, ResNet-18 binary layers at 224x224 "
                 f"(* the paper's layer); {table.method.iloc[0]}\n"
                 + textwrap.fill(f"backend {info.name}: {info.path}", 110) + f"\n{cpu}", fontsize=9)
    ax.set_ylim(0.8, 150)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def summary_lines(layers, info, cpu, load, cores, all_layers, batch_size, command):
    """``kernel_bench_summary.md``'s lines: the paper's layer, and (``all_layers``) the 16 layers summed; the
    timings marked disturbed where the load before the run left fewer idle ``cores`` than their threads."""
    paper = layers[layers.paper_layer]
    disturbed = disturbed_text(load[0], cores, layers.threads.unique())
    summary = [f"CPU: {cpu}; load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after"
               + (f" ({disturbed})." if disturbed else "."), "",
               "Paper's layer (256 -> 256, 3x3, 14x14), packed (packing included) vs torch float32:"]
    summary += [f"- {r.method}, {r.threads} thread(s): float {r.float_ms:.3f} ms, packed {r.packed_ms:.3f} ms "
                f"(packing {r.pack_ms:.3f} ms), speed-up {r.speedup:.1f}x (convolution only "
                f"{r.speedup_conv_only:.1f}x; median calls {r.float_median_ms / r.packed_median_ms:.1f}x); "
                f"Eq. 9 {r.eq9:.2f}x" for r in paper.itertuples()]
    if all_layers:
        summary += ["", "The 16 binary layers of ResNet-18 at 224x224, summed (ms per image):"]
        for (m, t), part in layers[layers.in_resnet18 > 0].groupby(["method", "threads"]):
            total = {k: (part[f"{k}_ms"] * part.in_resnet18).sum() / batch_size
                     for k in ("float", "emulated", "packed")}
            summary.append(f"- {m}, {t} thread(s): float {total['float']:.2f}, emulated {total['emulated']:.2f}, "
                           f"packed {total['packed']:.2f} ({total['float'] / total['packed']:.1f}x)")
    return summary + ["", f"Backend: {info.name}, {info.path} ({info.reason}). Command: `{command}`"]


def main(argv=None):
    parser = make_parser(PROG, __doc__)
    add_config_flags(parser, KernelBenchConfig)
    add_out_flag(parser, "results/kernel_bench")
    parser.add_argument("--plot-only", action="store_true",
                        help="measure nothing: redraw speedup.png and rewrite kernel_bench_summary.md from the "
                             "kernel_bench.csv and run.json already in --out")
    args = parser.parse_args(argv)
    cfg = config_from_args(PROG, KernelBenchConfig, args)
    out = check_out(PROG, args.out)
    if args.plot_only:
        try:
            layers = pd.read_csv(out / "kernel_bench.csv")
            run = json.loads((out / "run.json").read_text())
            info = BackendInfo(**run["backend"])
            summary = summary_lines(layers, info, layers.cpu.iloc[0], (run["load_average_before"][0],
                                    run["load_average_after"][0]), run["environment"]["cpu_count"],
                                    run["config"]["layers"] == "all",
                                    run["config"]["batch_size"], run["command"])
        except (OSError, ValueError, KeyError, TypeError, IndexError, pd.errors.ParserError) as err:
            fail(PROG, f"--plot-only needs kernel_bench.csv and run.json in {out}: {err}")
        fig = plot_speedup(layers, info, layers.cpu.iloc[0])
        save_figure(fig, out / "speedup.png", dpi=120)
        plt.close(fig)
        atomic_write(out / "kernel_bench_summary.md", "\n".join(summary) + "\n")
        return layers
    load_before = os.getloadavg()  # before the run's own start-up (the kernel's loading spikes it)
    if max(cfg.threads) > (os.cpu_count() or 1):
        print(f"note: {max(cfg.threads)} threads on {os.cpu_count()} CPUs", file=sys.stderr)

    print("loading the packed kernel (the first use compiles it, about half a minute) ...", file=sys.stderr)
    try:
        info = backend_info(cfg.backend)
    except RuntimeError as err:
        fail(PROG, str(err))
    cpu = cpu_label(environment())
    print(f"packed backend: {info.name} ({info.path}; {info.reason}); CPU: {cpu}", file=sys.stderr)

    steps = len(cfg.threads) * 7 * len(layer_shapes(cfg.layers)) * len(cfg.methods)
    with tqdm(total=steps, desc="kernel_bench", disable=None) as progress:
        layers = bench_layers(cfg, info.name, progress)
    load_after = os.getloadavg()

    layers.insert(0, "cpu", cpu)
    write_csv(out / "kernel_bench.csv", layers)
    table = layers.assign(layer=[f"**{lbl}**" if p else lbl for lbl, p in zip(layers.layer, layers.paper_layer)])
    atomic_write(out / "kernel_bench.md", cpu_markdown_table(table, [
        "layer", "method", "in_resnet18", "threads", "float_ms", "emulated_ms", "packed_ms", "pack_ms", "conv_ms",
        "conv_channel_gamma_ms", "speedup", "speedup_conv_only", "eq9", "eq9_consistent", "pack_share",
        "float_gflops", "packed_gbinops", "spread"], cpu))
    fig = plot_speedup(layers, info, cpu)
    save_figure(fig, out / "speedup.png", dpi=120)
    plt.close(fig)
    command = " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv)))
    summary = summary_lines(layers, info, cpu, (load_before[0], load_after[0]), os.cpu_count(), cfg.layers == "all",
                            cfg.batch_size, command)
    atomic_write(out / "kernel_bench_summary.md", "\n".join(summary) + "\n")
    write_json(out / "run.json", {"command": command, "config": asdict(cfg), "backend": asdict(info), "cpu": cpu,
                                  "load_average_before": load_before, "load_average_after": load_after,
                                  "disturbed_threads": disturbed_threads(load_before[0], os.cpu_count(), cfg.threads),
                                  "environment": environment("cpu")})
    print("\n".join(summary))
    print(f"wrote {out}/{{kernel_bench.csv,kernel_bench.md,speedup.png,kernel_bench_summary.md,run.json}}")


if __name__ == "__main__":
    main()
