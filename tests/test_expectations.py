"""The analytic expectations against exact enumeration and Monte Carlo reconstructions."""

import itertools
import math

import numpy as np
import pytest
import torch

from xnorpp_core.reconstruction.distributions import draw_inputs, draw_weights
from xnorpp_core.reconstruction.expectations import (BEST_SCALE_REL_ERROR_GAUSSIAN, expected_distances, folded_mean,
                                      inverse_sum_of_squares, position_taps, zero_sum_probability)
from xnorpp_core.reconstruction import alternating_search, distance, exact_optimum, layer_outputs


def test_position_taps_count_the_kernel_taps_inside_the_input():
    c, k, size, pad = 3, 3, 5, 1
    taps = position_taps(c, k, size, pad)
    for i, j in itertools.product(range(taps.shape[0]), repeat=2):
        inside = sum(0 <= i + r - pad < size and 0 <= j + s - pad < size for r in range(k) for s in range(k))
        assert taps[i, j] == c * inside
    assert (position_taps(c, k, size, 0) == c * k * k).all()


def test_zero_sum_probability_and_inverse_squares_by_enumeration():
    n = 6
    sums = [sum(e) for e in itertools.product((-1, 1), repeat=n)]  # all 2^n sign patterns
    assert zero_sum_probability(n) == pytest.approx(sums.count(0) / len(sums))
    assert zero_sum_probability(7) == 0.0
    for count in (1, 2, 3):
        total = sum(1 / sum(b * b for b in bs) for bs in itertools.product(sums, repeat=count)
                    if any(bs)) / len(sums) ** count
        assert inverse_sum_of_squares(n, count) == pytest.approx(total, rel=1e-6)


def test_folded_mean_by_monte_carlo():
    rng = np.random.default_rng(0)
    b = 2 * rng.binomial(10, 0.5, 2_000_000) - 10
    e = rng.normal(0, 1.5, b.size)
    assert folded_mean(0.3, 1.5 ** 2, 10) == pytest.approx(np.abs(0.3 * b + e).mean(), rel=3e-3)
    assert folded_mean(1.0, 0.0, 64) == pytest.approx(64 * math.comb(64, 32) / 2 ** 64)  # E|B|: 6.358


def _measure(inputs, weights="unit", padding=0, pad_mode="zero", trials=8, o=32, c=32, size=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = draw_weights(weights, (trials, o, c, 3, 3), g)
    x = draw_inputs(inputs, (trials, c, size, size), g)
    y, b, alpha, k = layer_outputs(w, x, padding, pad_mode)
    out = {"zero": distance(0 * y, y), "direct": distance(b, y), "xnor": distance(b * alpha * k, y),
           "xnor_alpha": distance(b * alpha, y)}
    for case in ("case1", "case2", "case3"):
        out[case] = exact_optimum(case, b, y, "l1")[1] if case != "case3" else \
            alternating_search(case, b, y, "l1", starts=1)[1]
    return {m: v.double().mean().item() for m, v in out.items()}


@pytest.mark.parametrize("inputs,weights,padding,pad_mode", [
    ("gaussian", "unit", 0, "zero"), ("gaussian", "small", 0, "zero"), ("gaussian", "unit", 1, "zero"),
    ("gaussian", "unit", 1, "minus_one"), ("relu", "he", 0, "zero"), ("uniform", "unit", 0, "zero"),
    ("laplace", "unit", 1, "minus_one")])
def test_expected_l1_distances_match_measurements(inputs, weights, padding, pad_mode):
    measured = _measure(inputs, weights, padding, pad_mode)
    expected = expected_distances(inputs, weights, 32, 3, 10, padding, pad_mode)
    # the scale of Y varies with the draw of W (per-channel means for relu/uniform): compare relative distances
    scale = measured["zero"] / expected[("zero", "train", "l1")]
    assert scale == pytest.approx(1, abs=0.06)
    for m in ("direct", "xnor", "xnor_alpha", "case1"):
        rel_exp = expected[(m, "train", "l1")] / expected[("zero", "train", "l1")]
        # in-sample fits sit slightly below their population value (o parameters on o h w outputs)
        assert measured[m] / measured["zero"] == pytest.approx(rel_exp, rel=0.03), m
    if padding == 0 and inputs in ("gaussian", "uniform", "relu"):
        assert measured["case2"] == pytest.approx(expected[("case2", "train", "l1")], rel=0.08)


def test_best_static_scale_error_for_gaussian_vectors():
    assert BEST_SCALE_REL_ERROR_GAUSSIAN == pytest.approx(0.7712, abs=1e-4)
    e = expected_distances("gaussian", "unit", 64, 3, 16)
    assert e[("case1", "train", "l1")] / e[("zero", "train", "l1")] == pytest.approx(BEST_SCALE_REL_ERROR_GAUSSIAN,
                                                                                    rel=1e-3)
    assert e[("xnor", "train", "l1")] == pytest.approx(e[("case1", "train", "l1")])  # XNOR = best static scale


def test_uniform_inputs_ratio_tends_to_the_closed_form():
    e = expected_distances("uniform", "unit", 4096, 3, 8)  # large n: no channel with sum sign(w) = 0
    ratio = e[("xnor", "train", "l1")] / e[("case1", "train", "l1")]
    assert ratio == pytest.approx(math.sqrt(1 + 3 * (1 - 2 / math.pi)), rel=2e-3)


@pytest.mark.parametrize("count", [1, 4])
def test_case2_heldout_l2_error_by_monte_carlo(count):
    """Least-squares Case 2 on ``count`` inputs, scored on new ones, against the closed form."""
    g = torch.Generator().manual_seed(3)
    t, o, c, size, held = 12, 16, 16, 8, 4
    w = draw_weights("unit", (t, o, c, 3, 3), g)
    x_train = draw_inputs("gaussian", (t, count, c, size, size), g)
    x_held = draw_inputs("gaussian", (t, held, c, size, size), g)
    y, b, _, _ = layer_outputs(w, x_train)
    gamma, train = exact_optimum("case2", b, y, "l2")
    yh, bh, _, _ = layer_outputs(w, x_held)
    heldout = distance(bh * gamma[:, None], yh, "l2").mean().item()
    e = expected_distances("gaussian", "unit", c, 3, size, train_inputs=count, fit_loss="l2")
    assert heldout == pytest.approx(e[("case2", "heldout", "l2")], rel=0.12)
    assert train.mean().item() == pytest.approx(e[("case2", "train", "l2")], rel=0.12)
    # the closed form is far from the naive 1 + 1/N of a fixed regressor
    r_star = e[("case1", "heldout", "l2")]
    assert e[("case2", "heldout", "l2")] / r_star > 1 + 1.5 / count


def test_no_expectation_where_none_is_derived():
    e = expected_distances("uniform", "unit", 8, 3, 6, padding=1)
    assert e == {}
    e = expected_distances("gaussian", "unit", 8, 3, 6, padding=1, pad_mode="minus_one")
    assert ("case2", "train", "l1") not in e and ("case1", "train", "l1") in e
