"""Section 4.2 / Table 2: how closely can a binary layer reproduce a real one?

For each trial we draw ``W`` (o, c, k, k) and ``I`` (c, H, W), compute the real
output ``Y = I * W`` and the fixed binary output ``B = sign(I) (*) sign(W)``
(the binary weights are fixed at ``sign(W)``, as in the paper), and fit each
method's scale so that ``B . scale`` is as close as possible to ``Y``:

- ``direct``: no scale, distance of ``B`` itself.
- ``xnor`` / ``xnor_alpha``: the analytic scales of Eq. 2, nothing fitted.
- ``case1`` .. ``case4``: the learned Gamma of Eq. 4-7, fitted with Adam.

All trials are independent, so they run as one vectorised problem: ``B`` and
``Y`` are computed once per trial as a grouped convolution, and each learned
scale carries a leading trial dimension. The fit only multiplies ``B`` by
Gamma, so no convolution runs inside the Adam loop.

Several inputs per trial. Every function below also takes ``b`` and ``y`` with
an extra sample dimension, (T, S, o, h_out, w_out): one Gamma (T, o, h_out,
w_out) per trial is then fitted to (or scored on) all S inputs of that trial,
the distance averaging over the samples too. This is what a generalisation
study needs (fit on N training inputs, score on held-out ones).

Exact factor updates. The loss is separable in a single factor: with the other
factors fixed, each entry of one factor solves ``min_a sum_j |c_j a - y_j|``,
whose minimiser is the weighted median of ``y_j / c_j`` with weights ``|c_j|``
(for L2, least squares ``sum c y / sum c^2``). Case 1 and Case 2 have a single
factor, so one such update is their exact global optimum (``exact_optimum``).
Cases 3 and 4 are products of factors and not convex: alternating these exact
updates (``alternating_search``) from a start reaches a point that no single
factor can improve, not necessarily the global optimum. ``evidence.py`` turns
these into the evidence reported beside Adam's fits.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..layers import PAD_MODES, binary_conv2d, conv_output_size
from ..limits import ITERATIONS, check_fields, ints, reals
from ..scales import LEARNED_SCALES, make_learned_scale, xnor_input_scale, xnor_weight_scale

__all__ = [
    "RECONSTRUCTION_METHODS",
    "LOSSES",
    "FitConfig",
    "draw_layers",
    "layer_outputs",
    "distance",
    "weighted_median",
    "exact_factor_update",
    "exact_optimum",
    "random_factors",
    "alternating_search",
    "adam_until_converged",
    "fit_adam",
]

RECONSTRUCTION_METHODS = ("direct", "xnor", "xnor_alpha", "case1", "case2", "case3", "case4")
LOSSES = ("l1", "l2")


@dataclass(frozen=True)
class FitConfig:
    """Adam's schedule and the stopping rule for "trained until convergence".

    Adam starts at ``lr``; the learning rate is divided by 10 (torch's
    ``ReduceLROnPlateau``) whenever the summed loss has not improved by a relative
    ``threshold`` for ``patience`` steps; the fit stops once ``lr`` has been
    divided ``decays`` times and plateaued again, or after ``max_steps``.
    """

    lr: float = field(default=0.1, metadata={"bounds": reals(0, 100, open_low=True)})
    patience: int = field(default=50, metadata={"bounds": ITERATIONS})
    threshold: float = field(default=1e-5, metadata={"bounds": reals(0, 1, open_low=True, open_high=True)})
    decays: int = field(default=4, metadata={"bounds": ints(0, 30)})  # 30 drops of 10: no float32 scale moves
    max_steps: int = field(default=20_000, metadata={"bounds": ITERATIONS})

    def __post_init__(self):
        check_fields(self)


def draw_layers(trials, out_channels, in_channels, kernel_size, input_size, generator, device="cpu"):
    """Draw ``W`` (T, o, c, k, k) and ``I`` (T, c, H, W) from N(0, 1) with ``generator``."""
    w = torch.randn(trials, out_channels, in_channels, kernel_size, kernel_size, generator=generator)
    x = torch.randn(trials, in_channels, input_size, input_size, generator=generator)
    return w.to(device), x.to(device)


@torch.no_grad()
def layer_outputs(w, x, padding=0, pad_mode="zero", stride=1):
    """Real output ``Y``, binary output ``B`` and XNOR-Net's ``alpha``, ``K`` for every trial.

    ``w`` is (T, o, c, k, k), ``x`` is (T, c, H, W). Returns ``Y`` and ``B`` as
    (T, o, h_out, w_out), ``alpha`` as (T, o, 1, 1) and ``K`` as (T, 1, h_out, w_out).

    With several inputs per trial, ``x`` (T, S, c, H, W), every input of a trial
    goes through that trial's layer: ``Y`` and ``B`` are (T, S, o, h_out, w_out),
    ``alpha`` (T, 1, o, 1, 1) and ``K`` (T, S, 1, h_out, w_out), so that
    ``B * alpha * K`` is XNOR-Net's output for every input. ``stride`` is the
    convolution's (1 in Table 2; a trained network's layers may have 2).
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"unknown pad_mode {pad_mode!r}; choose from {PAD_MODES}")
    if x.dim() not in (4, 5) or w.dim() != 5 or x.shape[0] != w.shape[0]:
        raise ValueError(f"need w (T, o, c, k, k) and x (T, [S,] c, H, W), got {tuple(w.shape)} "
                         f"and {tuple(x.shape)}")
    t, o, c, *k = w.shape
    samples = x.shape[1] if x.dim() == 5 else None
    s = samples or 1
    size = conv_output_size(x.shape[-2:], tuple(k), stride, padding)
    xs = x.reshape(t, s, c, *x.shape[-2:]).transpose(0, 1)  # (S, T, c, H, W)
    xg = xs.reshape(s, t * c, *x.shape[-2:])  # samples as the batch, trials as groups
    wg = w.reshape(t * o, c, *k)
    y = F.conv2d(xg, wg, stride=stride, padding=padding, groups=t).reshape(s, t, o, *size).transpose(0, 1)
    b = binary_conv2d(xg, wg, stride=stride, padding=padding, groups=t, pad_mode=pad_mode)
    b = b.reshape(s, t, o, *size).transpose(0, 1)  # (T, S, o, h_out, w_out)
    alpha = xnor_weight_scale(wg).reshape(t, 1, o, 1, 1)
    kk = xnor_input_scale(x.reshape(t * s, c, *x.shape[-2:]), tuple(k), stride, padding).reshape(t, s, 1, *size)
    if samples is None:
        return y[:, 0], b[:, 0], alpha[:, 0], kk[:, 0]
    return y.contiguous(), b.contiguous(), alpha, kk


def _per_sample(factor, like):
    """``factor`` (T, ...) with a sample axis inserted when ``like`` is (T, S, o, h, w)."""
    return factor.unsqueeze(1) if like.dim() == 5 else factor


def distance(pred, y, loss="l1"):
    """Per-trial distance: mean absolute (``l1``) or squared (``l2``) error per output element."""
    err = pred - y
    dims = tuple(range(1, err.dim()))
    if loss == "l1":
        return err.abs().mean(dim=dims)
    if loss == "l2":
        return err.square().mean(dim=dims)
    raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")


def weighted_median(values, weights, dim=-1):
    """A minimiser of ``sum_j weights_j |a - values_j|`` along ``dim`` (keepdim).

    The smallest value whose cumulative weight reaches half the total weight.
    On the CPU the values are ordered by numpy's ``argsort`` (several times
    faster than ``torch.sort`` along a short last axis).
    """
    if values.device.type == "cpu" and not values.requires_grad:
        order = torch.from_numpy(np.argsort(values.numpy(), axis=dim))
        v = values.gather(dim, order)
    else:
        v, order = values.sort(dim=dim)
    cw = weights.gather(dim, order).cumsum(dim)
    half = cw.narrow(dim, cw.shape[dim] - 1, 1) / 2
    pos = (cw < half).sum(dim, keepdim=True).clamp(max=v.shape[dim] - 1)
    return v.gather(dim, pos)


def exact_factor_update(b, y, others, shape, loss="l1"):
    """The exact minimiser of the loss over one factor of Gamma, the others fixed.

    ``b`` and ``y`` are (T, o, h, w) or (T, S, o, h, w); ``others`` is the product
    of the other factors (broadcastable to ``b``, 1 if none); ``shape`` is the
    factor's shape (T, o|1, h|1, w|1). A sample axis is always reduced over.
    """
    if y.dim() not in (4, 5):
        raise ValueError(f"need y (T, [S,] o, h, w), got {tuple(y.shape)}")
    c = (b * others).expand_as(y)
    extra = y.dim() - 4  # 1 with a sample axis
    reduce = list(range(1, 1 + extra)) + [d + extra for d in range(1, 4) if shape[d] == 1]
    keep = [d for d in range(y.dim()) if d not in reduce]
    perm = keep + reduce
    cp = c.permute(perm).reshape(*[c.shape[d] for d in keep], -1)
    yp = y.permute(perm).reshape(cp.shape)
    if loss == "l2":
        num, den = (cp * yp).sum(-1), cp.square().sum(-1)
        best = torch.where(den > 0, num / den.clamp_min(1e-30), torch.ones_like(num))
    elif loss == "l1":
        nz = cp != 0  # where c = 0 the entry does not depend on the factor
        ratio = torch.where(nz, yp / torch.where(nz, cp, torch.ones_like(cp)), torch.zeros_like(cp))
        best = weighted_median(ratio, cp.abs(), dim=-1).squeeze(-1)
        best = torch.where(nz.any(-1), best, torch.ones_like(best))
    else:
        raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
    return best.reshape(shape)


def _factor_shapes(method, t, o, size):
    h, w = size
    return {
        "case1": [(t, o, 1, 1)],
        "case2": [(t, o, h, w)],
        "case3": [(t, o, 1, 1), (t, 1, h, w)],
        "case4": [(t, o, 1, 1), (t, 1, h, 1), (t, 1, 1, w)],
    }[method]


@torch.no_grad()
def exact_optimum(method, b, y, loss="l1"):
    """The exact global optimum of a one-factor Gamma (``case1``, ``case2``): one exact factor update.

    Returns ``(gamma (T, o, h, w), loss (T,))``; ``b`` and ``y`` may carry a
    sample axis, (T, S, o, h, w), fitting one Gamma per trial to all S inputs.
    """
    if method not in ("case1", "case2"):
        raise ValueError(f"the exact optimum is known for case1 and case2 only, not {method!r}")
    t, (o, h, w) = y.shape[0], y.shape[-3:]
    (shape,) = _factor_shapes(method, t, o, (h, w))
    gamma = exact_factor_update(b, y, 1.0, shape, loss).expand(t, o, h, w)
    return gamma, distance(b * _per_sample(gamma, b), y, loss)


def random_factors(method, t, o, size, generator=None, dtype=torch.float64, device="cpu"):
    """One random start of ``method``'s factors: independent log-normal entries, exp(N(0, 0.5^2))."""
    return [torch.exp(0.5 * torch.randn(s, generator=generator, dtype=torch.float64)).to(dtype=dtype, device=device)
            for s in _factor_shapes(method, t, o, size)]


@torch.no_grad()
def alternating_search(method, b, y, loss="l1", starts=8, sweeps=100, generator=None):
    """Alternating exact factor updates from ``starts`` independent random starts; the best per trial.

    From each start (``random_factors``) the factors are updated in turn, each
    update exact given the others; a trial stops once a sweep improves its loss
    by at most a relative 1e-8 (each update can only lower it), and every
    trial stops after ``sweeps`` sweeps. Each start ends
    where no single factor can improve the loss: a point of the search, not a
    proven optimum of the non-convex Cases 3 and 4. A one-factor method needs
    one update (its result is exact) and ignores ``starts``.

    Returns ``(gamma (T, o, h, w), loss (T,), start_losses (N, T))``: the
    Gamma of the lowest loss per trial, that loss, and the loss every start
    reached (N = ``starts``, or 1 for a one-factor method). ``b`` and ``y``
    may carry a sample axis, (T, S, o, h, w).
    """
    if method not in LEARNED_SCALES:
        raise ValueError(f"no learned Gamma for method {method!r}")
    if starts < 1 or sweeps < 1:
        raise ValueError(f"need starts >= 1 and sweeps >= 1, got {starts} and {sweeps}")
    t, (o, h, w) = y.shape[0], y.shape[-3:]
    shapes = _factor_shapes(method, t, o, (h, w))
    if len(shapes) == 1:
        gamma, value = exact_optimum(method, b, y, loss)
        return gamma, value, value[None]
    best_gamma, best_loss, losses = None, None, []
    for _ in range(starts):
        factors = random_factors(method, t, o, (h, w), generator, y.dtype, y.device)
        current = torch.full((t,), math.inf, dtype=y.dtype, device=y.device)
        active = torch.arange(t, device=y.device)  # the trials still improving
        for _ in range(sweeps):
            ba, ya = (b, y) if len(active) == t else (b[active], y[active])
            fa = [f[active] for f in factors]
            for i, s in enumerate(shapes):
                others = _per_sample(math.prod([f for j, f in enumerate(fa) if j != i]), ba)
                fa[i] = exact_factor_update(ba, ya, others, (len(active), *s[1:]), loss)
            new = distance(ba * _per_sample(math.prod(fa), ba), ya, loss)
            for f, f_new in zip(factors, fa):
                f[active] = f_new
            stalled = current[active] - new <= 1e-8 * new
            current[active] = new
            active = active[~stalled]
            if len(active) == 0:
                break
        gamma = math.prod(factors).expand(t, o, h, w)
        losses.append(current)
        if best_loss is None:
            best_gamma, best_loss = gamma.clone(), current
        else:
            better = current < best_loss
            best_gamma = torch.where(better[:, None, None, None], gamma, best_gamma)
            best_loss = torch.minimum(current, best_loss)
    return best_gamma, best_loss, torch.stack(losses)


def adam_until_converged(parameters, objective, config=FitConfig(), on_step=None):
    """Minimise ``objective()`` (a per-trial loss tensor) over ``parameters`` with Adam.

    The stopping rule of ``FitConfig``: the summed loss drives torch's
    ``ReduceLROnPlateau`` (factor 0.1); once the learning rate has been divided
    ``config.decays`` times and plateaus again, the fit has converged. Returns
    the number of Adam steps. ``on_step`` is called after every step.
    """
    opt = torch.optim.Adam(parameters, lr=config.lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.1, patience=config.patience, threshold=config.threshold)
    min_lr = config.lr * 10.0 ** (-config.decays)
    step = 0
    while step < config.max_steps:
        opt.zero_grad(set_to_none=True)
        total = objective().sum()
        total.backward()
        opt.step()
        step += 1
        if on_step is not None:
            on_step()
        lr_before = opt.param_groups[0]["lr"]
        plateau.step(total.item())
        if lr_before <= min_lr * 1.0001 and opt.param_groups[0]["lr"] < lr_before:
            break  # plateaued at the smallest learning rate: converged
    return step


def fit_adam(method, b, y, loss="l1", config=FitConfig(), on_step=None):
    """Fit ``method``'s learned Gamma (Eq. 4-7) to ``y`` with Adam, for all trials at once.

    The summed per-trial loss is minimised (trials share no parameters, and
    Adam's update is element-wise, so the trials are independent fits that
    share one learning-rate schedule). Returns ``(scale, loss (T,), steps)``:
    the fitted ``LearnedScale`` (its ``fused()`` is Gamma), the final per-trial
    loss and the number of Adam steps. ``b`` and ``y`` may carry a sample axis,
    (T, S, o, h, w): one Gamma per trial is then fitted to all S inputs.
    """
    t, (o, h, w) = y.shape[0], y.shape[-3:]
    scale = make_learned_scale(method, o, (h, w), batch=(t,)).to(y.device)
    steps = adam_until_converged(scale.parameters(), lambda: distance(b * _per_sample(scale(), b), y, loss),
                                 config, on_step)
    with torch.no_grad():
        return scale, distance(b * _per_sample(scale(), b), y, loss), steps
