"""Table 2 (Section 4.2): how close can a binary layer get to a real one?

    python -m studies.reconstruction --trials 100

Draws ``--trials`` layers W (64x64x3x3) and inputs I (64x16x16) from N(0, 1),
fixes the binary weights at sign(W), fits each method's scale with Adam until
the stopping rule fires (analytic XNOR-Net scales are computed, not fitted),
compares each fit with the exact optimum (Cases 1-2) or with the best of
``--starts`` independent alternating searches and the Case 2 lower bound
(Cases 3-4), and writes to ``--out``:

    table2.csv   one row per method, with the paper's values beside ours
    trials.csv   one row per (trial, method)
    table2.md    the table in markdown
    table2.png   the per-trial distribution of each method
    run.json     protocol, seed, versions, hardware, wall time
"""

import dataclasses
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from studies._cli import (FIT_HELP, PADDING_HELP, add_config_flags, add_device_flag, add_out_flag,  # noqa: E402
                          check_out, config_from_args, fail, make_parser, resolve_device)
from xnorpp_core.provenance import (atomic_write, check_writable_folder, environment, save_figure,  # noqa: E402
                                    write_csv, write_json)
from xnorpp_core.reconstruction import LOSSES  # noqa: E402
from xnorpp_core.reconstruction.protocol import parse_padding  # noqa: E402
from xnorpp_core.reconstruction.table2 import ReconstructionConfig, run_table2, summarize, to_page  # noqa: E402
from xnorpp_core.report.tables import METHOD_LABELS  # noqa: E402

PROG = "python -m studies.reconstruction"
HELP = {
    "trials": "trials: layers W and inputs I drawn, each fitted on its own",
    "seed": "seed of the draws",
    "loss": "loss the learned scales are fitted with (and their evidence measured in)",
    "out_channels": "output channels o of W",
    "in_channels": "input channels c of W and I",
    "kernel_size": "kernel size k of W (k x k)",
    "input_size": "height and width of I",
    "fit": FIT_HELP,
}


def build_parser():
    parser = make_parser(PROG, __doc__)
    add_config_flags(parser, ReconstructionConfig, helps=HELP, choices={"loss": LOSSES},
                     skip=("padding", "pad_mode", "device"))
    parser.add_argument("--padding", metavar="P", default="0",
                        help=f"border of the convolution, N at most --kernel-size // 2; {PADDING_HELP} (default 0)")
    add_device_flag(parser, "where the fits run")
    add_out_flag(parser, "results/reconstruction")
    return parser


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    try:
        padding, pad_mode = parse_padding(args.padding, only=None)
    except ValueError as err:
        fail(PROG, str(err).replace("unknown padding", "unknown --padding"))
    config = config_from_args(PROG, ReconstructionConfig, args, device=resolve_device(PROG, args.device),
                              padding=padding, pad_mode=pad_mode)
    try:
        config.check_memory()
    except ValueError as err:
        fail(PROG, str(err))
    return config, check_out(PROG, args.out)


def plot_trials(trials):
    """Per-trial distributions, one box per method (the tables' names): all methods on a log axis, and a
    close-up on a linear axis without Case 2, whose error is far below the others'."""
    methods = list(dict.fromkeys(trials["method"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1]})
    panels = ((axes[0], methods, True, "all methods (log scale)"),
              (axes[1], [m for m in methods if m != "case2"], False, "close-up without Case 2 (linear scale)"))
    for ax, shown, log, title in panels:
        ax.boxplot([trials.loc[trials.method == m, "rel_l1"] for m in shown], orientation="horizontal")
        ax.set_yticks(range(1, len(shown) + 1), [METHOD_LABELS[m].md if m in METHOD_LABELS else m for m in shown])
        ax.invert_yaxis()  # the tables' order, top to bottom
        ax.set_xscale("log" if log else "linear")
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_xlabel("L1 / mean |Y|  (per trial)")
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"Table 2: reconstruction error over {trials.trial.nunique()} trials")
    fig.tight_layout()
    return fig


def main(argv=None):
    config, out = parse_args(argv)
    run(config, out, " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv))))


def run(config, out, command=None):
    """Run the study for ``config`` and write its files to ``out`` (what ``main`` does after parsing; a
    notebook calls it directly). ``ValueError`` naming ``out`` when it cannot be written, before any work."""
    out = Path(out)
    check_writable_folder(out)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available on this machine")
    trials, info = run_table2(config)
    table = summarize(trials)
    write_csv(out / "trials.csv", trials)
    write_csv(out / "table2.csv", table)
    page = to_page(table, config)
    atomic_write(out / "table2.md", page)
    figure = plot_trials(trials)
    save_figure(figure, out / "table2.png", dpi=120)
    plt.close(figure)  # saved, not shown (a notebook calling main() would show it a second time)
    write_json(out / "run.json", {
        "command": command or f"{PROG} (called from Python)",
        "config": dataclasses.asdict(config),
        "protocol": __doc__.strip().splitlines()[4:10],
        **info,
        "environment": environment(config.device),
    })
    print(page.rstrip())
    print(f"\nwrote {out}/{{table2.csv,trials.csv,table2.md,table2.png,run.json}} "
          f"in {info['wall_seconds']:.1f} s")


if __name__ == "__main__":
    main()
