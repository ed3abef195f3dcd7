"""Benchmark: the vectorised Table 2 study against a naive per-trial loop.

    python -m studies.bench_reconstruction --trials 100 --naive-trials 100

The vectorised fits (those of ``xnorpp_core.reconstruction.table2.run_table2``, without the
evidence search that the study runs after them) compute each trial's binary output once and
fit all trials together. The naive loop fits one trial
at a time with a ``BinaryConv2d`` layer, running the full binary convolution
under autograd at every Adam step, with the same Adam schedule and stopping
rule. With ``--naive-trials`` below ``--trials`` the naive time is measured on
that many trials and scaled linearly (said in the output). Writes to ``--out``:

    benchmark.json   both wall times, their ratio, versions and hardware
    benchmark.md     the same as a table
"""

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from studies._cli import add_config_flags, add_out_flag, check_out, config_from_args, make_parser, opt
from xnorpp_core.layers import BinaryConv2d
from xnorpp_core.limits import SEED, TRIALS, check_fields
from xnorpp_core.provenance import atomic_write, environment, write_json
from xnorpp_core.reconstruction import adam_until_converged, distance, draw_layers, fit_adam, layer_outputs
from xnorpp_core.scales import LEARNED_SCALES
from xnorpp_core.reconstruction.table2 import ReconstructionConfig

PROG = "python -m studies.bench_reconstruction"


@dataclass(frozen=True)
class BenchConfig:
    """The benchmark's options (the layers are Table 2's: ``ReconstructionConfig``'s defaults)."""

    trials: int = opt(100, "trials of the vectorised study", bounds=TRIALS)
    naive_trials: int = opt(100, "trials the naive loop is timed on (scaled to --trials when fewer)", bounds=TRIALS)
    seed: int = opt(0, "seed of the draws", bounds=SEED)

    def __post_init__(self):
        check_fields(self)
        if self.naive_trials > self.trials:
            raise ValueError(f"naive_trials must be at most --trials ({self.trials}), got {self.naive_trials}")


def build_parser():
    parser = make_parser(PROG, __doc__)
    add_config_flags(parser, BenchConfig)
    add_out_flag(parser, "results/benchmarks/reconstruction")
    return parser


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
    args = build_parser().parse_args(argv)
    bench = config_from_args(PROG, BenchConfig, args)
    out = check_out(PROG, args.out)
    config = ReconstructionConfig(trials=bench.trials, seed=bench.seed)

    t0 = time.perf_counter()
    vectorised_fits(config)
    vectorised = time.perf_counter() - t0

    w, x = draw_layers(bench.naive_trials, config.out_channels, config.in_channels, config.kernel_size,
                       config.input_size, torch.Generator().manual_seed(config.seed))
    t0 = time.perf_counter()
    for t in tqdm(range(bench.naive_trials), desc="naive loop", unit="trial", disable=None):
        naive_trial(w[t], x[t], config)
    naive = (time.perf_counter() - t0) * bench.trials / bench.naive_trials

    result = {
        "trials": bench.trials,
        "naive_trials_measured": bench.naive_trials,
        "vectorised_seconds": vectorised,
        "naive_seconds": naive,
        "speedup": naive / vectorised,
        "environment": environment("cpu"),
    }
    scaled = "" if bench.naive_trials == bench.trials else f" (measured on {bench.naive_trials}, scaled)"
    text = (f"# Table 2 study: vectorised against a naive per-trial loop\n\n"
            f"`{PROG} --trials {bench.trials} --naive-trials {bench.naive_trials}` on "
            f"{result['environment']['cpu']} ({result['environment']['torch_threads']} threads).\n\n"
            f"| run | trials | wall time (s) |\n|:--|--:|--:|\n"
            f"| vectorised fits (as in `python -m studies.reconstruction`) | {bench.trials} | {vectorised:.1f} |\n"
            f"| naive per-trial loop{scaled} | {bench.trials} | {naive:.1f} |\n\n"
            f"Ratio naive / vectorised: **{naive / vectorised:.1f}x**.\n")
    write_json(out / "benchmark.json", result)
    atomic_write(out / "benchmark.md", text)
    print(text)


if __name__ == "__main__":
    main()
