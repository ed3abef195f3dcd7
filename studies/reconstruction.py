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

from studies._cli import ArgumentParser, add_config_flags, check_device, config_from_args  # noqa: E402
from xnorpp_core.layers import PAD_MODES  # noqa: E402
from xnorpp_core.provenance import environment, save_figure, write_csv, write_json, atomic_write  # noqa: E402
from xnorpp_core.reconstruction import LOSSES  # noqa: E402
from xnorpp_core.reconstruction.evidence import GAP_FLOOR, NEAR_BEST  # noqa: E402
from xnorpp_core.reconstruction.table2 import DEVICES, ReconstructionConfig, run_table2, summarize, to_markdown  # noqa: E402

PROG = "python -m studies.reconstruction"


def parse_args(argv=None):
    parser = ArgumentParser(prog=PROG, description="Regenerate Table 2 of XNOR-Net++ (Section 4.2).")
    add_config_flags(parser, ReconstructionConfig,
                     choices={"pad_mode": PAD_MODES, "loss": LOSSES, "device": DEVICES})
    parser.add_argument("--out", type=Path, default=Path("results/reconstruction"),
                        help="output folder (default: results/reconstruction)")
    args = parser.parse_args(argv)
    config = config_from_args(PROG, ReconstructionConfig, args)
    check_device(PROG, config.device)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    return config, args.out


def plot_trials(trials):
    """Per-trial distributions: all methods on a log axis, and a close-up without Case 2."""
    methods = list(dict.fromkeys(trials["method"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [7, 6]})
    for ax, shown, log in ((axes[0], methods, True), (axes[1], [m for m in methods if m != "case2"], False)):
        ax.boxplot([trials.loc[trials.method == m, "rel_l1"] for m in shown])
        ax.set_xticks(range(1, len(shown) + 1), shown)
        ax.set_yscale("log" if log else "linear")
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_ylabel("L1 / mean |Y|  (per trial)")
    axes[0].set_title("all methods (log scale)", fontsize=10)
    axes[1].set_title("close-up without Case 2", fontsize=10)
    fig.suptitle(f"Table 2: reconstruction error over {trials.trial.nunique()} trials")
    fig.tight_layout()
    return fig


def main(argv=None):
    config, out = parse_args(argv)
    trials, info = run_table2(config)
    table = summarize(trials)
    markdown = to_markdown(table)
    header = (f"Table 2 reproduction: {config.trials} trials, seed {config.seed}, "
              f"W {config.out_channels}x{config.in_channels}x{config.kernel_size}x{config.kernel_size}, "
              f"I {config.in_channels}x{config.input_size}x{config.input_size} ~ N(0, 1), "
              f"padding {config.padding} ({config.pad_mode}), fitted with {config.loss.upper()} loss.\n\n")
    evidence = (f"Evidence on each Adam fit, in its {config.loss.upper()} fitting loss: `reference` is the exact "
                "optimum for Cases 1-2 and, for the non-convex Cases 3-4, the best of "
                f"{config.starts} alternating exact-update searches from independent random starts (not a "
                "proof of optimality). `Adam vs reference` is the signed relative gap (adam - reference) / "
                "reference over trials: negative for Cases 3-4 means Adam found a lower loss than every start. "
                f"`starts near best` counts the starts that ended within a relative {NEAR_BEST:g} of the best. "
                "`Adam above lower bound` is Adam's relative distance above a proven lower bound (the exact "
                "optimum for Cases 1-2; the exact Case 2 optimum for Cases 3-4, which contain no better Gamma). "
                f"Relative gaps divide by at least {GAP_FLOOR:.1%} of the loss of Gamma = 0. "
                "Per-trial values: `trials.csv`.\n\n")
    write_csv(out / "trials.csv", trials)
    write_csv(out / "table2.csv", table)
    atomic_write(out / "table2.md", header + markdown + "\n\n" + evidence)
    figure = plot_trials(trials)
    save_figure(figure, out / "table2.png", dpi=120)
    plt.close(figure)  # saved, not shown (a notebook calling main() would show it a second time)
    write_json(out / "run.json", {
        "command": " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv))),
        "config": dataclasses.asdict(config),
        "protocol": __doc__.strip().splitlines()[4:10],
        **info,
        "environment": environment(config.device),
    })
    print(header + markdown)
    print(f"\nwrote {out}/{{table2.csv,trials.csv,table2.md,table2.png,run.json}} "
          f"in {info['wall_seconds']:.1f} s")


if __name__ == "__main__":
    main()
