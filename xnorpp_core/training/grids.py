"""How the grids of Tables 1 and 3 are trained on each dataset, and what the Fashion-MNIST grid should cost.

A ``GridPlan`` is a dataset's grid: the rows (architecture, method) it trains,
the seeds of every row, the epochs and the learning-rate step (shorter than the
dataset's recipe, so that every row can be trained with several seeds), and
where its results go (``GRID_PLANS``, ``plan_for``):

- the embedded digits, on any device: every row of both tables, seeds 0-4, 2
  epochs with the learning rate divided by 10 after the first, into
  ``results/``;
- Fashion-MNIST on a GPU: ResNet-18 real, BNN, XNOR-Net, Cases 1-4 and AlexNet
  real, BNN, Case 4, seeds 0 1 2, 2 epochs with the same step, into
  ``results/fashion-mnist/``;
- Fashion-MNIST on a CPU: a check that the path works, not a result: ResNet-18
  XNOR-Net and Case 4, seed 0, 1 epoch of one batch of 8 images (and 8
  validation images), never into ``results/``;
- any other data (an ImageFolder tree such as ImageNet, CIFAR-10): every row of
  both tables, seed 0, the recipe.

``estimate_seconds`` is what a plan should take on one GPU, from a measured
training step (``python -m studies.bench_train --device cuda``). It is an
estimate, not a measurement: every step of the plan is charged what the
benchmark measured for a step of binary ResNet-18 with the same method at
224x224 and batch 128 in float32, a step that has at least as many
multiply-adds as any step of the Fashion-MNIST grid (``tests/test_grids.py``);
no credit is taken for the smaller steps or for mixed precision. A validation
batch is charged a third of a step (a forward pass of a forward and backward
one), and every run and the tables notebook ``RUN_OVERHEAD_S`` (assumed:
starting a notebook kernel, importing torch, starting CUDA, reading the data).
"""

import math
from dataclasses import dataclass

from .loop import RECIPES

__all__ = ["GridPlan", "GRID_PLANS", "FASHION_MNIST_IMAGES", "RUN_OVERHEAD_S", "VALIDATION_SHARE", "plan_for",
           "estimate_seconds"]

FASHION_MNIST_IMAGES = {"train": 60000, "val": 10000}  # the published splits
RUN_OVERHEAD_S = 8.0  # assumed per notebook, not measured on a GPU
VALIDATION_SHARE = 1 / 3  # a forward pass, of a forward and backward step


@dataclass(frozen=True)
class GridPlan:
    """The grid of one dataset on one kind of device (see the module docstring); ``rows`` None: every row of
    the tables asked for; ``epochs``/``lr_step``/``batch_size`` None: the recipe's."""

    seeds: tuple
    epochs: int | None = None
    lr_step: int | None = None
    rows: tuple | None = None
    batch_size: int | None = None
    limit_batches: int | None = None
    out: str = "results"
    result: bool = True  # False: a check of the path whose output is not a result (never under results/)
    extras: bool = True  # with 'all', also the Table 2 study and Figure 1 (they do not depend on the dataset)


FASHION_MNIST_ROWS = (("resnet18", "real"), ("resnet18", "direct"), ("resnet18", "xnor"), ("resnet18", "case1"),
                      ("resnet18", "case2"), ("resnet18", "case3"), ("resnet18", "case4"),
                      ("alexnet", "real"), ("alexnet", "direct"), ("alexnet", "case4"))
GRID_PLANS = {
    ("digits", "any"): GridPlan(seeds=(0, 1, 2, 3, 4), epochs=2, lr_step=1),
    ("fashion-mnist", "cuda"): GridPlan(seeds=(0, 1, 2), epochs=2, lr_step=1, rows=FASHION_MNIST_ROWS,
                                        out="results/fashion-mnist", extras=False),
    ("fashion-mnist", "cpu"): GridPlan(seeds=(0,), epochs=1, lr_step=1, rows=(("resnet18", "xnor"),
                                                                              ("resnet18", "case4")),
                                       batch_size=8, limit_batches=1, out=None, result=False, extras=False),
    ("other", "any"): GridPlan(seeds=(0,)),
}


def plan_for(dataset, device):
    """The ``GridPlan`` of ``dataset`` (``TrainConfig.dataset``) on ``device`` ("cpu" or "cuda")."""
    for key in ((dataset, device), (dataset, "any"), ("other", "any")):
        if key in GRID_PLANS:
            return GRID_PLANS[key]


def estimate_seconds(plan, step_ms, images=FASHION_MNIST_IMAGES, dataset="fashion-mnist"):
    """Seconds ``plan`` should take on one GPU (see the module docstring): ``step_ms`` maps a method to the
    measured step in milliseconds; ``images`` gives the training and validation images."""
    recipe = RECIPES[dataset]
    total = 0.0
    for arch, method in plan.rows:
        batch = plan.batch_size or recipe.batch_size[arch]
        steps = images["train"] // batch + VALIDATION_SHARE * math.ceil(images["val"] / batch)
        total += len(plan.seeds) * ((plan.epochs or recipe.epochs) * steps * step_ms[method] / 1000 + RUN_OVERHEAD_S)
    return total + RUN_OVERHEAD_S  # the tables notebook
