"""Analytic expectations for the Table 2 distances, to set beside the measurements.

Model. One output element is ``Y = sum_j x_j w_j`` over its ``n_p`` valid taps
(``n = c k k`` without padding) and ``B = sum_j sign(x_j) sign(w_j)``, with i.i.d.
inputs of moments ``m1 = E x``, ``a1 = E|x| = E[x sign x]``, ``m2 = E x^2`` (see
``distributions.input_moments``) and ``W ~ N(0, s^2)``, so ``E|w| = s sqrt(2/pi)``.
Sums of hundreds of terms are close to Gaussian (central limit theorem): the
model takes ``Y`` given ``B = b`` Gaussian around ``E[Y | B] = (Cov / Var B) b``
with variance ``r* = Var Y - Cov^2 / Var B``, and ``B`` with its exact binomial
law (a sum of signs), so an L1 distance is the mean of a folded normal
(``folded_mean``; where ``B`` is not a plain sum of signs, under the -1 border,
``B`` too is taken Gaussian: ``E|e| = sqrt(2/pi) sqrt(E e^2)``). Every L2 value
is exact in the second moments. All values are leading order in 1/n (the fluctuations of
XNOR-Net's ``alpha`` and ``K`` around their means, and the in-sample gain of
fitting o or h w parameters on o h w outputs, are O(1/n) and ignored).

Inputs with P(x > 0) = 1/2 (``gaussian``, ``relu``, ``laplace``, ``student_t``):
``E[sign x] = 0``, so ``Var B = n_p``, ``Cov(Y, B) = n_p lam`` with
``lam = a1 s sqrt(2/pi)`` and ``E Y^2 = n_p s^2 m2``. The mean squared error of
``g B`` is ``r(g) = E Y^2 - 2 g Cov + g^2 Var B``, minimal at ``g = lam``:

    r(lam) / E Y^2 = 1 - (2/pi) a1^2 / m2                       (best static scale)

For Gaussian inputs ``a1^2 = 2/pi``, ``m2 = 1``: the relative L1 (and RMS) error
of the best scalar-scaled sign dot product is ``sqrt(1 - 4/pi^2) = 0.771``.
Conditional on ``W`` the best per-channel scale is ``a1 alpha_o``, and XNOR-Net's
``alpha_o K`` has ``E K = a1``: **XNOR-Net's analytic scale is, to O(1/n), the
L2-optimal Case 1 scale**, so XNOR / Case 1 -> 1 for every such input
distribution and every weight scale. Padding changes this: with ``padding``
the border outputs have ``n_p < n`` taps and ``K`` (zero-padded box filter)
shrinks by ``n_p / n``. Under ``pad_mode="zero"`` (``Var B = n_p``) the optimum
stays ``lam`` and XNOR-Net under-scales the border; under ``"minus_one"`` the
-1 border adds ``n - n_p`` terms to ``B`` (``Var B = n``) and the optimum
becomes ``lam n_p / n``, which XNOR-Net's ``K`` tracks and a constant Case 1 scale
cannot. Cases 3 and 4 fit the per-position optimum (it is separable in rows
and columns). Direct binarization is ``g = 1``; XNOR-Net without ``K`` is
``g = s sqrt(2/pi)``.

Case 2 (one scale per output element), padding 0. With one training input it
reproduces ``Y`` wherever ``B != 0`` and leaves ``Y`` where ``B = 0``; ``B`` is a
sum of n signs, ``P(B = 0) = C(n, n/2) / 2^n``, and ``Y | B = 0`` has variance
``r* = r(lam)``. Fitted by least squares on N inputs, ``gamma = sum y_i b_i /
sum b_i^2`` (1 when every ``b_i = 0``); on a held-out input its mean squared error is

    (1 - P0^N) r* + n r* E[1 / X; X > 0] + P0^N r(1),     X = sum_i b_i^2,

(exact in the model), ``E[1/X; X > 0] = int_0^inf (phi(t)^N - P0^N) dt`` with
``phi(t) = E exp(-t b^2)``; for large N it is about ``r* (1 + 1/(N - 2))``,
not ``r* (1 + 1/N)``: Case 2 overfits because ``1/X`` is heavy near 0. The
training error is ``r* ((N - 1)/N (1 - P0^N) + P0^N)``.

All-positive inputs (``uniform``), padding 0: ``sign x = +1``, so
``B = T_o = sum_j sign(w_oj)`` is one constant per channel, ``Cov(Y, B) =
m1 n s sqrt(2/pi)``. Case 1 fits each channel's mean ``m1 S_o`` (``S_o = sum_j
w_oj``) exactly, leaving the within-channel variance ``(m2 - m1^2) n s^2``,
except when ``T_o = 0`` (probability P0); XNOR-Net's ``alpha_o K T_o`` is a
fixed multiple of ``T_o`` and also pays ``m1^2 Var(S - sqrt(2/pi) s T) =
m1^2 n s^2 (1 - 2/pi)``: XNOR / Case 1 -> sqrt(1 + 3 (1 - 2/pi)) = 1.45.

Nothing is returned (NaN) where no expectation is derived: Case 2 with padding,
all-positive inputs with padding, and Case 2 held-out distances of an L1 fit
with N > 1 or in the L1 metric for inputs with P(x > 0) = 1/2.
"""

import math

import numpy as np
from scipy import integrate, stats

from .distributions import input_moments, weight_std
from ..layers import conv_output_size

__all__ = ["SQRT_2_OVER_PI", "BEST_SCALE_REL_ERROR_GAUSSIAN", "position_taps", "zero_sum_probability",
           "inverse_sum_of_squares", "folded_mean", "expected_distances"]

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
# sqrt(1 - 4 / pi^2): relative error of the best scalar-scaled sign dot product of Gaussian vectors
BEST_SCALE_REL_ERROR_GAUSSIAN = math.sqrt(1 - 4 / math.pi ** 2)


def position_taps(in_channels, kernel, size, padding):
    """``n_p``: the number of taps of each output position inside the input, (h_out, w_out)."""
    out, _ = conv_output_size(size, kernel, 1, padding)
    start = np.arange(out) - padding  # first input row of each output row
    rows = np.clip(np.minimum(start + kernel, size) - np.maximum(start, 0), 0, None)
    return in_channels * np.outer(rows, rows).astype(float)


def zero_sum_probability(n):
    """``P(b = 0)`` for ``b`` a sum of ``n`` independent uniform signs: ``C(n, n/2) / 2^n`` (0 for odd n)."""
    return float(stats.binom.pmf(n // 2, n, 0.5)) if n % 2 == 0 else 0.0


def inverse_sum_of_squares(n, count):
    """``E[1 / X; X > 0]`` for ``X = sum_{i <= count} b_i^2``, ``b_i`` i.i.d. sums of ``n`` uniform signs.

    ``1 / X = int_0^inf exp(-t X) dt``, so the expectation is
    ``int_0^inf (phi(t)^count - P0^count) dt`` with ``phi(t) = E exp(-t b^2)``.
    """
    k = np.arange(n + 1)
    pmf = stats.binom.pmf(k, n, 0.5)
    b2 = (2.0 * k - n) ** 2
    p0 = zero_sum_probability(n)
    if count == 1:
        return float((pmf[b2 > 0] / b2[b2 > 0]).sum())

    def integrand(u):  # t = u / n keeps the integrand on a unit scale
        return (pmf @ np.exp(-(u / n) * b2)) ** count - p0 ** count

    value, _ = integrate.quad(integrand, 0, np.inf, limit=200)
    return value / n


def folded_mean(shift, residual, taps):
    """``E|shift * b + e|`` for ``b`` a sum of ``taps`` uniform signs and ``e ~ N(0, residual)``.

    The mean of a folded normal, ``sigma sqrt(2/pi) exp(-mu^2 / 2 sigma^2) +
    mu (1 - 2 Phi(-mu / sigma))`` with ``mu = shift * b``, averaged over the
    binomial law of ``b``.
    """
    k = np.arange(taps + 1)
    pmf = stats.binom.pmf(k, taps, 0.5)
    mu = shift * (2.0 * k - taps)
    sigma = math.sqrt(residual)
    if sigma == 0:
        return float(pmf @ np.abs(mu))
    folded = sigma * SQRT_2_OVER_PI * np.exp(-mu * mu / (2 * residual)) + mu * (1 - 2 * stats.norm.cdf(-mu / sigma))
    return float(pmf @ folded)


def expected_distances(inputs, weights, in_channels, kernel, size, padding=0, pad_mode="zero",
                       train_inputs=1, fit_loss="l1"):
    """Expected distances ``{(method, split, metric): value}`` for one protocol cell.

    ``method`` is ``zero`` (predicting 0: the scale mean|Y| or mean Y^2),
    ``direct``, ``xnor``, ``xnor_alpha`` or ``case1`` .. ``case4``; ``split`` is
    ``train`` or ``heldout``; ``metric`` ``l1`` or ``l2``. Entries with no
    derived expectation are absent. See the module docstring for the model.
    """
    mom = input_moments(inputs)
    n = in_channels * kernel * kernel
    s = weight_std(weights, n)
    m1, a1, m2 = mom["mean"], mom["abs_mean"], mom["square"]
    out = {}

    def put(method, values, splits=("train", "heldout")):
        for split in splits:
            for metric, v in values.items():
                out[(method, split, metric)] = float(v)

    if mom["sign_mean"] == 0.0:
        lam = a1 * s * SQRT_2_OVER_PI  # the best static scale, E|x| E|w|
        n_p = position_taps(in_channels, kernel, size, padding)  # (h_out, w_out)
        var_y, cov = n_p * s * s * m2, n_p * lam
        var_b = n_p if pad_mode == "zero" else np.full_like(n_p, n)
        r_star = var_y - cov * cov / var_b  # Var(Y | B), per position

        def both(g):  # distances of g B (g scalar or per position)
            g = np.broadcast_to(np.asarray(g, dtype=float), n_p.shape)
            if pad_mode == "zero":  # B is a sum of n_p signs; Y | B Gaussian around lam B
                cells = np.stack([g.ravel(), r_star.ravel(), n_p.ravel()], 1)
                uniq, count = np.unique(cells, axis=0, return_counts=True)  # a few border types
                l1 = sum(c * folded_mean(gi - lam, ri, int(ni)) for (gi, ri, ni), c in zip(uniq, count)) / count.sum()
            else:  # the -1 border is a per-channel constant: Gaussian approximation of B
                l1 = np.mean(SQRT_2_OVER_PI * np.sqrt(var_y - 2 * g * cov + g * g * var_b))
            return {"l1": l1, "l2": np.mean(var_y - 2 * g * cov + g * g * var_b)}

        put("zero", both(0.0))
        put("direct", both(1.0))
        put("xnor", both(lam * n_p / n))
        put("xnor_alpha", both(s * SQRT_2_OVER_PI))
        put("case1", both(cov.sum() / var_b.sum()))
        for case in ("case3", "case4"):
            put(case, both(cov / var_b))
        if padding == 0:
            rs, p0, big_n = float(r_star.flat[0]), zero_sum_probability(n), train_inputs
            direct_l2 = both(1.0)["l2"]
            if big_n == 1:  # L1 and L2 fits coincide: exact wherever B != 0
                put("case2", {"l1": p0 * SQRT_2_OVER_PI * math.sqrt(rs), "l2": p0 * rs}, ("train",))
            if big_n == 1 or fit_loss == "l2":
                p0n = p0 ** big_n
                held = (1 - p0n) * rs + n * rs * inverse_sum_of_squares(n, big_n) + p0n * direct_l2
                put("case2", {"l2": held}, ("heldout",))
            if fit_loss == "l2":
                put("case2", {"l2": rs * ((big_n - 1) / big_n * (1 - p0 ** big_n) + p0 ** big_n)}, ("train",))
    elif mom["sign_mean"] == 1.0 and padding == 0:
        # B = T_o, a sum of n signs; Y | T_o = t Gaussian around kappa t
        var_y, cov = n * s * s * m2, m1 * n * s * SQRT_2_OVER_PI
        kappa = cov / n
        r0 = var_y - cov * kappa  # Var(Y | T_o): what no multiple of T_o explains
        noise = (m2 - m1 * m1) * n * s * s  # within-channel variance of Y
        p0 = zero_sum_probability(n)

        def both(g):
            return {"l1": folded_mean(g - kappa, r0, n), "l2": var_y - 2 * g * cov + g * g * n}

        def mix(v_fit, v_zero):  # channels with T_o != 0 (per-channel fit) and T_o = 0 (nothing fitted)
            return {"l1": (1 - p0) * SQRT_2_OVER_PI * math.sqrt(v_fit) + p0 * SQRT_2_OVER_PI * math.sqrt(v_zero),
                    "l2": (1 - p0) * v_fit + p0 * v_zero}

        put("zero", both(0.0))
        put("direct", both(1.0))
        put("xnor", both(a1 * s * SQRT_2_OVER_PI))
        put("xnor_alpha", both(s * SQRT_2_OVER_PI))
        for case in ("case1", "case3", "case4"):
            put(case, mix(noise, r0))
        big_n = train_inputs
        if big_n == 1 or fit_loss == "l2":  # the fit is the mean of the N targets over T_o
            put("case2", mix(noise * (big_n - 1) / big_n, r0), ("train",))
            put("case2", mix(noise * (1 + 1 / big_n), r0), ("heldout",))
    return out
