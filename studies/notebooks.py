"""Run the papermill notebooks: the training grids of Tables 1 and 3, Table 2, Figure 1, then the tables.

    python -m studies.notebooks table1|table3|all [--data DATA] [--seeds N ...] [--epochs N] [--threads N] [--out DIR]

Grids (``xnorpp_core.report.tables.GRIDS``, the paper's rows this toolkit can train):

    table1   ResNet-18 with XNOR-Net (the paper's baseline) and Cases 1-4
    table3   AlexNet and ResNet-18 with direct binarization (BNN), XNOR-Net, Case 4 (ours), real-valued
    all      both grids; then the Table 2 study (notebooks/reconstruction.ipynb) and Figure 1
             (studies.speedup) unless their results exist (or --force)

Each row of a grid is trained once per seed: every (row, seed) executes
``notebooks/train.ipynb`` with papermill into ``OUT/runs/<arch>_<method>/seed<N>.ipynb``
(ignored by git: the plots make them bulky) and its run folder
``OUT/runs/<arch>_<method>/seed<N>/`` holds metrics.csv, config.json,
summary.json (and checkpoint.pt, ignored by git). A row shared by both grids
(ResNet-18 XNOR-Net and Case 4) is trained once. A finished run (summary.json
written, config.json matching the request) is skipped unless ``--force``; an
interrupted run resumes from its checkpoint; a finished run asked for with other
parameters is an error. Last, ``notebooks/tables.ipynb`` renders Tables 1-3 and
Figure 1 beside the paper's numbers into ``OUT/tables/`` (executed notebook:
``OUT/tables/tables.ipynb``).

What a grid trains depends on the data and the device (``xnorpp_core.training.grids``;
flags override it). Without ``--data`` every row trains on the embedded digits with 5
seeds (0 1 2 3 4) for 2 epochs, the learning rate divided by 10 after every epoch:
shorter than the digits recipe (9 epochs, a step of 3), whose 5 seeds of every row of
both grids would take several hours of one CPU core (one digits epoch of ResNet-18
takes tens of seconds on one core, AlexNet more). With ``--data fashion-mnist`` on a
GPU, 10 rows (ResNet-18 real, BNN, XNOR-Net, Cases 1-4; AlexNet real, BNN, Case 4)
train with 3 seeds for 2 epochs into ``results/fashion-mnist`` (Table 2 and Figure 1
are not rerun there: they do not depend on the data); on a CPU the same command runs
a check of that path instead (ResNet-18 XNOR-Net and Case 4, one seed, one epoch of
one batch of 8 images), which is not a result and needs ``--out`` outside results/:

    python -m studies.notebooks all --data fashion-mnist --train                # GPU: results/fashion-mnist
    python -m studies.notebooks all --data fashion-mnist --train --out /tmp/fm  # CPU: the path check

With other ``--data`` (an ImageFolder tree, CIFAR-10) every row trains with the
recipe (ImageNet: the paper's 80 epochs) and one seed, e.g. on 8 GPUs:

    python -m studies.notebooks all --data /data/imagenet --nproc 8 --device cuda

A results folder that holds no runs yet is refused unless ``--train`` is given
(a mistyped ``--out`` would otherwise start training the whole grid), as is a
selection (grid and ``--archs``) without rows; every option is checked before
anything is trained or written. Notebooks run in the ``python3`` Jupyter kernel
with the repository root as working directory. A parameter the notebook does
not declare is an error.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
from tqdm.auto import tqdm

from studies._cli import DEVICE_CHOICES, add_config_flags, add_out_flag, check_out, default_run_folder, fail, \
    in_flags, make_parser, opt, resolve_device, train_in_process
from xnorpp_core.limits import THREADS, TRIALS, ints, usable_cpus
from xnorpp_core.provenance import atomic_write
from xnorpp_core.report.tables import GRIDS
from xnorpp_core.training import DataError, TrainConfig
from xnorpp_core.training.data import DATA_HELP, NATIVE_SIZE, parse_data, splits
from xnorpp_core.training.grids import plan_for

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
PROG = "python -m studies.notebooks"
KERNEL = "python3"
RUN_FILES = ("checkpoint.pt", "metrics.csv", "config.json", "summary.json")
# Parameters compared with a finished run's config.json (the others do not change the experiment).
EXPERIMENT = ("arch", "method", "alexnet_widths", "data", "epochs", "batch_size", "lr", "weight_decay", "lr_step",
              "seed", "limit_batches")

__all__ = ["GridConfig", "cli_flags", "run_training", "check_parameters", "execute", "row_parameters", "unique_rows",
           "main"]


_TRAIN = {f.name: f.metadata.get("bounds") for f in dataclasses.fields(TrainConfig)}  # the same bounds as train's


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """The options of the grids' runs (checked by ``TrainConfig`` and ``_validate``)."""

    archs: tuple[str, ...] = opt(("resnet18", "alexnet"), "train only the rows of these architectures",
                                 choices=("resnet18", "alexnet"))
    data: str | None = opt(None, f"what to train on: {DATA_HELP} (default: the embedded digits)")
    epochs: int | None = opt(None, "epochs per run (default: the grid's, xnorpp_core.training.grids: 2 on the "
                                   "digits and Fashion-MNIST, else the recipe's, e.g. the paper's 80)",
                             bounds=_TRAIN["epochs"])
    batch_size: int | None = opt(None, "global batch size (default: the recipe's)", bounds=_TRAIN["batch_size"])
    lr: float | None = opt(None, "Adam learning rate (default: the paper's 1e-3)", bounds=_TRAIN["lr"])
    weight_decay: float | None = opt(None, "Adam weight decay (default: the paper's 1e-5)",
                                     bounds=_TRAIN["weight_decay"])
    lr_step: int | None = opt(None, "learning rate / 10 every N epochs (default: the grid's with its epochs, 1 on "
                                    "the digits and Fashion-MNIST, else the recipe's)",
                              bounds=_TRAIN["lr_step"])
    seeds: tuple[int, ...] | None = opt(None, "seeds of every row (default: the grid's: 0 1 2 3 4 on the digits, 0 1 "
                                              "2 on Fashion-MNIST, 0 on other data)", bounds=_TRAIN["seed"])
    threads: int | None = opt(None, "torch CPU threads per run, 1 to the CPUs this process may use "
                                    "(OMP_NUM_THREADS of the notebook kernels; default: torch's, one per core)",
                              bounds=THREADS)
    limit_batches: int | None = opt(None, "at most N batches per epoch (smoke runs; the Fashion-MNIST path check "
                                          "on a CPU: 1)", bounds=_TRAIN["limit_batches"])
    nproc: int = opt(1, "processes per row: more than 1 runs torchrun (at most the CPUs this process may use)",
                     bounds=ints(1, lambda: usable_cpus()))
    device: str = opt("auto", "device of every run; auto: cuda when available", choices=DEVICE_CHOICES)
    workers: int | None = opt(None, "data-loader workers per process (default: the recipe's)",
                              bounds=_TRAIN["workers"])
    trials: int = opt(100, "Table 2 trials, with 'all'", bounds=TRIALS)
    force: bool = opt(False, "retrain finished runs, rerun Table 2 and Figure 1")
    train: bool = opt(False, "train into a results folder that holds no runs yet (without it such a folder is "
                             "refused: a mistyped --out would start the whole grid)")


# ---------------------------------------------------------------- used inside the notebooks
def cli_flags(**options):
    """Command-line flags from keyword options: ``lr_step=1`` -> ``--lr-step 1``.

    ``None`` gives no flag (the study's default); booleans give ``--force`` / ``--no-force``.
    """
    argv = []
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv


def run_training(config, nproc=1):
    """Train ``config`` (a ``TrainConfig``) with ``studies.train``: in this process when ``nproc == 1``, else
    under torchrun.

    Returns the run's summary (``summary.json``). Unusable options, data or checkpoints raise their own
    one-line ``ValueError`` (``DataError``, ``TrainingError``); a failed torchrun raises ``RuntimeError``
    carrying the last line of its error output.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc}")
    if nproc == 1:
        return train_in_process(config)
    if config.out is None:
        config = dataclasses.replace(config, out=str(default_run_folder(config)))
    argv = cli_flags(**config.to_dict())
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "studies.train", *argv]
    done = subprocess.run(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(done.stderr)
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if "error: " in line] or done.stderr.splitlines()[-1:]
        raise RuntimeError(f"torchrun ... -m studies.train {' '.join(argv)} failed (exit code {done.returncode})"
                           + (f": {errors[0].strip()}" if errors else ""))
    out = REPO / config.out  # relative to the repository, where torchrun ran
    return json.loads((out / "summary.json").read_text())


# ---------------------------------------------------------------- papermill
def check_parameters(notebook, parameters):
    """Raise ``ValueError`` when ``parameters`` names something ``notebook``'s parameters cell does not declare."""
    declared = papermill.inspect_notebook(str(notebook))
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"{Path(notebook).name} declares no parameter {', '.join(unknown)} "
                         f"(it declares {', '.join(declared)})")


def execute(notebook, output, parameters):
    """Execute ``notebook`` with ``parameters`` into ``output`` (papermill, kernel ``python3``, cwd = repository).

    papermill writes the executed notebook to a hidden file beside ``output``; it is then written
    to ``output`` atomically with repository-relative paths in its papermill record, also when it
    failed (papermill's ``PapermillExecutionError`` is re-raised after that). The kernel logs errors only:
    its warning that a local kernel talks over TCP without encryption does not apply to a kernel that
    lives and dies on this machine within one run.
    """
    check_parameters(notebook, parameters)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial.ipynb")
    try:
        papermill.execute_notebook(str(notebook), str(partial), parameters=parameters, kernel_name=KERNEL,
                                   cwd=str(REPO), progress_bar=False,
                                   extra_arguments=["--IPKernelApp.log_level=ERROR"])
    finally:
        if partial.exists():  # record where it came from and went, relative to the repository
            executed = nbformat.read(partial, as_version=4)
            executed.metadata.papermill.update(input_path=_relative(notebook), output_path=_relative(output))
            atomic_write(output, nbformat.writes(executed) + "\n")
            partial.unlink()


# ---------------------------------------------------------------- the grids
def _relative(path):
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def row_parameters(arch, method, seed, out, args):
    """The parameters of notebooks/train.ipynb for one (row, seed) of a grid.

    AlexNet rows name their widths (the paper's), so that a finished run of other widths is refused, not skipped.
    """
    plan = args.grid_plan  # the dataset's grid on this device; flags override it
    epochs = args.epochs if args.epochs is not None else plan.epochs
    lr_step = args.lr_step if args.lr_step is not None else (plan.lr_step if args.epochs is None else None)

    def chosen(name):
        return getattr(args, name) if getattr(args, name) is not None else getattr(plan, name)

    return {"arch": arch, "method": method, "alexnet_widths": "paper" if arch == "alexnet" else None,
            "data": args.data, "epochs": epochs, "batch_size": chosen("batch_size"),
            "lr": args.lr, "weight_decay": args.weight_decay, "lr_step": lr_step, "seed": seed,
            "limit_batches": chosen("limit_batches"), "nproc": args.nproc, "device": args.device,
            "workers": args.workers, "out": _relative(out), "resume": False, "quiet": False}


def unique_rows(grids):
    """The (arch, method) rows of ``grids`` (names in ``GRIDS``), each once, in the grids' order."""
    return tuple(dict.fromkeys(row for grid in grids for row in GRIDS[grid]))


def _differences(config, params):
    """What a finished run's ``config.json`` and the requested parameters disagree on (unset parameters agree)."""
    return [f"{k} {config.get(k)!r} -> {params[k]!r}" for k in EXPERIMENT
            if params[k] is not None and config.get(k) != params[k]]


def _plan_run(arch, method, seed, args):
    """(notebook path, run folder, parameters, action) of one run; action is 'skip', 'train' or 'resume'."""
    folder = args.results / "runs" / f"{arch}_{method}" / f"seed{seed}"
    notebook = folder.with_suffix(".ipynb")
    params = row_parameters(arch, method, seed, folder, args)
    if not args.force and (folder / "summary.json").exists() and (folder / "config.json").exists():
        changed = _differences(json.loads((folder / "config.json").read_text()), params)
        if changed:
            fail(PROG, f"{_relative(folder)} was trained with other parameters ({'; '.join(changed)}): "
                       "pass --force to retrain it, or --out for another folder")
        return notebook, folder, params, "skip"
    if not args.force and (folder / "checkpoint.pt").exists():
        return notebook, folder, {**params, "resume": True}, "resume"
    return notebook, folder, params, "train"


def _validate(args):
    """Every option checked before anything is written (one-line error, exit 2; the numbers' bounds when
    parsed)."""
    try:
        source = parse_data(args.data)
    except DataError as e:
        fail(PROG, str(e))
    device = resolve_device(PROG, args.device)
    plan = args.grid_plan = plan_for(source.kind, device)
    args.seeds = list(plan.seeds if args.seeds is None else args.seeds)
    if len(set(args.seeds)) != len(args.seeds):
        fail(PROG, f"--seeds repeats a seed: {' '.join(map(str, args.seeds))}")
    if source.kind == "imagefolder":
        data = Path(args.data)
        missing = [s for s in ("train", "val") if not (data / s).is_dir()]
        if missing:
            fail(PROG, f"--data {args.data}: no {' or '.join(s + '/' for s in missing)} folder "
                       "(an ImageFolder tree holds train/ and val/ class folders)")
        args.data = str(data.resolve())
    elif source.kind in NATIVE_SIZE:  # read once here, so that a damaged file stops the grid before it starts
        if source.path != parse_data(source.kind).path:  # a folder of the user's, as the notebooks' cwd sees it
            args.data = f"{source.kind}:{_relative(source.path)}"
        try:
            splits(args.data, NATIVE_SIZE[source.kind])
        except DataError as e:
            fail(PROG, str(e))
    if args.out is None and plan.out is None:
        fail(PROG, f"on {device} the {source.kind} grid runs only a check of its path (not a result): pass --out DIR "
                   "outside results/")
    args.out = Path(plan.out if args.out is None else args.out)
    args.results = check_out(PROG, args.out).resolve()
    if not plan.result and args.results.is_relative_to(REPO / "results"):
        fail(PROG, f"--out {args.out}: on {device} the {source.kind} grid runs only a check of its path, which is "
                   "not a result: write it outside results/")
    params = row_parameters("resnet18", "case4", args.seeds[0], args.results, args)
    try:
        TrainConfig(**{k: v for k, v in params.items() if k != "nproc" and v is not None})
    except ValueError as e:
        fail(PROG, in_flags(str(e), {k: "--" + k.replace("_", "-") for k in params}))
    grids = ("table1", "table3") if args.grid == "all" else (args.grid,)
    rows = [row for row in unique_rows(grids) if row[0] in args.archs and (plan.rows is None or row in plan.rows)]
    if not rows:
        fail(PROG, f"--archs {' '.join(args.archs)}: {args.grid} has no rows of "
                   f"{'that architecture' if len(args.archs) == 1 else 'those architectures'} "
                   f"(its rows: {', '.join(sorted({a for a, _ in unique_rows(grids)}))})")
    args.plan = [_plan_run(arch, method, seed, args) for arch, method in rows for seed in args.seeds]
    runs = args.results / "runs"
    if not args.train and not (runs.is_dir() and any(runs.glob("*/seed*/config.json"))):
        fail(PROG, f"--out {args.out}: no runs there yet; pass --train to start training the grid in it")


def parse_args(argv=None):
    parser = make_parser(PROG, __doc__)
    parser.add_argument("grid", choices=("table1", "table3", "all"), help="which grid to run")
    add_config_flags(parser, GridConfig)
    add_out_flag(parser, None, "results folder: runs/, tables/, and with 'all' reconstruction/ and speedup/ "
                               "(default: the grid's, results/ or results/fashion-mnist/)")
    args = parser.parse_args(argv)
    for f in dataclasses.fields(GridConfig):  # flags left out take GridConfig's defaults
        if not hasattr(args, f.name):
            setattr(args, f.name, f.default)
    _validate(args)
    return args


def _run_rows(args):
    plan = args.plan  # made and checked by _validate
    if args.threads is not None:  # inherited by the notebook kernels, read by torch at start-up
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    for notebook, folder, params, action in tqdm(plan, desc="runs", disable=None):
        name = f"{folder.parent.name}/{folder.name}"
        if action == "skip":
            tqdm.write(f"{name}: finished, skipped ({_relative(folder)})")
            continue
        tqdm.write(f"{name}: {'resuming' if action == 'resume' else 'training'} -> {_relative(notebook)}")
        if args.force:  # start over: the entry point refuses to overwrite a checkpoint
            for stale in RUN_FILES:
                (folder / stale).unlink(missing_ok=True)
        t0 = time.perf_counter()
        _execute_or_fail(NOTEBOOKS / "train.ipynb", notebook, params)
        final = json.loads((folder / "summary.json").read_text())["final"]
        tqdm.write(f"{name}: {final['epoch']} epochs in {time.perf_counter() - t0:.0f} s, validation top-1 "
                   f"{final['val_top1']:.1f}% top-5 {final['val_top5']:.1f}%")


def _execute_or_fail(notebook, output, params):
    try:
        execute(notebook, output, params)
    except Exception as e:  # papermill's execution error carries the cell's traceback
        name = getattr(e, "ename", type(e).__name__)
        fail(PROG, f"{notebook.name} failed ({name}: {getattr(e, 'evalue', e)}); see {_relative(output)}")


def main(argv=None):
    args = parse_args(argv)
    if not args.grid_plan.result:
        print(f"a check of the path, not a result: {len(args.plan)} run(s) of {args.grid_plan.limit_batches} "
              f"batch(es) into {_relative(args.results)}", flush=True)
    _run_rows(args)
    results = args.results
    if args.grid == "all" and args.grid_plan.extras:
        if args.force or not (results / "reconstruction" / "table2.csv").exists():
            print("Table 2: notebooks/reconstruction.ipynb", flush=True)
            device = "cuda" if args.device == "cuda" else "cpu"
            _execute_or_fail(NOTEBOOKS / "reconstruction.ipynb", results / "reconstruction" / "reconstruction.ipynb",
                             {"trials": args.trials, "device": device,
                              "out": _relative(results / "reconstruction")})
        if args.force or not (results / "speedup" / "speedup.csv").exists():
            subprocess.run([sys.executable, "-m", "studies.speedup", "--out", os.path.relpath(results / "speedup")],
                           check=True)
    print("Tables: notebooks/tables.ipynb", flush=True)
    names = ["table1", "table2", "table3", "figure1"] if args.grid_plan.extras else ["table1", "table3"]
    _execute_or_fail(NOTEBOOKS / "tables.ipynb", results / "tables" / "tables.ipynb",
                     {"results": _relative(results), "out": _relative(results / "tables"), "render": names})
    print(f"wrote {_relative(results / 'tables')}/{{{','.join(names)}}}.{{md,tex}}"
          + (", figure1.png" if "figure1" in names else ""))


if __name__ == "__main__":
    main()
