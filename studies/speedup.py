"""Figure 1 (Section 4.3): the theoretical speed-up of Eq. 8 (XNOR-Net) and Eq. 9 (ours).

    python -m studies.speedup

Prints the paper's headline case (256 output channels, 3x3 kernel) as the
formulas give it beside the printed values, and writes to ``--out``:

    speedup.csv    speed-up by kernel size, output channels, method and op-count model
    figure1.png    Figure 1, both op-count models side by side (also figure1.pdf)
    run.json       the command, versions and hardware

Two op-count models (see ``xnorpp_core.speedup``): ``paper`` is Eq. 8/9 as
printed (float ops charged like packed binary ops); ``consistent`` charges a
float op 64 packed binary ops, as the paper's own derivation implies.
"""

import sys
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from studies._cli import add_config_flags, add_out_flag, check_out, config_from_args, make_parser, opt  # noqa: E402
from xnorpp_core import paper  # noqa: E402
from xnorpp_core.limits import check_fields, ints  # noqa: E402
from xnorpp_core.provenance import environment, save_figure, write_csv, write_json  # noqa: E402
from xnorpp_core.speedup import CONSISTENT_MODEL, PAPER_MODEL, speedup_ours, speedup_xnor  # noqa: E402

PROG = "python -m studies.speedup"
MODELS = {"paper": PAPER_MODEL, "consistent": CONSISTENT_MODEL}
FUNCTIONS = {"xnor": speedup_xnor, "ours": speedup_ours}


@dataclass(frozen=True)
class SpeedupConfig:
    """The figure's range."""

    max_channels: int = opt(1024, "largest number of output channels o on the x axis", bounds=ints(2, 65_536))

    def __post_init__(self):
        check_fields(self)


def build_parser():
    parser = make_parser(PROG, __doc__)
    add_config_flags(parser, SpeedupConfig)
    add_out_flag(parser, "results/speedup")
    return parser


def speedup_table(kernels, channels):
    rows = [{"kernel": k, "out_channels": o, "model": model, "method": method,
             "speedup": fn(o, k, k, float_cost=cost)}
            for model, cost in MODELS.items() for method, fn in FUNCTIONS.items()
            for k in kernels for o in channels]
    return pd.DataFrame(rows)


def plot_figure1(table):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    titles = {"paper": "Eq. 8/9 as printed (float op = 1 binary op)",
              "consistent": "float op = 64 packed binary ops"}
    colors = dict(zip(sorted(table.kernel.unique()), ["tab:blue", "tab:orange", "tab:green"]))
    for ax, (model, part) in zip(axes, table.groupby("model", sort=False)):
        for (k, method), line in part.groupby(["kernel", "method"]):
            ax.plot(line.out_channels, line.speedup, color=colors[k], ls="-" if method == "ours" else "--",
                    label=f"{'ours (Eq. 9)' if method == 'ours' else 'XNOR-Net (Eq. 8)'}, {k}x{k}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("output channels o")
        ax.set_title(titles[model], fontsize=10)
        ax.axhline(64, color="grey", lw=0.8, ls=":")
        ax.annotate("64x: 64 binary ops per multiplication, the ceiling", xy=(0.01, 64), ha="left", va="bottom",
                    xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points", fontsize=7,
                    color="dimgrey")
        ax.set_ylim(0, 72)  # room for labels above the curves
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("theoretical speed-up over a real convolution")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Figure 1: theoretical speed-up of binary convolutions")
    fig.tight_layout()
    return fig


def main(argv=None):
    args = build_parser().parse_args(argv)
    config = config_from_args(PROG, SpeedupConfig, args)
    out = check_out(PROG, args.out)

    channels = np.unique(np.geomspace(1, config.max_channels, 64).round().astype(int))
    table = speedup_table(kernels=(1, 3, 5), channels=channels)
    lines = ["Headline case, o = 256, 3x3 kernel:",
             f"  {'':24s} {'formula':>9s} {'printed':>9s} {'float op = 64':>14s}"]
    for method, fn in FUNCTIONS.items():
        eq = "Eq. 8 (XNOR-Net)" if method == "xnor" else "Eq. 9 (ours)"
        lines.append(f"  {eq:24s} {fn(256, 3, 3):9.4f} {paper.SPEEDUP_256_3x3[method]:9.2f} "
                     f"{fn(256, 3, 3, float_cost=CONSISTENT_MODEL):14.4f}")
    write_csv(out / "speedup.csv", table)
    fig = plot_figure1(table)
    save_figure(fig, out / "figure1.png", dpi=120)
    save_figure(fig, out / "figure1.pdf")
    plt.close(fig)
    write_json(out / "run.json", {"command": " ".join([PROG] + (sys.argv[1:] if argv is None else argv)),
                                       "headline": lines, "environment": environment("cpu")})
    print("\n".join(lines))
    print(f"wrote {out}/{{speedup.csv,figure1.png,figure1.pdf,run.json}}")


if __name__ == "__main__":
    main()
