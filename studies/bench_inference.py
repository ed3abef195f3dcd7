"""The whole packed binary network against the real-valued one at its best in fp32, bf16 and int8, on this CPU.

    python -m studies.bench_inference [--arch resnet18] [--methods case1 case4] [--threads 1 2]
                                      [--batch-sizes 1 8] [--repeats 20] [--check-inputs 1000]
                                      [--real-layers float int8]

The protocol, the forms and the exactness check: ``xnorpp_core.deploy.whole_network``.
Writes to ``--out`` (default ``results/inference``): ``timing.csv`` (every model,
setting), ``speedup.csv`` (per packed network and setting: the fastest form of
each precision and the speed-ups, the packed arithmetic path), ``breakdown.csv``,
``layers.csv`` (each binary and int8 layer's multiply-adds per cycle beside the
ceiling of its path, measured on this core), ``exactness.csv``, ``summary.md``
(tables naming the CPU), ``breakdown.png`` and ``run.json`` (config, forms left
out and why, the versions of the runtimes the real network ran in, the
ceilings, load average before and after, versions, hardware).
"""

import os
import sys
from dataclasses import asdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from studies._cli import add_config_flags, add_out_flag, check_out, config_from_args, fail, make_parser  # noqa: E402
from xnorpp_core.deploy import forms, runtimes  # noqa: E402
from xnorpp_core.deploy.whole_network import (CALIBRATION_INPUTS, BenchInferenceConfig, bench,  # noqa: E402
                                              ceilings, exactness, layer_table, plot_breakdown, summary_text)
from xnorpp_core.packed import backend_info  # noqa: E402
from xnorpp_core.provenance import (atomic_write, disturbed_threads, environment, save_figure, write_csv,  # noqa: E402
                                    write_json)
from xnorpp_core.report.machine import cpu_label  # noqa: E402

PROG = "python -m studies.bench_inference"


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
    load_before = os.getloadavg()  # before the run's own start-up (the kernel's loading spikes it)
    try:
        info = backend_info(cfg.backend)
    except RuntimeError as err:
        fail(PROG, str(err))
    cpu = cpu_label(environment())
    print(f"packed backend: {info.name} ({info.path}; {info.reason}); CPU: {cpu}; "
          f"load average {load_before[0]:.2f}", file=sys.stderr)
    torch.manual_seed(cfg.seed)
    steps = (len(cfg.threads) * len(cfg.batch_sizes) * cfg.repeats
             + len(cfg.methods) * len(cfg.real_layers) * -(-cfg.check_inputs // 8))
    limits = ceilings(info)
    with tqdm(total=steps, desc="bench_inference", disable=None) as progress:
        timing, speed, breakdown, layers, binary, unavailable = bench(cfg, info, progress)
        torch.set_num_threads(1)
        exact = exactness(cfg, info, binary, progress) if cfg.check_inputs else None
    load_after = os.getloadavg()
    layers = layer_table(layers, limits)
    for frame in (timing, speed, breakdown, layers):
        frame.insert(0, "cpu", cpu)
    write_csv(out / "timing.csv", timing)
    write_csv(out / "speedup.csv", speed)
    write_csv(out / "breakdown.csv", breakdown)
    write_csv(out / "layers.csv", layers)
    if exact is not None:
        write_csv(out / "exactness.csv", exact)
    command = " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv)))
    summary = summary_text(cfg, info, speed, timing, breakdown, layers, limits, exact, (load_before[0], load_after[0]),
                           command, cpu)
    atomic_write(out / "summary.md", summary)
    fig = plot_breakdown(speed, breakdown, cpu)
    save_figure(fig, out / "breakdown.png", dpi=120)
    plt.close(fig)
    write_json(out / "run.json", {"command": command, "config": asdict(cfg), "backend": asdict(info), "cpu": cpu,
                                  "int8_api": forms.INT8_API, "int8_engines": list(forms.int8_engines()),
                                  "runtimes": runtimes.versions(),
                                  "calibration_inputs": CALIBRATION_INPUTS, "forms_left_out": unavailable,
                                  "ceilings": limits, "load_average_before": load_before,
                                  "load_average_after": load_after,
                                  "disturbed_threads": disturbed_threads(load_before[0], os.cpu_count(), cfg.threads),
                                  "environment": environment("cpu")})
    print(summary)
    return speed


if __name__ == "__main__":
    main()
