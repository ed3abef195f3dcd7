"""Protocol study of Table 2: the reconstruction over a grid of protocols.

``python -m studies.protocol_sweep`` reruns the Table 2 reconstruction over a grid of protocols
(``xnorpp_core.reconstruction.protocol``)
and writes to ``--out`` (default ``results/protocol_sweep/``):

- ``sweep.csv``   tidy: one row per cell, method, split (train / heldout) and metric
  (l1 / l2), with the analytic expectation and, for learned fits, the evidence on
  the fit (exact optimum for Cases 1-2; best of N independent starts and the
  Case 2 lower bound for Cases 3-4);
- ``claims.csv``  one row per cell, split and metric: the paper's claims checked
  on paired trials (ordering, XNOR / Case 1, ...);
- ``cells.csv``   the protocol of every cell;
- ``README.md``   the analysis, every number pointing to a row of the CSVs;
- ``*.png``       the figures; ``run.json`` the configuration, seed, versions, hardware, time.

Every flag is a field of ``SweepConfig`` (lists comma-separated; ``--crosses``
as ``axis:axis`` pairs). Bad options exit 2 with one line, writing nothing.
"""

import dataclasses
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from xnorpp_core.reconstruction.protocol import AXES, SweepConfig, cell_rows, claim_rows, run_cell
from xnorpp_core.report.protocol_analysis import analysis, cells_table, figures
from xnorpp_core.provenance import atomic_write, environment, save_figure, write_csv, write_json
from xnorpp_core.reconstruction import FitConfig

from ._cli import ArgumentParser, fail

PROG = "python -m studies.protocol_sweep"
DEFAULT = SweepConfig()


def _flag(name):
    return "--" + name.replace("_", "-")


def parse_args(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/protocol_sweep", help="output folder (default %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default %(default)s: the fits are many small element-wise steps, and on "
                        "the shared 2-core machine two threads ran 3-13 times slower than one)")
    for axis in AXES:
        p.add_argument(_flag(axis), default=",".join(map(str, getattr(DEFAULT, axis))),
                       help=f"values of the {axis} axis, the first is the base (default %(default)s)")
    p.add_argument("--crosses", default=",".join(f"{a}:{b}" for a, b in DEFAULT.crosses),
                   help="pairs of axes crossed in full, 'none' for none (default %(default)s)")
    helps = {"trials": "trials (layers W) per cell", "heldout_inputs": "held-out inputs per trial",
             "starts": "independent random starts of the alternating search behind Cases 3-4's reference",
             "sweeps": "most sweeps per alternating start", "seed": "seed of every cell's draws"}
    for name, text in helps.items():
        p.add_argument(_flag(name), type=int, default=getattr(DEFAULT, name), help=f"{text} (default %(default)s)")
    p.add_argument("--tolerance", type=float, default=DEFAULT.tolerance,
                   help="largest relative gap of Adam above its reference (exact optimum, or best start) counted as "
                        "within tolerance (default %(default)s)")
    for f in dataclasses.fields(FitConfig):
        p.add_argument(_flag("fit_" + f.name), type=type(f.default),
                       default=getattr(DEFAULT.fit, f.name), help="Adam's schedule (default %(default)s)")
    return p.parse_args(argv)


def config_from_args(args):
    """``SweepConfig`` from parsed flags; ``ValueError`` with a one-line message when invalid."""
    axes = {}
    for axis in AXES:
        values = tuple(v.strip() for v in getattr(args, axis).split(",") if v.strip())
        if axis == "train_inputs":
            try:
                values = tuple(int(v) for v in values)
            except ValueError:
                raise ValueError(f"--train-inputs takes integers, got {getattr(args, axis)!r}") from None
        axes[axis] = values
    crosses = () if args.crosses == "none" else tuple(
        tuple(pair.split(":")) for pair in args.crosses.split(",") if pair)
    fit = FitConfig(**{f.name: getattr(args, "fit_" + f.name) for f in dataclasses.fields(FitConfig)})
    return SweepConfig(**axes, crosses=crosses, trials=args.trials, heldout_inputs=args.heldout_inputs,
                       starts=args.starts, sweeps=args.sweeps, tolerance=args.tolerance, seed=args.seed, fit=fit)


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
    args = parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as e:
        fail(PROG, str(e))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        fail(PROG, f"--out {out} exists and is not a folder")
    if args.threads < 1:
        fail(PROG, f"--threads must be a positive integer, got {args.threads}")
    torch.set_num_threads(args.threads)
    sweep, claims, cells, seconds = run(config)
    env = environment("cpu")
    run_info = {"command": " ".join([PROG] + [shlex.quote(a) for a in argv]), "config": config.to_dict(),
                "cells": len(cells), "seconds": round(seconds, 1), "environment": env}
    write_csv(out / "sweep.csv", sweep)
    write_csv(out / "claims.csv", claims)
    write_csv(out / "cells.csv", cells)
    figs = figures(sweep, claims, cells, config)
    for name, fig in figs.items():
        save_figure(fig, out / name, dpi=120, bbox_inches="tight")
    write_json(out / "run.json", run_info)
    atomic_write(out / "README.md", analysis(sweep, claims, cells, config, run_info, list(figs)))
    outside = sweep[sweep["within_tolerance"].astype(str) == "False"]
    print(f"{len(cells)} cells in {seconds:.0f} s; wrote {out}/")
    if len(outside):
        print(f"warning: {len(outside)} learned fits more than {config.tolerance:g} above their reference: "
              f"{', '.join(outside.row_id)}")


if __name__ == "__main__":
    main()
