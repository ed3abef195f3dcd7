"""Weight scales and input distributions against their closed-form moments (Monte Carlo)."""

import math

import pytest
import torch

from xnorpp_core.binarize import sign
from xnorpp_core.reconstruction.distributions import (INPUT_DISTRIBUTIONS, SMALL_WEIGHT_STD, WEIGHT_SCALES, draw_inputs,
                                       draw_weights, input_moments, weight_std)


@pytest.mark.parametrize("distribution", INPUT_DISTRIBUTIONS)
def test_input_moments_match_monte_carlo(distribution):
    x = draw_inputs(distribution, (2_000_000,), torch.Generator().manual_seed(0)).double()
    mom = input_moments(distribution)
    assert x.mean().item() == pytest.approx(mom["mean"], abs=5e-3)
    assert x.abs().mean().item() == pytest.approx(mom["abs_mean"], rel=5e-3)
    assert (x * sign(x)).mean().item() == pytest.approx(mom["abs_mean"], rel=5e-3)
    assert sign(x).mean().item() == pytest.approx(mom["sign_mean"], abs=3e-3)
    # Student-t(3) has no fourth moment: its sample second moment converges slowly
    assert x.square().mean().item() == pytest.approx(mom["square"], rel=0.1 if distribution == "student_t" else 1e-2)


def test_gaussian_moments_are_the_textbook_values():
    mom = input_moments("gaussian")
    assert mom["abs_mean"] == pytest.approx(math.sqrt(2 / math.pi))
    assert input_moments("student_t")["abs_mean"] == pytest.approx(2 * math.sqrt(3) / math.pi)


def test_weight_scales_are_multiples_of_the_same_draw():
    shape = (3, 8, 4, 3, 3)
    unit = draw_weights("unit", shape, torch.Generator().manual_seed(1))
    he = draw_weights("he", shape, torch.Generator().manual_seed(1))
    small = draw_weights("small", shape, torch.Generator().manual_seed(1))
    torch.testing.assert_close(he, unit * math.sqrt(2 / 36))
    torch.testing.assert_close(small, unit * SMALL_WEIGHT_STD)
    assert weight_std("he", 576) == pytest.approx(0.0589, abs=1e-4)
    big = draw_weights("he", (64, 64, 3, 3), torch.Generator().manual_seed(2))
    assert big.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.02)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="unknown weight scale 'xavier'"):
        weight_std("xavier", 9)
    with pytest.raises(ValueError, match="unknown input distribution 'cauchy'"):
        draw_inputs("cauchy", (3,), torch.Generator())
    with pytest.raises(ValueError, match="unknown input distribution"):
        input_moments("cauchy")
    assert set(WEIGHT_SCALES) == {"unit", "he", "small"}
