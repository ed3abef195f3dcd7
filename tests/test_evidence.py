"""The evidence beside Adam's fits: solvers against brute force, signed gaps, errors on impossible results."""

import itertools

import numpy as np
import pytest
import torch

from xnorpp_core.reconstruction import evidence as ev
from xnorpp_core.reconstruction import (alternating_search, distance, draw_layers, exact_optimum, fit_adam,
                                        layer_outputs)


def tiny_problem(o, h, w, samples=3, seed=0):
    """``b`` (1, S, o, h, w) of odd integers (sums of signs) and ``y`` Gaussian, in float64."""
    g = torch.Generator().manual_seed(seed)
    b = 2.0 * torch.randint(-2, 2, (1, samples, o, h, w), generator=g, dtype=torch.float64) + 1
    return b, torch.randn(1, samples, o, h, w, generator=g, dtype=torch.float64)


def best_scale(c, y, loss):
    """min over a of sum_j |c_j a - y_j| (L1: the best data ratio) or sum (c_j a - y_j)^2, along the last axis."""
    if loss == "l2":
        a = (c * y).sum(-1, keepdims=True) / (c * c).sum(-1, keepdims=True)
        return ((c * a - y) ** 2).sum(-1)
    nz = c != 0  # where c = 0 the term is |y| whatever a is
    cands = np.where(nz, y / np.where(nz, c, 1.0), 0.0)  # the optimum of a convex piecewise-linear f is at a kink
    return np.abs(c[..., None, :] * cands[..., :, None] - y[..., None, :]).sum(-1).min(-1)


def grid_minimum(b, y, method, loss, grid):
    """Brute force: every free ratio of the non-channel factors on ``grid``, the channel factor exact."""
    b, y = b[0].numpy(), y[0].numpy()  # (S, o, h, w)
    s, o, h, w = b.shape
    free = h * w - 1 if method == "case3" else (h - 1) + (w - 1)  # the first entry of beta (and gamma) is 1
    best = np.inf
    for point in itertools.product(grid, repeat=free):
        if method == "case3":
            spatial = np.array((1.0,) + point).reshape(h, w)
        else:
            spatial = np.outer((1.0,) + point[:h - 1], (1.0,) + point[h - 1:])
        c = (b * spatial).transpose(1, 0, 2, 3).reshape(o, -1)  # (o, S h w)
        best = min(best, best_scale(c, y.transpose(1, 0, 2, 3).reshape(o, -1), loss).sum())
    return best / y.size


@pytest.mark.parametrize("loss", ["l1", "l2"])
@pytest.mark.parametrize("method,size,grid", [("case3", (1, 2), np.linspace(-3, 3, 6001)),
                                              ("case4", (2, 2), np.linspace(-3, 3, 241))])
def test_alternating_search_reaches_a_brute_force_grid(method, size, grid, loss):
    b, y = tiny_problem(2, *size)
    gamma, best, per_start = alternating_search(method, b, y, loss, starts=8, sweeps=200,
                                                generator=torch.Generator().manual_seed(0))
    # the reported loss is the loss of the reported Gamma, computed independently
    pred = b[0].numpy() * gamma[0].numpy()
    err = np.abs(pred - y[0].numpy()) if loss == "l1" else (pred - y[0].numpy()) ** 2
    assert best.item() == pytest.approx(err.mean(), rel=1e-12)
    assert per_start.shape == (8, 1) and per_start.min().item() == best.item()
    # at least as low as every point of the grid (the grid's minimum is above the true optimum)
    assert best.item() <= grid_minimum(b, y, method, loss, grid) * (1 + 1e-9)


@pytest.mark.parametrize("loss", ["l1", "l2"])
@pytest.mark.parametrize("method", ["case1", "case2"])
def test_exact_optimum_against_brute_force(method, loss):
    b, y = tiny_problem(3, 2, 2, samples=4, seed=1)
    _, value = exact_optimum(method, b, y, loss)
    bn, yn = b[0].numpy(), y[0].numpy()  # (S, o, h, w)
    if method == "case1":  # one scale per channel: over the samples and positions
        c, t = bn.transpose(1, 0, 2, 3).reshape(3, -1), yn.transpose(1, 0, 2, 3).reshape(3, -1)
    else:  # one scale per output element: over the samples only
        c, t = bn.reshape(4, -1).T, yn.reshape(4, -1).T
    if loss == "l2" and method == "case1":
        a = [np.linalg.lstsq(c[i:i + 1].T, t[i], rcond=None)[0][0] for i in range(3)]
        expected = sum(((c[i] * a[i] - t[i]) ** 2).sum() for i in range(3)) / yn.size
    else:
        expected = best_scale(c, t, loss).sum() / yn.size
    assert value.item() == pytest.approx(expected, rel=1e-12)


def layers(seed=0, trials=2):
    w, x = draw_layers(trials, 4, 5, 3, 7, torch.Generator().manual_seed(seed))  # 45 signs: B is odd, never 0
    y, b, _, _ = layer_outputs(w, x)
    return b, y


def brute_case1_l1(b, y):
    """Exact Case 1 L1 optimum per trial by numpy: per channel, the best ratio y / b (b is never 0 here)."""
    c = b.double().numpy().reshape(*b.shape[:2], -1)
    t = y.double().numpy().reshape(c.shape)
    return best_scale(c, t, "l1").sum(1) / t[0].size


def test_exact_reference_is_computed_independently_of_adam():
    """Whatever Gamma Adam hands in, the reference stays the brute-force optimum and the gap is signed."""
    b, y = layers()
    assert (b != 0).all()
    exact = brute_case1_l1(b, y)
    gamma, _ = exact_optimum("case1", b.double(), y.double(), "l1")
    for factor, sign in ((1.0, 0), (1.05, 1)):  # the optimum itself, and a worse Gamma
        out = ev.fit_evidence("case1", b, y, "l1", gamma * factor)
        np.testing.assert_allclose(out["reference"], exact, rtol=1e-12)
        adam = distance(b.double() * gamma * factor, y.double(), "l1").numpy()
        np.testing.assert_allclose(out["gap"], (adam - exact) / exact, rtol=1e-9, atol=1e-15)
        assert (np.sign(out["gap"].numpy().round(12)) == sign).all()
        assert out["kind"] == "exact" and out["starts"] == 0


def test_the_gap_of_a_real_fit_is_adam_against_brute_force():
    b, y = layers(seed=3)
    scale, adam, _ = fit_adam("case1", b, y, "l1")
    out = ev.fit_evidence("case1", b, y, "l1", scale.fused())
    exact = brute_case1_l1(b, y)
    np.testing.assert_allclose(out["gap"], (adam.double().numpy() - exact) / exact, atol=1e-6)
    assert (out["gap"] >= -ev.EXACT_TOLERANCE).all() and (out["gap"] < 1e-3).all()


def plain_median_optimum(method, b, y, loss="l1"):
    """A wrong Case 1 solver: the plain median of y / b instead of the weighted one."""
    ratio = (y / b).reshape(*b.shape[:2], -1)  # (T, o, h w); b (T, o, h, w) is never 0 here
    gamma = ratio.median(-1).values[..., None, None].expand_as(b)
    return gamma, distance(b * gamma, y, loss)


def test_a_wrong_exact_solver_fails_loudly(monkeypatch):
    """Nothing beats an exact optimum: with a plain median as the 'optimum', the true optimum raises."""
    b, y = layers(seed=4)
    gamma, _ = exact_optimum("case1", b.double(), y.double(), "l1")
    monkeypatch.setattr(ev, "exact_optimum", lambda m, b, y, loss: plain_median_optimum(m, b, y, loss)
                        if m == "case1" else exact_optimum(m, b, y, loss))
    with pytest.raises(ev.EvidenceError, match="below a proven lower bound"):
        ev.fit_evidence("case1", b, y, "l1", gamma)


def test_a_search_above_adam_gives_a_negative_gap_not_zero(monkeypatch):
    """Cases 3-4: when every start ends above Adam, the gap is negative (a clamp would print 0)."""
    b, y = layers(seed=5)
    real = ev.alternating_search
    monkeypatch.setattr(ev, "alternating_search", lambda *a, **k: (lambda g, v, s: (g, 1.25 * v, 1.25 * s))(
        *real(*a, **k)))
    gamma, best, _ = real("case3", b.double(), y.double(), "l1", 8, 100, torch.Generator().manual_seed(0))
    out = ev.fit_evidence("case3", b, y, "l1", gamma)
    torch.testing.assert_close(out["adam"], best)
    np.testing.assert_allclose(out["gap"], (best - out["reference"]) / out["reference"], rtol=1e-12)
    assert (out["gap"] < -0.1).all()
    assert out["kind"] == "best of 8 independent starts; lower bound from Case 2" and out["starts"] == 8


def test_case2_lower_bound_and_starts_near_best():
    b, y = layers(seed=6)
    b = b.clone()
    b[:, :, :2] = 0  # a few outputs no Gamma can reach: the Case 2 optimum is their mean |y|
    out = ev.fit_evidence("case4", b, y, "l1", torch.ones(2, *y.shape[1:]), starts=8)
    expected = (y.double().abs() * (b == 0)).mean((1, 2, 3))
    np.testing.assert_allclose(out["lower_bound"], expected, rtol=1e-12)
    np.testing.assert_allclose(out["gap_to_bound"], (out["adam"] - expected) / expected, rtol=1e-12)
    assert ((out["starts_near_best"] >= 1) & (out["starts_near_best"] <= 8)).all()


def test_adam_below_the_case2_bound_fails_loudly(monkeypatch):
    b, y = layers(seed=7)
    gamma, _, _ = alternating_search("case3", b.double(), y.double(), "l1", 2, 100)
    monkeypatch.setattr(ev, "exact_optimum", lambda m, b, y, loss: (None, 10 * exact_optimum(m, b, y, loss)[1]
                                                                     + y.abs().mean((1, 2, 3))))
    with pytest.raises(ev.EvidenceError):
        ev.fit_evidence("case3", b, y, "l1", gamma, starts=2)


def test_relative_gap_is_signed_and_floored():
    gap = ev.relative_gap(torch.tensor([1.0, 2.0, 0.5]), torch.tensor([2.0, 2.0, 0.0]), torch.tensor(0.1))
    torch.testing.assert_close(gap, torch.tensor([-0.5, 0.0, 5.0]))
