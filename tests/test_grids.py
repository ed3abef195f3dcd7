"""The grids' plans and the Fashion-MNIST grid's time estimate: the formula against a hand computation, and
its premise (no step of the grid does more multiply-adds than the benchmark's step) against a count."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from xnorpp_core.models import build_model
from xnorpp_core.training import RECIPES, grids

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = REPO / "results" / "benchmarks" / "train_step" / "cuda"


def multiply_adds(arch, size, small_input):
    """Multiply-adds of one image through ``arch`` (every convolution and linear layer), counted by hooks on
    the meta device (shapes only): a convolution costs (output elements) x (c_in / groups) x kh x kw."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output[0].numel() * module.in_channels // module.groups * module.kernel_size[0] * \
                module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    with torch.device("meta"):
        model = build_model(arch, "real", 10 if small_input else 1000, size, small_input=small_input)
        for m in model.modules():
            m.register_forward_hook(count)
        model.eval()(torch.empty(1, 3, size, size))
    return total


def test_multiply_adds_by_hand():
    """ResNet-18 at 224x224, layer by layer: positions x c_out x c_in x k x k."""
    stem = 112 ** 2 * 64 * 3 * 7 * 7
    layer1 = 4 * 56 ** 2 * 64 * 64 * 9
    stage = [s ** 2 * c * (c // 2) * 9 + 3 * s ** 2 * c * c * 9 + s ** 2 * c * (c // 2)  # first conv, 3 more, shortcut
             for s, c in ((28, 128), (14, 256), (7, 512))]
    assert multiply_adds("resnet18", 224, False) == stem + layer1 + sum(stage) + 512 * 1000


def test_no_step_of_the_fashion_mnist_grid_outworks_the_benchmark_step():
    protocol = json.loads((BENCHMARK / "run.json").read_text())["protocol"]
    batch, size = int(protocol["batch_size"]), int(protocol["input_size"])
    benchmark = batch * multiply_adds("resnet18", size, False)
    plan = grids.GRID_PLANS[("fashion-mnist", "cuda")]
    recipe = RECIPES["fashion-mnist"]
    for arch in {a for a, _ in plan.rows}:
        step = recipe.batch_size[arch] * multiply_adds(arch, recipe.input_size[arch], recipe.small_input)
        assert step <= benchmark, (arch, step / benchmark)


def test_estimate_by_hand():
    plan = grids.GridPlan(seeds=(0, 1), epochs=3, rows=(("resnet18", "case4"), ("alexnet", "real")))
    seconds = grids.estimate_seconds(plan, {"case4": 10.0, "real": 20.0}, {"train": 1000, "val": 300})
    overhead = grids.RUN_OVERHEAD_S
    # ResNet-18: batch 256, 3 training steps and 2 validation batches; AlexNet: batch 400, 2 and 1
    resnet = 3 * (3 + 2 / 3) * 0.010 + overhead
    alexnet = 3 * (2 + 1 / 3) * 0.020 + overhead
    assert seconds == pytest.approx(2 * resnet + 2 * alexnet + overhead, rel=1e-12)


def test_the_committed_estimate_fits_the_budget():
    """The GPU grid as planned, estimated from the committed benchmark: at most 12 minutes."""
    import pandas as pd

    step_ms = pd.read_csv(BENCHMARK / "benchmark.csv").set_index("method")["step_ms"].to_dict()
    assert grids.estimate_seconds(grids.GRID_PLANS[("fashion-mnist", "cuda")], step_ms) <= 12 * 60


def test_plans_fall_back_to_the_recipe():
    assert grids.plan_for("digits", "cuda") == grids.plan_for("digits", "cpu") == grids.GRID_PLANS[("digits", "any")]
    other = grids.plan_for("imagefolder", "cuda")
    assert other == grids.plan_for("cifar10", "cpu") and other.seeds == (0,) and other.epochs is None
    assert grids.plan_for("fashion-mnist", "cpu").result is False and grids.plan_for("fashion-mnist", "cuda").result
