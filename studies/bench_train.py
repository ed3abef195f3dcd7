"""Training-step time and peak memory of binary ResNet-18, every method against the real one.

    python -m studies.bench_train                       # batch 16, 224x224, CPU, 2 threads here
    python -m studies.bench_train --device cuda --batch-size 128 --steps 10 --warmup 3 --repeats 1

One step is forward, cross-entropy, backward and an Adam update, at the same
batch and resolution for every method. Each method runs ``--repeats`` times,
each time in a fresh subprocess (so that the memory of one cannot hide in the
allocator caches of another), in an interleaved order (so that a busy
machine biases no method). In each: ``--warmup`` steps, then the peak memory
of one step above the memory held before it (model, Adam state, batch): on
CPU the rise of the process's resident set (Linux ``VmHWM`` after resetting
it through ``/proc/self/clear_refs``), on CUDA ``torch.cuda.max_memory_allocated``;
then ``--steps`` timed steps. The table gives the median and the minimum of
the wall time of all timed steps (on a shared machine the minimum is the less
disturbed one), and the median process CPU time of a step: with
``--threads 1`` it is the work of a step, little changed by other jobs on the
machine (with more threads it also counts OpenMP's waiting).

Writes ``OUT/benchmark.csv`` and ``OUT/benchmark.md`` (the table),
``OUT/runs.csv`` (every timed step) and ``OUT/run.json`` (protocol, versions, hardware); ``OUT`` defaults to results/benchmarks/train_step/DEVICE.
The target (issue 3): a binary step no slower than 1.25x the real one.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from studies._cli import ArgumentParser, check_device, fail
from xnorpp_core.layers import METHODS
from xnorpp_core.models import binary_resnet18
from xnorpp_core.provenance import atomic_write, environment, markdown_table, write_csv, write_json

PROG = "python -m studies.bench_train"
REPO = Path(__file__).resolve().parents[1]
TARGET = 1.25


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


def main(argv=None):
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every method (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, help="default results/benchmarks/train_step/DEVICE")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args(argv)
    for name in ("batch_size", "input_size", "steps", "repeats", "threads"):
        if getattr(args, name) < 1:
            fail(PROG, f"--{name.replace('_', '-')} must be a positive integer")
    if args.warmup < 1:
        fail(PROG, "--warmup must be at least 1 (the first step allocates Adam's state)")
    device = check_device(PROG, args.device)
    torch.set_num_threads(args.threads)  # what environment() reports; every worker sets it too
    if args.worker:
        print(json.dumps(measure(args.worker, args.batch_size, args.input_size, args.steps, args.warmup,
                                 args.device, args.channels_last, args.threads)))
        return None
    args.out = args.out or REPO / "results" / "benchmarks" / "train_step" / args.device
    if "real" not in args.methods:
        args.methods = ["real", *args.methods]
    common = ["--batch-size", str(args.batch_size), "--input-size", str(args.input_size), "--steps", str(args.steps),
              "--warmup", str(args.warmup), "--threads", str(args.threads), "--device", args.device,
              "--channels-last" if args.channels_last else "--no-channels-last"]
    runs = {m: [] for m in args.methods}
    for repeat in range(args.repeats):
        for method in args.methods:
            done = subprocess.run([sys.executable, "-m", "studies.bench_train", "--worker", method, *common],
                                  cwd=REPO, capture_output=True, text=True)
            if done.returncode:
                fail(PROG, f"{method} failed: {done.stderr.strip().splitlines()[-1]}")
            runs[method].append(json.loads(done.stdout.strip().splitlines()[-1]))
            last = runs[method][-1]
            print(f"repeat {repeat + 1}/{args.repeats} {method:10s} median {statistics.median(last['step_ms']):.1f} ms, "
                  f"CPU {statistics.median(last['cpu_ms']):.1f} ms, peak {last['peak_mib']:.0f} MiB", file=sys.stderr)
    raw = pd.DataFrame([{"method": m, "repeat": i + 1, "step": j + 1, "step_ms": t, "cpu_ms": c,
                         "peak_mib": r["peak_mib"]}
                        for m, results in runs.items() for i, r in enumerate(results)
                        for j, (t, c) in enumerate(zip(r["step_ms"], r["cpu_ms"]))])
    table = raw.groupby("method", sort=False).agg(step_ms=("step_ms", "median"), min_step_ms=("step_ms", "min"),
                                                  cpu_ms=("cpu_ms", "median"),
                                                  peak_mib=("peak_mib", "median")).reset_index()
    real = table.set_index("method").loc["real"]
    table["time_vs_real"] = table["step_ms"] / real["step_ms"]
    table["min_time_vs_real"] = table["min_step_ms"] / real["min_step_ms"]
    table["cpu_vs_real"] = table["cpu_ms"] / real["cpu_ms"]
    table["memory_vs_real"] = table["peak_mib"] / real["peak_mib"]
    table["meets_1.25x"] = table["time_vs_real"] <= TARGET
    write_csv(args.out / "runs.csv", raw.round(3))
    write_csv(args.out / "benchmark.csv", table.round(4))
    title = (f"Binary ResNet-18 training step (forward, backward, Adam), batch {args.batch_size}, "
             f"{args.input_size}x{args.input_size}, {device}, {args.threads} threads"
             f"{', channels_last' if args.channels_last else ''}; median and minimum of {args.repeats} x {args.steps} "
             "steps, each repeat a fresh process; peak memory of one step above what the step starts with")
    atomic_write(args.out / "benchmark.md", f"{title}\n\n{markdown_table(table.round(3))}\n")
    write_json(args.out / "run.json", {"protocol": {k: str(v) for k, v in vars(args).items()},
                                              "target_time_vs_real": TARGET, "environment": environment(device)})
    print(table.round(3).to_string(index=False))
    return table


if __name__ == "__main__":
    main()
