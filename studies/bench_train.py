"""Training-step time and peak memory of binary ResNet-18, every method against the real one.

    python -m studies.bench_train                       # batch 16, 224x224, CPU, 2 threads here
    python -m studies.bench_train --device cuda --batch-size 128 --steps 10 --warmup 3 --repeats 3

One step is forward, cross-entropy, backward and an Adam update, at the same
batch and resolution for every method. Each method runs ``--repeats`` times,
each time in a fresh subprocess (so that the memory of one cannot hide in the
allocator caches of another), in an interleaved order (so that a busy
machine biases no method). In each: ``--warmup`` steps, then the peak memory
of one step above the memory held before it (model, Adam state, batch): on
CPU the rise of the process's resident set (Linux ``VmHWM`` after resetting
it through ``/proc/self/clear_refs``), on CUDA ``torch.cuda.max_memory_allocated``;
then ``--steps`` timed steps. The table gives the median and the minimum of
the wall time of all timed steps (on a busy machine the minimum is the less
disturbed one), and the median process CPU time of a step: with
``--threads 1`` it is the work of a step, little changed by other jobs on the
machine (with more threads it also counts OpenMP's waiting).

Writes to ``--out`` (default results/benchmarks/train_step/DEVICE):

    benchmark.csv   one row per method: median and minimum step time, CPU time, peak memory, ratios to real
    benchmark.md    the same table in markdown
    runs.csv        every timed step
    run.json        protocol, load average before and after, the thread counts it disturbs, versions, hardware
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from studies._cli import DEVICE_CHOICES, add_config_flags, add_out_flag, check_out, config_from_args, fail, \
    make_parser, opt, resolve_device
from xnorpp_core.layers import METHODS
from xnorpp_core.limits import (BATCH_SIZE, ITERATIONS, REPEATS, SIDE, THREADS, check_fields, check_memory,
                                forward_bytes)
from xnorpp_core.models import binary_resnet18
from xnorpp_core.provenance import (atomic_write, disturbed_text, disturbed_threads, environment, markdown_table,
                                    write_csv, write_json)

PROG = "python -m studies.bench_train"
REPO = Path(__file__).resolve().parents[1]  # where ``python -m studies.bench_train`` runs its workers


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """The benchmark's options (see the module docstring)."""

    methods: tuple = opt(METHODS, "methods to time (real is always added: the ratios are to it)", choices=METHODS)
    batch_size: int = opt(16, "images per step", bounds=BATCH_SIZE)
    input_size: int = opt(224, "height and width of the images", bounds=SIDE)
    steps: int = opt(3, "timed steps per repeat", bounds=ITERATIONS)
    warmup: int = opt(1, "untimed steps first (at least 1: the first step allocates Adam's state)", bounds=ITERATIONS)
    repeats: int = opt(3, "interleaved repeats of every method, each in a fresh process (at least 3)",
                       bounds=REPEATS)
    threads: int = opt(torch.get_num_threads(), "torch CPU threads of every worker (1 to the CPUs this process may "
                       "use)", bounds=THREADS)
    channels_last: bool = opt(False, "channels-last memory format")
    device: str = opt("auto", "device of the steps; auto: cuda when available", choices=DEVICE_CHOICES)

    def __post_init__(self):
        check_fields(self)
        if "real" not in self.methods:
            object.__setattr__(self, "methods", ("real", *self.methods))


def _rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(method, batch_size, input_size, steps, warmup, device, channels_last, threads):
    """``{"step_ms": [wall time of each timed step], "cpu_ms": [its process CPU time], "peak_mib": peak memory
    of one step}``, in this process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = binary_resnet18(method, 1000, input_size).to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    x = torch.randn(batch_size, 3, input_size, input_size, device=device).to(memory_format=memory_format)
    y = torch.randint(0, 1000, (batch_size,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = _rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
        step()
        peak = (_rss_kib("VmHWM") - before) * 1024
    times, cpu_times = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return {"step_ms": [1000 * t for t in times], "cpu_ms": [1000 * t for t in cpu_times], "peak_mib": peak / 2**20}


def build_parser():
    parser = make_parser(PROG, __doc__)
    add_config_flags(parser, BenchConfig)
    add_out_flag(parser, None, "output folder (default results/benchmarks/train_step/DEVICE)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement in this process
    return parser


def summarize(raw):
    """The table: per method, the median and minimum step time, median CPU time and peak memory, and each
    as a ratio to the real network's."""
    table = raw.groupby("method", sort=False).agg(step_ms=("step_ms", "median"), min_step_ms=("step_ms", "min"),
                                                  cpu_ms=("cpu_ms", "median"),
                                                  peak_mib=("peak_mib", "median")).reset_index()
    real = table.set_index("method").loc["real"]
    table["time_vs_real"] = table["step_ms"] / real["step_ms"]
    table["min_time_vs_real"] = table["min_step_ms"] / real["min_step_ms"]
    table["cpu_vs_real"] = table["cpu_ms"] / real["cpu_ms"]
    table["memory_vs_real"] = table["peak_mib"] / real["peak_mib"]
    return table


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = resolve_device(PROG, getattr(args, "device", BenchConfig.device))
    config = config_from_args(PROG, BenchConfig, args, device=device)
    size = config.input_size
    try:
        check_memory(f"a batch of {config.batch_size} images of {size}x{size} through ResNet-18",
                     config.batch_size * forward_bytes(lambda: binary_resnet18("real", 1000, size), (1, 3, size, size)),
                     config.device)
    except ValueError as err:
        fail(PROG, str(err))
    torch.set_num_threads(config.threads)  # what environment() reports; every worker sets it too
    if args.worker:
        print(json.dumps(measure(args.worker, config.batch_size, config.input_size, config.steps, config.warmup,
                                 config.device, config.channels_last, config.threads)))
        return None
    out = check_out(PROG, args.out or Path("results/benchmarks/train_step") / config.device)
    common = ["--batch-size", str(config.batch_size), "--input-size", str(config.input_size),
              "--steps", str(config.steps), "--warmup", str(config.warmup), "--threads", str(config.threads),
              "--device", config.device, "--channels-last" if config.channels_last else "--no-channels-last"]
    runs = {m: [] for m in config.methods}
    load_before = os.getloadavg()
    for repeat in range(config.repeats):
        for method in config.methods:
            done = subprocess.run([sys.executable, "-m", "studies.bench_train", "--worker", method, *common],
                                  cwd=REPO, capture_output=True, text=True)
            if done.returncode:
                fail(PROG, f"{method} failed: {done.stderr.strip().splitlines()[-1]}")
            runs[method].append(json.loads(done.stdout.strip().splitlines()[-1]))
            last = runs[method][-1]
            print(f"repeat {repeat + 1}/{config.repeats} {method:10s} "
                  f"median {statistics.median(last['step_ms']):.1f} ms, "
                  f"CPU {statistics.median(last['cpu_ms']):.1f} ms, peak {last['peak_mib']:.0f} MiB", file=sys.stderr)
    raw = pd.DataFrame([{"method": m, "repeat": i + 1, "step": j + 1, "step_ms": t, "cpu_ms": c,
                         "peak_mib": r["peak_mib"]}
                        for m, results in runs.items() for i, r in enumerate(results)
                        for j, (t, c) in enumerate(zip(r["step_ms"], r["cpu_ms"]))])
    table = summarize(raw)
    write_csv(out / "runs.csv", raw.round(3))
    write_csv(out / "benchmark.csv", table.round(4))
    title = (f"Binary ResNet-18 training step (forward, backward, Adam), batch {config.batch_size}, "
             f"{config.input_size}x{config.input_size}, {config.device}, {config.threads} threads"
             f"{', channels_last' if config.channels_last else ''}; median and minimum of {config.repeats} x "
             f"{config.steps} "
             "steps, each repeat a fresh process; peak memory of one step above what the step starts with")
    disturbed = disturbed_text(load_before[0], os.cpu_count(), [config.threads])
    title += f"; load average (1 min) {load_before[0]:.2f} before" + (f" ({disturbed})" if disturbed else "")
    atomic_write(out / "benchmark.md", f"{title}\n\n{markdown_table(table.round(3))}\n")
    write_json(out / "run.json", {"protocol": {**dataclasses.asdict(config), "out": str(out)},
                                  "load_average_before": load_before, "load_average_after": os.getloadavg(),
                                  "disturbed_threads": disturbed_threads(load_before[0], os.cpu_count(),
                                                                         [config.threads]),
                                  "environment": environment(config.device)})
    print(table.round(3).to_string(index=False))
    return table


if __name__ == "__main__":
    main()
