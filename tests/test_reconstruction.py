import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xnorpp_core.layers import BinaryConv2d
from xnorpp_core.reconstruction import (FitConfig, alternating_search, distance, draw_layers, exact_factor_update,
                                        exact_optimum, fit_adam, layer_outputs, weighted_median)
from xnorpp_core.reconstruction.evidence import EXACT_TOLERANCE, fit_evidence
from xnorpp_core.scales import LEARNED_SCALES


def brute_force_weighted_l1(values, weights):
    """min_a sum_j w_j |a - v_j|: the optimum lies at one of the data points."""
    costs = [np.sum(weights * np.abs(a - values)) for a in values]
    return min(costs)


@pytest.mark.parametrize("seed", range(5))
def test_weighted_median_minimises_weighted_l1(seed):
    rng = np.random.default_rng(seed)
    values, weights = rng.normal(size=(4, 9)), rng.uniform(0, 3, size=(4, 9))
    med = weighted_median(torch.from_numpy(values), torch.from_numpy(weights), dim=-1).numpy()[:, 0]
    for r in range(4):
        got = np.sum(weights[r] * np.abs(med[r] - values[r]))
        assert got == pytest.approx(brute_force_weighted_l1(values[r], weights[r]), rel=1e-12)


def small_problem(seed=0, trials=3, o=4, c=5, size=6):
    g = torch.Generator().manual_seed(seed)
    w, x = draw_layers(trials, o, c, 3, size, g)
    return layer_outputs(w.double(), x.double())


def test_layer_outputs_match_per_trial_convolutions():
    g = torch.Generator().manual_seed(0)
    w, x = draw_layers(3, 4, 5, 3, 7, g)
    y, b, alpha, k = layer_outputs(w, x, padding=1, pad_mode="minus_one")
    for t in range(3):
        torch.testing.assert_close(y[t], F.conv2d(x[t:t + 1], w[t], padding=1)[0])
        layer = BinaryConv2d(5, 4, 3, padding=1, method="xnor", pad_mode="minus_one")
        layer.weight.data.copy_(w[t])
        torch.testing.assert_close((b * alpha * k)[t], layer(x[t:t + 1])[0])


def test_distance_is_mean_absolute_or_squared_error_per_trial():
    p, y = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    pn, yn = p.numpy(), y.numpy()
    np.testing.assert_allclose(distance(p, y, "l1").numpy(), np.abs(pn - yn).reshape(3, -1).mean(1), rtol=1e-6)
    np.testing.assert_allclose(distance(p, y, "l2").numpy(), ((pn - yn) ** 2).reshape(3, -1).mean(1), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        distance(p, y, "huber")


def test_case1_exact_l1_optimum_beats_every_candidate():
    y, b, _, _ = small_problem()
    gamma, loss = exact_optimum("case1", b, y, "l1")
    yn, bn = y.numpy(), b.numpy()
    for t in range(y.shape[0]):
        expected = 0.0
        for ch in range(y.shape[1]):
            bv, yv = bn[t, ch].ravel(), yn[t, ch].ravel()
            nz = bv != 0
            expected += brute_force_weighted_l1(yv[nz] / bv[nz], np.abs(bv[nz])) + np.abs(yv[~nz]).sum()
        assert loss[t].item() == pytest.approx(expected / yv.size / y.shape[1], rel=1e-10)


def test_case1_exact_l2_optimum_is_least_squares():
    y, b, _, _ = small_problem()
    gamma, _ = exact_optimum("case1", b, y, "l2")
    bn, yn = b.numpy(), y.numpy()
    for t in range(2):
        for ch in range(2):
            a, *_ = np.linalg.lstsq(bn[t, ch].reshape(-1, 1), yn[t, ch].ravel(), rcond=None)
            assert gamma[t, ch, 0, 0].item() == pytest.approx(a[0], rel=1e-10)


def test_case2_optimum_reproduces_y_wherever_b_is_nonzero():
    y, b, _, _ = small_problem()
    for loss in ("l1", "l2"):
        gamma, value = exact_optimum("case2", b, y, loss)
        residual = (b * gamma - y).abs()
        assert residual[b != 0].max() < 1e-9
        zero = (b == 0).double()
        expected = (y.abs() * zero) if loss == "l1" else (y.square() * zero)
        torch.testing.assert_close(value, expected.mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("method", ["case3", "case4"])
def test_alternating_and_adam_recover_a_planted_factorised_gamma(method):
    y, b, _, _ = small_problem(trials=2)
    g = torch.Generator().manual_seed(1)
    planted = LEARNED_SCALES[method](4, (4, 4), batch=(2,)).double()
    with torch.no_grad():
        for p in planted.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) + 0.5)
        target = b * planted()
    _, als, _ = alternating_search(method, b, target, "l2", starts=2, sweeps=200, generator=g)
    assert als.max() < 1e-6 * target.square().mean()
    _, adam, _ = fit_adam(method, b.float(), target.float(), "l1")
    assert adam.max() < 1e-3 * target.abs().mean()


def test_exact_factor_update_is_a_coordinate_minimum():
    y, b, _, _ = small_problem()
    beta = torch.rand(3, 1, 4, 4, dtype=torch.float64) + 0.5
    alpha = exact_factor_update(b, y, beta, (3, 4, 1, 1), "l1")
    best = distance(b * alpha * beta, y, "l1")
    for eps in (1e-3, -1e-3):
        for ch in range(4):
            moved = alpha.clone()
            moved[:, ch] += eps
            assert (distance(b * moved * beta, y, "l1") >= best - 1e-12).all()


@pytest.mark.parametrize("loss", ["l1", "l2"])
@pytest.mark.parametrize("method", sorted(LEARNED_SCALES))
def test_adam_reaches_its_reference(method, loss):
    """Signed gap to the exact optimum (Cases 1-2, never below it) or to the best of 3 starts (Cases 3-4)."""
    y, b, _, _ = small_problem(trials=3, o=4, c=8, size=8)
    y, b = y.float(), b.float()
    scale, adam, steps = fit_adam(method, b, y, loss)
    out = fit_evidence(method, b, y, loss, scale.fused(), starts=3)
    assert 0 < steps < FitConfig().max_steps
    torch.testing.assert_close(out["adam"], adam.double(), rtol=1e-5, atol=0)
    torch.testing.assert_close(out["gap"], (out["adam"] - out["reference"]) / out["reference"])
    assert out["gap"].max() < 1e-3, (method, loss, out["gap"])
    if method in ("case1", "case2"):
        assert out["gap"].min() >= -EXACT_TOLERANCE
