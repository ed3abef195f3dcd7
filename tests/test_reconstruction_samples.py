"""Table 2 maths with several inputs per trial: one Gamma fitted to (T, S, o, h, w).

References are independent of the code under test: ``F.conv2d`` per input for
the outputs, and numpy brute force (the L1 optimum of ``sum |c a - y|`` lies at
one of the ratios ``y / c``; the L2 optimum is least squares) for the fits.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xnorpp_core.binarize import sign
from xnorpp_core.reconstruction import (alternating_search, exact_optimum, distance, draw_layers, exact_factor_update,
                                        fit_adam, layer_outputs)

LEARNED = ("case1", "case2", "case3", "case4")


def _problem(trials=2, samples=3, o=4, c=3, k=3, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    w, _ = draw_layers(trials, o, c, k, size, g)
    x = torch.randn(trials, samples, c, size, size, generator=g)
    return w, x


@pytest.mark.parametrize("padding,pad_mode", [(0, "zero"), (1, "zero"), (1, "minus_one")])
def test_layer_outputs_with_samples_match_per_input_convolutions(padding, pad_mode):
    w, x = _problem()
    y, b, alpha, k = layer_outputs(w, x, padding, pad_mode)
    t, s = x.shape[:2]
    assert y.shape == b.shape == (t, s, 4, 6 + 2 * padding - 2, 6 + 2 * padding - 2)
    assert alpha.shape == (t, 1, 4, 1, 1) and k.shape == (t, s, 1, *y.shape[-2:])
    for i in range(t):
        for j in range(s):
            xi = x[i, j:j + 1]
            ref_y = F.conv2d(xi, w[i], padding=padding)
            if pad_mode == "zero":
                ref_b = F.conv2d(sign(xi), sign(w[i]), padding=padding)
            else:
                ref_b = F.conv2d(sign(F.pad(xi, (padding,) * 4)), sign(w[i]))
            ref_k = F.conv2d(xi.abs().mean(1, keepdim=True), torch.full((1, 1, 3, 3), 1 / 9), padding=padding)
            torch.testing.assert_close(y[i, j], ref_y[0], rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(b[i, j], ref_b[0])
            torch.testing.assert_close(k[i, j], ref_k[0])
        torch.testing.assert_close(alpha[i, 0, :, 0, 0], w[i].abs().mean((1, 2, 3)))
    # the single-input path is the S = 1 slice of the sample path
    single = layer_outputs(w, x[:, 0], padding, pad_mode)
    for many, one in zip((y, b, alpha, k), single):
        torch.testing.assert_close(many[:, 0], one)


def _brute_force(b, y, method, loss):
    """Exact optimum of case1 / case2 by numpy: per (trial, channel) or per (trial, element)."""
    b, y = b.double().numpy(), y.double().numpy()  # (T, S, o, h, w)
    t, s, o, h, w = y.shape
    if method == "case1":
        cs = b.transpose(0, 2, 1, 3, 4).reshape(t, o, -1)
        ys = y.transpose(0, 2, 1, 3, 4).reshape(t, o, -1)
    else:
        cs = b.transpose(0, 2, 3, 4, 1).reshape(t, o * h * w, s)
        ys = y.transpose(0, 2, 3, 4, 1).reshape(t, o * h * w, s)
    total = 0.0
    for ti in range(t):
        for c_, y_ in zip(cs[ti], ys[ti]):
            if loss == "l2":
                a = (c_ * y_).sum() / (c_ * c_).sum() if (c_ != 0).any() else 1.0
                total += ((c_ * a - y_) ** 2).sum()
            else:
                cands = [yy / cc for cc, yy in zip(c_, y_) if cc != 0] or [1.0]
                total += min(np.abs(c_ * a - y_).sum() for a in cands)
    return total / y.size


@pytest.mark.parametrize("loss", ["l1", "l2"])
@pytest.mark.parametrize("method", ["case1", "case2"])
def test_exact_optimum_with_samples_matches_brute_force(method, loss):
    w, x = _problem()
    y, b, _, _ = layer_outputs(w, x)
    gamma, best = exact_optimum(method, b, y, loss)
    assert gamma.shape == (2, *y.shape[-3:])
    assert best.mean().item() == pytest.approx(_brute_force(b, y, method, loss), rel=1e-5)
    # the returned loss is the loss of the returned Gamma on every input of the trial
    torch.testing.assert_close(best, distance(b * gamma[:, None], y, loss))


@pytest.mark.parametrize("loss", ["l1", "l2"])
@pytest.mark.parametrize("method", LEARNED)
def test_fits_with_samples_against_the_search(method, loss):
    w, x = _problem(seed=1)
    y, b, _, _ = layer_outputs(w, x)
    scale, adam, _ = fit_adam(method, b, y, loss)
    gamma = scale.fused()
    torch.testing.assert_close(adam, distance(b * gamma[:, None], y, loss))
    _, best, per_start = alternating_search(method, b, y, loss, starts=3, generator=torch.Generator().manual_seed(0))
    assert (best <= per_start).all() and (best == per_start.min(0).values).all()
    assert (adam <= best * (1 + 1e-3)).all()  # Adam within 0.1 % of the best start (or below it)


def test_one_gamma_for_all_samples_is_not_the_per_sample_fit():
    """With S inputs the fit is a compromise: its loss is at least the mean per-input optimum."""
    w, x = _problem(samples=4, seed=2)
    y, b, _, _ = layer_outputs(w, x)
    _, joint = exact_optimum("case2", b, y, "l1")
    separate = torch.stack([exact_optimum("case2", b[:, s], y[:, s], "l1")[1] for s in range(4)], 1)
    assert (joint >= separate.mean(1) - 1e-6).all() and (joint > separate.mean(1) * 1.5).all()


def test_factor_update_reduces_over_the_sample_axis():
    w, x = _problem()
    y, b, _, _ = layer_outputs(w, x)
    beta = exact_factor_update(b, y, 1.0, (2, 1, *y.shape[-2:]), "l2")  # one value per position
    ref = (b * y).sum((1, 2)) / b.square().sum((1, 2))
    torch.testing.assert_close(beta[:, 0], ref)
    with pytest.raises(ValueError, match="need y"):
        exact_factor_update(b[0, 0], y[0, 0], 1.0, (1, 1, 1), "l2")


def test_layer_outputs_rejects_mismatched_shapes():
    w, x = _problem()
    with pytest.raises(ValueError, match=r"need w \(T, o, c, k, k\)"):
        layer_outputs(w, x[:1])
    with pytest.raises(ValueError, match=r"need w \(T, o, c, k, k\)"):
        layer_outputs(w[0], x[0])
