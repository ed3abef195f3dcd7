"""Benchmark: the vectorised Table 2 study against a naive per-trial loop.

    python -m studies.bench_reconstruction [--trials 100] [--naive-trials 100]

The vectorised fits (those of ``xnorpp_core.reconstruction.table2.run_table2``, without the
evidence search that the study runs after them) compute each trial's binary output once and
fit all trials together. The naive loop fits one trial
at a time with a ``BinaryConv2d`` layer, running the full binary convolution
under autograd at every Adam step, with the same Adam schedule and stopping
rule. Both wall times and their ratio go to ``--out`` (benchmark.json,
benchmark.md). With ``--naive-trials`` below ``--trials`` the naive time is
measured on that many trials and scaled linearly (said in the output).
"""

import time
from pathlib import Path

import torch

from studies._cli import ArgumentParser, fail
from xnorpp_core.layers import BinaryConv2d
from xnorpp_core.provenance import atomic_write, environment, write_json
from xnorpp_core.reconstruction import adam_until_converged, distance, draw_layers, fit_adam, layer_outputs
from xnorpp_core.scales import LEARNED_SCALES
from xnorpp_core.reconstruction.table2 import ReconstructionConfig

PROG = "python -m studies.bench_reconstruction"


def naive_trial(w, x, config):
    """Fit every learned case on one trial, convolving at every step; returns the steps per case."""
    y = torch.nn.functional.conv2d(x[None], w, padding=config.padding)
    steps = {}
    for method in LEARNED_SCALES:
        layer = BinaryConv2d(w.shape[1], w.shape[0], w.shape[-1], padding=config.padding, method=method,
                             input_size=x.shape[-2:], pad_mode=config.pad_mode)
        layer.weight.data.copy_(w)
        layer.weight.requires_grad_(False)
        steps[method] = adam_until_converged(layer.scale.parameters(),
                                             lambda: distance(layer(x[None]), y, config.loss), config.fit)
    return steps


def vectorised_fits(config):
    """Every learned case fitted to all trials at once, as the Table 2 study does."""
    w, x = draw_layers(config.trials, config.out_channels, config.in_channels, config.kernel_size,
                       config.input_size, torch.Generator().manual_seed(config.seed))
    y, b, _, _ = layer_outputs(w, x, config.padding, config.pad_mode)
    for method in LEARNED_SCALES:
        fit_adam(method, b, y, config.loss, config.fit)


def main(argv=None):
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--naive-trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/reconstruction"))
    args = parser.parse_args(argv)
    if not 1 <= args.naive_trials <= args.trials:
        fail(PROG, f"--naive-trials must be between 1 and --trials ({args.trials})")
    config = ReconstructionConfig(trials=args.trials, seed=args.seed)

    t0 = time.perf_counter()
    vectorised_fits(config)
    vectorised = time.perf_counter() - t0

    w, x = draw_layers(args.naive_trials, config.out_channels, config.in_channels, config.kernel_size,
                       config.input_size, torch.Generator().manual_seed(config.seed))
    t0 = time.perf_counter()
    for t in range(args.naive_trials):
        naive_trial(w[t], x[t], config)
    naive = (time.perf_counter() - t0) * args.trials / args.naive_trials

    result = {
        "trials": args.trials,
        "naive_trials_measured": args.naive_trials,
        "vectorised_seconds": vectorised,
        "naive_seconds": naive,
        "speedup": naive / vectorised,
        "environment": environment("cpu"),
    }
    scaled = "" if args.naive_trials == args.trials else f" (measured on {args.naive_trials}, scaled)"
    text = (f"# Table 2 study: vectorised against a naive per-trial loop\n\n"
            f"`{PROG} --trials {args.trials} --naive-trials {args.naive_trials}` on "
            f"{result['environment']['cpu']} ({result['environment']['torch_threads']} threads).\n\n"
            f"| run | trials | wall time (s) |\n|:--|--:|--:|\n"
            f"| vectorised fits (as in `python -m studies.reconstruction`) | {args.trials} | {vectorised:.1f} |\n"
            f"| naive per-trial loop{scaled} | {args.trials} | {naive:.1f} |\n\n"
            f"Ratio naive / vectorised: **{naive / vectorised:.1f}x**.\n")
    write_json(args.out / "benchmark.json", result)
    atomic_write(args.out / "benchmark.md", text)
    print(text)


if __name__ == "__main__":
    main()
