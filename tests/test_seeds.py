"""Mean ± std over seeds and the paired t interval, against hand-computed values."""

import math

import numpy as np
import pytest

from xnorpp_core.report import seeds

# Student's t 0.975 quantiles (printed tables): 1 and 2 degrees of freedom.
T_975 = {1: 12.706204736174705, 2: 4.302652729749464}


def test_spread_by_hand():
    s = seeds.spread([1.0, 2.0, 4.0])  # mean 7/3; deviations -4/3 -1/3 5/3; sum of squares 42/9; /2
    assert (s.n, s.mean, s.std) == (3, pytest.approx(7 / 3), pytest.approx(math.sqrt(42 / 18)))
    assert s.text() == "2.3 ± 1.5" and seeds.spread([5.0]).text() == "5.0" and seeds.spread([]).text() == "—"


def test_paired_interval_by_hand():
    # common seeds 0, 1, 2 (seed 7 has no partner): differences 1, 2, 3 -> mean 2, std 1, half = t * 1 / sqrt(3)
    d = seeds.paired({0: 11.0, 1: 12.0, 2: 13.0, 7: 50.0}, {0: 10.0, 1: 10.0, 2: 10.0, 9: 0.0})
    half = T_975[2] / math.sqrt(3)
    assert (d.n, d.mean) == (3, 2.0)
    assert (d.low, d.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert d.text() == f"+2.0 [{2 - half:+.1f}, {2 + half:+.1f}]"
    assert seeds.ordering(d, "embedded digits") == "not separable on the embedded digits"  # 2 - 2.48 < 0
    assert seeds.ordering(d, "Fashion-MNIST") == "not separable on Fashion-MNIST"  # a name takes no article


@pytest.mark.parametrize("diffs, expected", [((1.0, 1.1), "above XNOR-Net"), ((-1.0, -1.1), "below XNOR-Net"),
                                             ((1.0, -1.0), "not separable on the embedded digits"),
                                             ((5.0, 0.0), "not separable on the embedded digits")])
def test_ordering_only_where_the_interval_excludes_zero(diffs, expected):
    d = seeds.paired(dict(enumerate(diffs)), dict(enumerate(np.zeros(len(diffs)))))
    half = T_975[1] * np.std(diffs, ddof=1) / math.sqrt(2)
    assert (d.low > 0 or d.high < 0) == (abs(np.mean(diffs)) > half)
    assert seeds.ordering(d, "embedded digits") == expected


def test_one_seed_states_no_ordering():
    d = seeds.paired({0: 3.0}, {0: 1.0})
    assert d.text() == "+2.0 (one seed)" and seeds.ordering(d, "ImageNet") == "one seed: no interval"
    assert seeds.ordering(seeds.paired({}, {}), "ImageNet") == "—"
