"""Protocol study of Table 2: the reconstruction over a grid of protocols.

    python -m studies.protocol_sweep
    python -m studies.protocol_sweep --shape 64x64x3x3@16 256x256x3x3@16 --losses l1 --crosses

reruns the Table 2 reconstruction over a grid of protocols (``xnorpp_core.reconstruction.protocol``):
the base cell (the first value of every axis), every other value of each axis with the rest at base,
and the full product of each pair of axes in ``--crosses``. Writes to ``--out``:

    sweep.csv    tidy: one row per cell, method, split (train / heldout) and metric (l1 / l2),
                 with the analytic expectation and, for learned fits, the evidence on the fit
                 (exact optimum for Cases 1-2; best of N independent starts and the Case 2
                 lower bound for Cases 3-4)
    claims.csv   one row per cell, split and metric: the paper's claims checked on paired trials
                 (ordering, XNOR / Case 1, ...)
    cells.csv    the protocol of every cell
    README.md    the analysis, every number pointing to a row of the CSVs
    *.png        the figures
    run.json     the configuration, seed, versions, hardware, time

Bad options exit 2 with one line, writing nothing.
"""

import argparse
import shlex
import sys
import time

import pandas as pd
import torch
from tqdm import tqdm

from xnorpp_core.reconstruction.distributions import INPUT_DISTRIBUTIONS, WEIGHT_SCALES
from xnorpp_core.reconstruction.fit import LOSSES
from xnorpp_core.reconstruction.protocol import AXES, PADDINGS, SweepConfig, cell_rows, claim_rows, run_cell
from xnorpp_core.report.protocol_analysis import analysis, cells_table, figures
from xnorpp_core.provenance import atomic_write, environment, save_figure, write_csv, write_json

from ._cli import FIT_HELP, PADDING_HELP, add_config_flags, add_out_flag, add_threads_flag, check_out, \
    config_from_args, fail, make_parser

PROG = "python -m studies.protocol_sweep"
DEFAULT = SweepConfig()
HELP = {
    "weights": "axis: scales of W (the first value is the base cell's)",
    "inputs": "axis: distributions of I (the first value is the base cell's)",
    "padding": f"axis: borders {', '.join(PADDINGS)} ({PADDING_HELP}; the first value is the base cell's)",
    "fit_loss": "axis: losses Gamma is fitted with (the first value is the base cell's)",
    "shape": "axis: layers OxCxKxK@H, o filters of c x k x k on c x H x H inputs (the first is the base cell's)",
    "train_inputs": "axis: inputs per trial one Gamma is fitted to (the first value is the base cell's)",
    "trials": "trials (layers W) per cell",
    "heldout_inputs": "held-out inputs per trial",
    "starts": "independent random starts of the alternating search behind Cases 3-4's reference",
    "sweeps": "most sweeps per alternating start",
    "tolerance": "largest relative gap of Adam above its reference (exact optimum, or best start) counted as "
                 "within tolerance",
    "seed": "seed of every cell's draws",
    "fit": FIT_HELP,
}


def _cross(text):
    a, sep, b = text.partition(":")
    if not sep:
        raise ValueError(f"a cross is AXIS:AXIS, got {text!r}")
    return a, b


def build_parser():
    parser = make_parser(PROG, __doc__)
    add_config_flags(parser, SweepConfig, helps=HELP, rename={"fit_loss": "losses"}, skip=("crosses",),
                     choices={"weights": WEIGHT_SCALES, "inputs": INPUT_DISTRIBUTIONS, "fit_loss": LOSSES},
                     metavars={"padding": "P"})
    parser.add_argument("--crosses", nargs="*", metavar="AXIS:AXIS", default=argparse.SUPPRESS,
                        help=f"pairs of axes crossed in full, none for none; axes: {', '.join(AXES)} (default "
                             f"{' '.join(f'{a}:{b}' for a, b in DEFAULT.crosses)})")
    add_threads_flag(parser, 1, "the fits are many small element-wise steps, which more threads can slow down")
    add_out_flag(parser, "results/protocol_sweep")
    return parser


def parse_args(argv=None):
    """``(SweepConfig, out, threads)`` from the command line; one-line exit 2 when invalid."""
    args = build_parser().parse_args(argv)
    extra = {}
    if hasattr(args, "crosses"):
        try:
            extra["crosses"] = tuple(_cross(c) for c in args.crosses)
        except ValueError as e:
            fail(PROG, str(e))
    config = config_from_args(PROG, SweepConfig, args, **extra)
    try:
        config.check_memory()
    except ValueError as e:
        fail(PROG, str(e))
    return config, check_out(PROG, args.out), args.threads


def run(config, progress=True):
    """Run every cell; returns ``(sweep, claims, cells)`` DataFrames and the seconds taken."""
    cells = config.cells()
    rows, claims = [], []
    start = time.perf_counter()
    with tqdm(total=len(cells), unit="cell", disable=None if progress else True) as bar:
        for i, cell in enumerate(cells):
            cell_id = f"c{i:02d}"
            bar.set_postfix_str(f"{cell_id}: {cell.describe()}")
            result = run_cell(cell, config)
            rows += cell_rows(cell_id, cell, result, config)
            claims += claim_rows(cell_id, cell, result)
            bar.update()
    return pd.DataFrame(rows), pd.DataFrame(claims), cells_table(cells), time.perf_counter() - start


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    config, out, threads = parse_args(argv)
    torch.set_num_threads(threads)
    sweep, claims, cells, seconds = run(config)
    env = environment("cpu")
    run_info = {"command": " ".join([PROG] + [shlex.quote(a) for a in argv]), "config": config.to_dict(),
                "cells": len(cells), "seconds": round(seconds, 1), "environment": env}
    figs = figures(sweep, claims, cells, config)  # everything made before the first file is written
    text = analysis(sweep, claims, cells, config, run_info, list(figs))
    write_csv(out / "sweep.csv", sweep)
    write_csv(out / "claims.csv", claims)
    write_csv(out / "cells.csv", cells)
    for name, fig in figs.items():
        save_figure(fig, out / name, dpi=120, bbox_inches="tight")
    write_json(out / "run.json", run_info)
    atomic_write(out / "README.md", text)
    outside = sweep[sweep["within_tolerance"].astype(str) == "False"]
    print(f"{len(cells)} cells in {seconds:.0f} s; wrote {out}/")
    if len(outside):
        print(f"warning: {len(outside)} learned fits more than {config.tolerance:g} above their reference: "
              f"{', '.join(outside.row_id)}")


if __name__ == "__main__":
    main()
