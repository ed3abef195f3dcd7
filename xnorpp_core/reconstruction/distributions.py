"""Where the weights ``W`` and inputs ``I`` of a reconstruction trial come from.

Section 4.2 of the paper draws both "from a normal distribution" and says no
more; the protocol study (``protocol.py``) varies both.

Weights, ``W ~ N(0, std^2)`` with ``std`` set by ``WEIGHT_SCALES``:

- ``unit``   std = 1 (the literal reading of the paper);
- ``he``     std = sqrt(2 / fan_in), fan_in = c * k * k (He et al. 2015, what
  ``torch.nn.init.kaiming_normal_`` draws and what Section 5.1.3 uses to train);
- ``small``  std = 0.01 (the classic fixed small Gaussian initialisation).

The three are the same normal draws times a constant, so with the same
generator a ``he`` or ``small`` layer is exactly a rescaled ``unit`` layer.

Inputs, i.i.d. entries from ``INPUT_DISTRIBUTIONS``:

- ``gaussian``   N(0, 1);
- ``relu``       max(0, z), z ~ N(0, 1) (a post-ReLU activation; since
  sign(0) = -1 by Eq. 1, sign(relu(z)) = sign(z));
- ``uniform``    U[0, 1) (all positive: sign(I) = +1 everywhere);
- ``laplace``    Laplace(0, 1), density exp(-|x|) / 2 (heavier tails);
- ``student_t``  Student-t with 3 degrees of freedom (heavy tails, finite variance).

``input_moments`` gives the moments the analytic expectations need:
``mean`` E[x], ``abs_mean`` E|x| (equal to E[x sign(x)]), ``square`` E[x^2] and
``sign_mean`` E[sign(x)] (0 when P(x > 0) = 1/2).
"""

import math

import torch

__all__ = ["WEIGHT_SCALES", "SMALL_WEIGHT_STD", "INPUT_DISTRIBUTIONS", "STUDENT_T_DF", "weight_std",
           "draw_weights", "draw_inputs", "input_moments"]

WEIGHT_SCALES = ("unit", "he", "small")
SMALL_WEIGHT_STD = 0.01
INPUT_DISTRIBUTIONS = ("gaussian", "relu", "uniform", "laplace", "student_t")
STUDENT_T_DF = 3


def weight_std(scale, fan_in):
    """The standard deviation of ``W`` under weight scale ``scale`` for a layer of ``fan_in`` = c k k."""
    if scale == "unit":
        return 1.0
    if scale == "he":
        return math.sqrt(2.0 / fan_in)
    if scale == "small":
        return SMALL_WEIGHT_STD
    raise ValueError(f"unknown weight scale {scale!r}; choose from {WEIGHT_SCALES}")


def draw_weights(scale, shape, generator):
    """``W`` of ``shape`` (..., o, c, k, k): ``std * N(0, 1)`` with ``std = weight_std(scale, c k k)``."""
    fan_in = shape[-3] * shape[-2] * shape[-1]
    std = weight_std(scale, fan_in)
    return torch.randn(shape, generator=generator) * std


def draw_inputs(distribution, shape, generator):
    """Input entries of ``shape``, i.i.d. from ``distribution`` (see the module docstring)."""
    if distribution == "gaussian":
        return torch.randn(shape, generator=generator)
    if distribution == "relu":
        return torch.randn(shape, generator=generator).clamp_min(0.0)
    if distribution == "uniform":
        return torch.rand(shape, generator=generator)
    if distribution == "laplace":
        # difference of two unit exponentials; -log(1 - u) with u in [0, 1) is finite
        e = -torch.log1p(-torch.rand((2, *shape), generator=generator))
        return e[0] - e[1]
    if distribution == "student_t":
        z = torch.randn(shape, generator=generator)
        chi2 = torch.randn((STUDENT_T_DF, *shape), generator=generator).square().sum(0)
        return z / torch.sqrt(chi2 / STUDENT_T_DF)
    raise ValueError(f"unknown input distribution {distribution!r}; choose from {INPUT_DISTRIBUTIONS}")


def input_moments(distribution):
    """``{"mean", "abs_mean", "square", "sign_mean"}`` of one input entry, in closed form."""
    nu = STUDENT_T_DF
    moments = {
        "gaussian": (0.0, math.sqrt(2 / math.pi), 1.0, 0.0),
        "relu": (1 / math.sqrt(2 * math.pi), 1 / math.sqrt(2 * math.pi), 0.5, 0.0),
        "uniform": (0.5, 0.5, 1 / 3, 1.0),
        "laplace": (0.0, 1.0, 2.0, 0.0),
        # E|t_nu| = 2 sqrt(nu) Gamma((nu + 1) / 2) / (sqrt(pi) (nu - 1) Gamma(nu / 2)), E t^2 = nu / (nu - 2)
        "student_t": (0.0, 2 * math.sqrt(nu) * math.gamma((nu + 1) / 2)
                      / (math.sqrt(math.pi) * (nu - 1) * math.gamma(nu / 2)), nu / (nu - 2), 0.0),
    }
    if distribution not in moments:
        raise ValueError(f"unknown input distribution {distribution!r}; choose from {INPUT_DISTRIBUTIONS}")
    return dict(zip(("mean", "abs_mean", "square", "sign_mean"), moments[distribution]))
