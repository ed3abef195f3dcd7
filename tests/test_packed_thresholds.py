"""Threshold folding of the packed network at the values where a rounding or an ordering bites.

The thresholds that replace BN -> sign (``count_thresholds``, ``float_thresholds``) and their forms for the
kernels (``_popcount_bounds`` on the popcount, ``_count_bounds`` on the count) are checked at exact ties: a
count or a float landing exactly on the threshold, where ``sign(0) = -1`` decides, with both signs of Gamma and
of the BN weight, odd and even counts (a count has the parity of its number of bits) and counts above 2048 (where
a float16 stops holding every integer). The float keys the float bisection runs on are checked at -0.0, +0.0,
the subnormals and the infinities.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn

from xnorpp_core.packed.network import (_bisect, _bound_tensors, _count_bounds, _float_key, _key_float,
                                        _popcount_bounds, count_thresholds, float_thresholds)

F32 = np.finfo(np.float32)
TINY = float(np.nextafter(np.float32(0), np.float32(1)))  # the smallest positive subnormal
INF = float("inf")


def _bn(weight, mean, bias=0.0):
    """One-channel eval BN with ``sqrt(var + eps) = 1``: ``weight (x - mean) + bias``, exactly 0 at x = mean."""
    bn = nn.BatchNorm2d(1).eval()
    with torch.no_grad():
        bn.weight.fill_(weight)
        bn.bias.fill_(bias)
        bn.running_mean.fill_(mean)
        bn.running_var.fill_(1.0 - bn.eps)
    return bn


def _count_bit(kind, t, count):
    return {0: False, 1: True, 2: count >= t, 3: count <= t}[kind]


# ---------------------------------------------------------------- integer thresholds at exact ties

TIES = [(n_bits, tie) for n_bits, tie in ((9, 3), (27, -5), (8, 2), (64, -6), (4599, 4097), (4608, -4094))]


@pytest.mark.parametrize("n_bits,tie", TIES, ids=[f"n{n}-tie{t}" for n, t in TIES])
@pytest.mark.parametrize("gamma", [0.5, -0.5])
@pytest.mark.parametrize("weight", [1.0, -2.0])
def test_count_thresholds_at_an_exact_tie(n_bits, tie, gamma, weight):
    """BN(gamma count) is exactly 0 at ``count = tie`` (a count of the parity of ``n_bits``): there the bit is 0
    (``sign(0) = -1``), so the threshold is the next count on the side where the output is positive."""
    bn = _bn(weight, gamma * tie)
    kind, t = count_thresholds(lambda c: c * gamma, [bn], n_bits, (1, 1, 1))
    rising = (gamma > 0) == (weight > 0)  # the output grows with the count
    assert (kind.item(), t.item()) == ((2, tie + 1) if rising else (3, tie - 1))
    # the kernels' forms: every reachable count (n_bits - 2 v) around the tie gives the same bit
    corr = torch.zeros(1, 1, dtype=torch.int32)
    bound, flip = _popcount_bounds(kind[..., 0], t[..., 0], n_bits, corr, 32)
    cbound, cflip = _count_bounds(kind[..., 0], t[..., 0], 32)
    for count in range(tie - 4, tie + 5, 2):
        v = (n_bits - count) // 2
        expected = count > tie if rising else count < tie
        assert _count_bit(kind.item(), t.item(), count) == expected, count
        assert bool((v <= bound[0, 0].item()) ^ bool(flip[0, 0].item() & 1)) == expected, ("popcount", count)
        assert bool((count >= cbound[0, 0].item()) ^ bool(cflip[0, 0].item() & 1)) == expected, ("count", count)


@pytest.mark.parametrize("gamma", [0.5, -0.5])
def test_count_thresholds_of_a_relu_tie_at_zero(gamma):
    """ReLU then BN with its mean at 0: every count on ReLU's flat side lands exactly on 0 and gives bit 0."""
    kind, t = count_thresholds(lambda c: c * gamma, [nn.ReLU(), _bn(1.0, 0.0)], 10, (1, 1, 1))
    assert (kind.item(), t.item()) == ((2, 1) if gamma > 0 else (3, -1))
    kind, t = count_thresholds(lambda c: c * gamma, [nn.ReLU(), _bn(-1.0, 0.0)], 10, (1, 1, 1))
    assert kind.item() == 0  # weight (relu - 0) <= 0 everywhere: never positive


@pytest.mark.parametrize("n_bits", [8, 9])
def test_popcount_bounds_at_every_threshold_and_border_correction(n_bits):
    """``bit = (v <= bound) xor flip`` on the popcount ``v`` (``count = n_bits + corr - 2 v``) for every kind,
    every threshold from below the least count to above the largest (``n_bits + corr + 1`` included: a bound
    rounded towards zero instead of down turns it on at ``v = 0``) and every border correction."""
    t = torch.arange(-n_bits - 3, n_bits + 4)
    corr = torch.arange(-3, 4)
    t, corr, kind = (a.flatten() for a in torch.meshgrid(t, corr, torch.arange(4), indexing="ij"))
    bound, flip = _popcount_bounds(kind[:, None], t[:, None], n_bits, corr[None].to(torch.int32), len(t) + 32 -
                                   len(t) % 32)
    flips = ((flip.long()[..., None] >> torch.arange(32)) & 1).flatten(1).bool()[0, :len(t)]
    for v in range(n_bits + 1):
        count = n_bits + corr - 2 * v
        expected = torch.where(kind == 2, count >= t, torch.where(kind == 3, count <= t, kind == 1))
        got = (v <= bound[0, :len(t)].long()) ^ flips
        assert torch.equal(got, expected), v


@pytest.mark.parametrize("n_bits", [26, 27])
def test_count_bounds_follow_the_count_thresholds(n_bits):
    """``bit = (count >= bound) xor flip``, the int8 tiles' form, against the count predicate for every count of
    both parities, every kind, thresholds at and beyond both ends."""
    g = torch.Generator().manual_seed(3)
    o, p = 40, 3
    kind = torch.randint(0, 4, (o, p), generator=g)
    t = torch.randint(-n_bits - 2, n_bits + 3, (o, p), generator=g)
    bound, flip = _count_bounds(kind, t, 64)
    flips = ((flip.long()[..., None] >> torch.arange(32)) & 1).flatten(1).bool()  # (rows, 64)
    for count in range(-n_bits, n_bits + 1):
        expected = torch.where(kind.t() == 2, count >= t.t(), torch.where(kind.t() == 3, count <= t.t(),
                                                                          kind.t() == 1))
        got = (count >= bound.long()) ^ flips
        assert torch.equal(got[:, :o], expected), count
        assert not got[:, o:].any()  # padding channels stay 0


def test_the_flip_mask_of_channel_31_is_the_sign_bit():
    """Channel 32 k + 31's flip is bit 31 of word k, an int32 below zero; the others are not touched."""
    flip = torch.zeros(1, 40, dtype=torch.bool)
    flip[0, 31] = flip[0, 32] = True
    bound, words = _bound_tensors(torch.zeros(1, 40, dtype=torch.int64), flip, 64, -1)
    assert words.dtype == torch.int32 and words.tolist() == [[-(1 << 31), 1]]
    assert bound.tolist()[0][40:] == [-1] * 24


def test_bisection_finds_each_transition_to_the_step():
    """The monotone bit's transition on the integers, rising and falling, at both ends and constant."""
    lo = torch.full((6,), -50, dtype=torch.int64)
    hi = torch.full((6,), 50, dtype=torch.int64)
    edge = torch.tensor([-49, 50, 0, -50, 7, 0])
    rising = torch.tensor([True, True, True, False, False, True])

    def bit(c):
        return torch.where(rising, c >= edge, c <= edge)

    kind, lo_, hi_ = _bisect(bit, lo, hi, lambda m: m)
    assert torch.equal(hi_ - lo_, torch.ones(6, dtype=torch.int64))
    assert kind.tolist() == [2, 2, 2, 3, 3, 2]
    assert torch.equal(torch.where(kind == 2, hi_, lo_), edge)


# ---------------------------------------------------------------- float keys and float thresholds

ORDERED = [-INF, -float(F32.max), -1.0, -float(F32.tiny), -float(np.nextafter(F32.tiny, 0, dtype=np.float32)),
           -2 * TINY, -TINY, -0.0, 0.0, TINY, 2 * TINY, float(F32.tiny), 1.0, float(F32.max), INF]


def test_float_keys_order_every_float_and_step_by_one():
    x = torch.tensor(ORDERED, dtype=torch.float32)
    keys = _float_key(x)
    assert (keys[1:] > keys[:-1]).all()  # strictly increasing, -0.0 below +0.0
    neg_tiny, neg_zero, zero, tiny = (keys[ORDERED.index(TINY) + i].item() for i in (-3, -2, -1, 0))
    assert (neg_tiny, neg_zero, zero, tiny) == (-2, -1, 0, 1)  # -0.0 one step below +0.0, the subnormals beside
    # neighbours: the next float up has the next key (nextafter skips from -0.0 over +0.0)
    finite = x[(x.isfinite()) & (x != 0)]
    up = torch.nextafter(finite, torch.tensor(INF))
    assert torch.equal(_float_key(up), _float_key(finite) + 1)


def test_float_keys_round_trip_exactly():
    g = torch.Generator().manual_seed(4)
    bits = torch.randint(-(1 << 31), 1 << 31, (200_000,), generator=g, dtype=torch.int64).to(torch.int32)
    x = torch.cat([bits.view(torch.float32), torch.tensor(ORDERED, dtype=torch.float32)])
    x = x[~x.isnan()]
    back = _key_float(_float_key(x))
    assert torch.equal(back.view(torch.int32), x.view(torch.int32))  # bit for bit: -0.0 stays -0.0
    keys = _float_key(x)
    order = torch.argsort(keys)
    assert (x[order][1:] >= x[order][:-1]).all()  # the keys order the floats as their values do


@pytest.mark.parametrize("weight", [1.0, -1.0])
@pytest.mark.parametrize("mean", [0.0, 1.5, -3.0, float(F32.tiny)])
def test_float_thresholds_at_an_exact_tie(weight, mean):
    """BN is exactly 0 at x = mean: there the bit is 0, and just past it on the positive side 1; at mean 0 the
    two zeros both give 0."""
    s, t = float_thresholds([_bn(weight, mean)], (1, 1, 1))
    m = torch.tensor(mean, dtype=torch.float32)
    probes = torch.stack([m, torch.nextafter(m, torch.tensor(INF)), torch.nextafter(m, torch.tensor(-INF)),
                          torch.tensor(0.0), torch.tensor(-0.0), torch.tensor(TINY), torch.tensor(-TINY)])
    expected = probes > m if weight > 0 else probes < m
    assert torch.equal(s * probes > t, expected)
    assert s.item() == (1.0 if weight > 0 else -1.0) and t.item() == (mean if weight > 0 else -mean)


def test_float_thresholds_of_a_sign_alone_split_the_two_zeros_on_the_same_side():
    s, t = float_thresholds([], (1, 1, 1))  # bit = x > 0
    probes = torch.tensor([-TINY, -0.0, 0.0, TINY, INF, -INF])
    assert (s * probes > t).tolist() == [False, False, False, True, True, False]
