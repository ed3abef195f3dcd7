"""Train binary ResNet-18 or AlexNet with the paper's recipe (Section 5.1.3).

    python -m studies.train                      # binary ResNet-18, Case 4, embedded digits, CPU, minutes
    python -m studies.train --data /data/imagenet --method case4 --arch resnet18
    torchrun --nproc_per_node 8 -m studies.train --data /data/imagenet --arch alexnet --method xnor
    python -m studies.train --out runs/x --resume   # continue a run from runs/x/checkpoint.pt

Every flag is a field of ``xnorpp_core.training.TrainConfig`` (the help text
comes from there); a flag left out takes the dataset's recipe value
(``RECIPES``: the paper's for an ImageFolder tree, a scaled one for digits);
docs/models.md sets each architecture and recipe choice beside the paper and
XNOR-Net's code:

  --arch resnet18|alexnet        network (default resnet18)
  --method M                     real, direct, xnor, xnor_alpha, case1, case2, case3, case4 (default case4)
  --data PATH                    ImageFolder root holding train/ and val/ class folders; default: the
                                 embedded scikit-learn digits (nothing is downloaded)
  --epochs N                     80 (digits 9)
  --batch-size N                 global batch over all processes: 256 ResNet-18, 400 AlexNet (digits 64)
  --lr X                         Adam learning rate, 1e-3
  --weight-decay X               1e-5
  --lr-step N, --lr-gamma X      learning rate times X every N epochs: 25 and 0.1 (digits 3 and 0.1)
  --input-size N                 crop: 224 ResNet-18, 227 AlexNet (digits 16)
  --resize N                     ImageFolder: shorter side before cropping, 256
  --hflip / --no-hflip           ImageFolder: random horizontal flips in training (default on)
  --small-input / --no-small-input   3x3/1 stem for small images (default off; digits on)
  --pad-mode zero|minus_one      border of the binary convolutions (default zero)
  --alexnet-widths paper|torchvision   AlexNet filters: 96-256-384-384-256 (default) or 64-192-384-256-256
  --resnet-shortcut conv|avgpool_conv|binary   ResNet-18 downsampling shortcut (default conv: real 1x1/2 + BN)
  --bn-affine / --no-bn-affine   learned scale and shift in the BN before each sign (default on)
  --clamp-weights / --no-clamp-weights   centre and clamp binary weights to [-1, 1] before every step
                                 (XNOR-Net's training code; default off)
  --resize-mode shorter_side|square   ImageFolder: resize the shorter side (default) or to a square
  --seed N                       0
  --limit-batches N              at most N training and N validation batches per epoch (smoke runs)
  --out DIR                      the run's folder: metrics.csv, config.json, summary.json, checkpoint.pt;
                                 default results/train/digits-ARCH-METHOD for digits,
                                 runs/DATANAME-ARCH-METHOD for an ImageFolder tree (both under the repository)
  --resume / --no-resume         continue from DIR/checkpoint.pt when it exists (start otherwise); without it
                                 an existing checkpoint is an error
  --device auto|cpu|cuda         default auto
  --amp / --no-amp               float16 mixed precision on CUDA (default on)
  --workers N                    data-loader processes per process: 8 (digits 0)
  --quiet / --no-quiet           no progress bars or per-epoch lines

Under ``torchrun`` every process runs this same command; DistributedDataParallel
over NCCL (GPUs) or gloo (CPUs). In a notebook, ``main([...])`` runs it in this
process and returns the summary dict. Bad options, data or checkpoints give a
one-line error and exit code 2 before anything is written.
"""

import dataclasses
from pathlib import Path

from studies._cli import ArgumentParser, add_config_flags, config_from_args, fail
from xnorpp_core.training.data import DataError
from xnorpp_core.training import TrainConfig, TrainingError, train

PROG = "python -m studies.train"
REPO = Path(__file__).resolve().parents[1]


def build_parser():
    """One flag per ``TrainConfig`` field; defaults stay ``TrainConfig``'s (flags left out are not passed)."""
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_config_flags(parser, TrainConfig)
    return parser


def default_out(config):
    """results/train/NAME for the embedded digits (committed), runs/NAME otherwise (ignored by git);
    relative when run from the repository root, so that config.json names no machine's path."""
    path = REPO / ("results/train" if config.data is None else "runs") / config.run_name
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def main(argv=None):
    config = config_from_args(PROG, TrainConfig, build_parser().parse_args(argv))
    if config.out is None:
        config = dataclasses.replace(config, out=str(default_out(config)))
    try:
        return train(config)
    except (DataError, TrainingError) as e:
        fail(PROG, str(e))


if __name__ == "__main__":
    main()
