"""The bounds of numeric options (``xnorpp_core.limits``): what they take, what they refuse and how they say it;
the memory a forward pass keeps, against a count by hand."""

import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from xnorpp_core import limits
from xnorpp_core.layers import METHODS
from xnorpp_core.limits import SEED, Bounds, check_fields, forward_bytes, ints, reals
from xnorpp_core.models import build_model


@pytest.mark.parametrize("bounds, inside, outside", [
    (ints(1, 4), [1, 2, 4], [0, 5, -1, 1.0, 2.5, True, "2", None, float("nan")]),
    (reals(0, 1, open_low=True), [1e-300, 0.5, 1, 1.0], [0, 0.0, -1e-300, 1.0000001, float("nan"), float("inf"), "1"]),
    (reals(0, 1, open_high=True), [0, 0.999], [1, 1.0, -0.0 - 1e-9]),
    (reals(-math.inf, math.inf), [-1e308, 0, 1e308], [float("inf"), -float("inf"), float("nan")]),  # finite only
    (SEED, [0, 2 ** 63 - 1], [-1, 2 ** 63, 2 ** 64]),
])
def test_contains_takes_the_range_and_nothing_else(bounds, inside, outside):
    assert all(bounds.contains(v) for v in inside), [v for v in inside if not bounds.contains(v)]
    assert not any(bounds.contains(v) for v in outside), [v for v in outside if bounds.contains(v)]


def test_every_seed_inside_the_bounds_seeds_torch_and_numpy():
    import numpy as np

    for seed in (SEED.low, SEED.top, SEED.top + 1):  # one past the top still seeds torch: the bound has room
        torch.manual_seed(seed)
        torch.Generator().manual_seed(seed)
        np.random.SeedSequence([seed, 1, 2]).generate_state(1)


@pytest.mark.parametrize("text, value", [("3", 3), (" 3 ", 3), ("1_000", 1000)])
def test_parse_reads_integers_as_python_does(text, value):
    assert ints(1, 5000).parse(text) == value


@pytest.mark.parametrize("bounds, text, message", [
    (ints(1, 4), "5", "must be an integer from 1 to 4, got '5'"),
    (ints(1, 4), "2.0", "must be an integer from 1 to 4, got '2.0'"),
    (ints(1, 4), "abc", "must be an integer from 1 to 4, got 'abc'"),
    (reals(0, 100, open_low=True), "inf", "must be a number in (0, 100], got 'inf'"),
    (reals(0, 100, open_low=True), "1e400", "must be a number in (0, 100], got '1e400'"),
    (reals(0, 1, open_low=True, open_high=True), "1", "must be a number in (0, 1), got '1'"),
    (SEED, "-1", "must be an integer from 0 to 2**63 - 1, got '-1'"),
])
def test_parse_refuses_in_one_sentence(bounds, text, message):
    with pytest.raises(ValueError) as err:
        bounds.parse(text)
    assert str(err.value) == message


def test_a_bound_of_this_machine_is_read_at_each_check(monkeypatch):
    bounds = Bounds(1, lambda: limits.usable_cpus())
    monkeypatch.setattr(limits, "usable_cpus", lambda: 3)
    assert bounds.contains(3) and not bounds.contains(4) and bounds.describe() == "an integer from 1 to 3"
    monkeypatch.setattr(limits, "usable_cpus", lambda: 5)
    assert bounds.contains(4)


def test_check_fields_names_the_first_field_outside_and_skips_none():
    @dataclasses.dataclass(frozen=True)
    class Config:
        size: int | None = dataclasses.field(default=None, metadata={"bounds": ints(1, 9)})
        sizes: tuple = dataclasses.field(default=(1, 2), metadata={"bounds": ints(1, 9)})
        name: str = "x"

    check_fields(Config())
    with pytest.raises(ValueError, match=r"^size must be an integer from 1 to 9, got 0$"):
        check_fields(Config(size=0))
    with pytest.raises(ValueError, match=r"^sizes must be an integer from 1 to 9, got 10$"):
        check_fields(Config(sizes=(1, 10)))


def test_check_memory_compares_with_the_devices_memory(monkeypatch):
    monkeypatch.setattr(limits, "physical_memory", lambda: 2 ** 30)
    limits.check_memory("a batch", 2 ** 30)
    with pytest.raises(ValueError, match=r"^a batch needs at least 1.5 GiB of memory; this machine has 1.0 GiB$"):
        limits.check_memory("a batch", 3 * 2 ** 29)

    class Properties:  # a GPU of 4 GiB, on a machine of 1 GiB: the GPU's memory counts
        total_memory = 2 ** 32

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties)
    limits.check_memory("a batch", 3 * 2 ** 30, "cuda")
    with pytest.raises(ValueError, match=r"^a batch needs at least 5.0 GiB of memory; cuda has 4.0 GiB$"):
        limits.check_memory("a batch", 5 * 2 ** 30, "cuda")


def test_forward_bytes_counts_every_leaf_output_by_hand():
    def build():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(8 * 4 * 4, 5))

    by_hand = 4 * (8 * 8 * 8 + 8 * 8 * 8 + 8 * 4 * 4 + 8 * 4 * 4 + 5)  # conv, relu, pool, flatten, linear
    assert forward_bytes(build, (1, 3, 8, 8)) == by_hand
    assert forward_bytes(build, (2, 3, 8, 8)) == 2 * by_hand


@pytest.mark.parametrize("arch", ["resnet18", "alexnet"])
@pytest.mark.parametrize("method", METHODS)
def test_forward_bytes_runs_every_network_of_the_toolkit(arch, method):
    """Every architecture and method runs on the meta device (the training's memory check runs them there), and
    keeps more than its input and less than a forward pass could keep at most (every leaf's output times the
    widest layer's, a loose ceiling)."""
    size = 32
    bytes_ = forward_bytes(lambda: build_model(arch, method, 10, size, small_input=True), (1, 3, size, size))
    assert 4 * 3 * size * size < bytes_ < 4 * 4096 * size * size * 64
