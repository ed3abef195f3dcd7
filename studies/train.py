"""Train binary ResNet-18 or AlexNet with the paper's recipe (Section 5.1.3).

    python -m studies.train --out runs/digits    # binary ResNet-18, Case 4, embedded digits, CPU, minutes
    python -m studies.train --data /data/imagenet --method case4 --arch resnet18
    python -m studies.train --data fashion-mnist --device cuda     # Debian's dataset-fashion-mnist
    torchrun --nproc_per_node 8 -m studies.train --data /data/imagenet --arch alexnet --method xnor
    python -m studies.train --out runs/x --resume   # continue a run from runs/x/checkpoint.pt

Every flag is a field of ``xnorpp_core.training.TrainConfig`` (the help text
comes from there); a flag left out takes the dataset's recipe value
(``RECIPES``: the paper's for an ImageFolder tree, a scaled one for digits);
docs/models.md sets each architecture and recipe choice beside the paper and
XNOR-Net's code.

Without ``--out`` a digits run goes to results/train/digits-ARCH-METHOD and any
other to runs/DATANAME-ARCH-METHOD (both under the repository); a
folder there that already holds a finished run (a committed result) is refused:
pass ``--out DIR`` for a new run, or that folder as ``--out`` to replace it.
Writes metrics.csv, config.json, summary.json and checkpoint.pt to the run's folder.

Under ``torchrun`` every process runs this same command; DistributedDataParallel
over NCCL (GPUs) or gloo (CPUs). In a notebook, ``main([...])`` runs it in this
process and returns the summary dict. Bad options, data or checkpoints give a
one-line error and exit code 2 before anything is written.
"""

import dataclasses
from pathlib import Path

from studies._cli import add_config_flags, config_from_args, fail, in_flags, make_parser
from xnorpp_core.training.data import DataError
from xnorpp_core.training import TrainConfig, TrainingError, train

PROG = "python -m studies.train"
REPO = Path(__file__).resolve().parents[1]


def build_parser():
    """One flag per ``TrainConfig`` field; defaults stay ``TrainConfig``'s (flags left out are not passed)."""
    return add_config_flags(make_parser(PROG, __doc__), TrainConfig)


def default_out(config):
    """results/train/NAME for the embedded digits (committed), runs/NAME otherwise (ignored by git);
    relative when run from the repository root, so that config.json names no machine's path."""
    path = REPO / ("results/train" if config.data is None else "runs") / config.run_name
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def run(config):
    """Train ``config`` (``out`` defaulting to ``default_out``, refused when that holds a finished run) and
    return the summary; a notebook calls it directly. Unusable data, checkpoints or options raise
    ``DataError`` / ``TrainingError`` (one line)."""
    if config.out is None:
        out = default_out(config)
        if (out / "summary.json").exists() and not config.resume:
            raise TrainingError(f"{out} (the default --out) holds a finished run: pass --out DIR for a new run, "
                                f"or --out {out} to replace it")
        config = dataclasses.replace(config, out=str(out))
    return train(config)


def main(argv=None):
    args = build_parser().parse_args(argv)
    config = config_from_args(PROG, TrainConfig, args)
    try:
        return run(config)
    except (DataError, TrainingError) as e:
        fail(PROG, in_flags(str(e), args._config_flags))


if __name__ == "__main__":
    main()
