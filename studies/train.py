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

from studies._cli import add_config_flags, config_from_args, fail, in_flags, make_parser, train_in_process
from xnorpp_core.training.data import DataError
from xnorpp_core.training import TrainConfig, TrainingError

PROG = "python -m studies.train"


def build_parser():
    """One flag per ``TrainConfig`` field; defaults stay ``TrainConfig``'s (flags left out are not passed)."""
    return add_config_flags(make_parser(PROG, __doc__), TrainConfig)


def main(argv=None):
    args = build_parser().parse_args(argv)
    config = config_from_args(PROG, TrainConfig, args)
    try:
        return train_in_process(config)
    except (DataError, TrainingError) as e:
        fail(PROG, in_flags(str(e), args._config_flags))


if __name__ == "__main__":
    main()
