"""How close is Adam's fit of a learned Gamma to the best one? Evidence that checks itself.

For one learned case, fitted by Adam to ``B . Gamma ~ Y`` (``fit.fit_adam``),
three numbers per trial, all in the fit's own loss and computed in float64
from the Gammas (never from Adam's reported loss):

- ``reference``: for Cases 1 and 2 (one factor) the **exact** global optimum
  (``fit.exact_optimum``: weighted median for L1, least squares for L2); for
  Cases 3 and 4 (products of factors, not convex) the **best of N independent
  starts** of alternating exact factor updates (``fit.alternating_search``,
  random starts, none from Adam). Only the first is a proof.
- ``gap = (adam - reference) / reference``, signed and never clamped. For
  Cases 1-2 a gap below ``-EXACT_TOLERANCE`` is impossible (nothing beats an
  exact optimum): it means a solver is wrong and raises ``EvidenceError``.
  For Cases 3-4 a negative gap is a finding: Adam beat every start.
- ``lower_bound``: a proven lower bound of the case's loss, the exact optimum
  for Cases 1-2 and, by nesting, the exact Case 2 optimum on the same input for
  Cases 3-4 (every ``alpha (x) beta`` or ``alpha (x) beta (x) gamma`` is one
  Case 2 Gamma). ``gap_to_bound = (adam - lower_bound) / lower_bound``; below
  ``-EXACT_TOLERANCE`` (for Adam or the search) raises ``EvidenceError``.

For Cases 3-4 also ``starts_near_best``: how many of the N starts ended within
a relative ``NEAR_BEST`` of the best one (N of N: the starts agree; 1 of N: the
best is an outlier and more starts may go lower still).

Relative gaps divide by ``max(reference, floor)``: a ``floor`` (per trial) keeps
them meaningful where the optimum reproduces Y almost exactly (Case 2 does
wherever ``B`` is never 0); the studies use ``GAP_FLOOR`` times the loss of
Gamma = 0 (mean|Y| for L1, mean Y^2 for L2).
"""

import zlib

import torch

from .fit import alternating_search, distance, exact_optimum

__all__ = ["EXACT_TOLERANCE", "NEAR_BEST", "STARTS", "GAP_FLOOR", "EvidenceError", "evidence_kind", "relative_gap",
           "fit_evidence"]

EXACT_TOLERANCE = 1e-6  # a relative gap below -this to a proven bound is a bug, not a finding
NEAR_BEST = 1e-4  # a start "reached the best" when within this relative distance of it
STARTS = 8  # independent starts of the alternating search for Cases 3 and 4
GAP_FLOOR = 1e-3  # relative gaps divide by at least this fraction of the loss of Gamma = 0


class EvidenceError(RuntimeError):
    """A fit or a search went below a proven lower bound: one of the solvers is wrong."""


def evidence_kind(method, starts=STARTS):
    """What the reference of ``method`` is, in words: ``exact``, or ``best of N independent starts; ...``."""
    if method in ("case1", "case2"):
        return "exact"
    return f"best of {starts} independent starts; lower bound from Case 2"


def relative_gap(value, reference, floor=0.0):
    """``(value - reference) / max(reference, floor)``, signed, per trial."""
    return (value - reference) / torch.maximum(reference, torch.as_tensor(floor, dtype=reference.dtype))


def _check(gap, what, method):
    worst = gap.min().item()
    if worst < -EXACT_TOLERANCE:
        raise EvidenceError(f"{method}: {what} is {-worst:.3g} (relative) below a proven lower bound; "
                            "a solver is wrong")


@torch.no_grad()
def fit_evidence(method, b, y, loss, adam_gamma, starts=STARTS, sweeps=100, seed=0, floor=None):
    """The evidence on Adam's Gamma ``adam_gamma`` (T, o, h, w) for ``method`` (see the module docstring).

    ``b`` and ``y`` are (T, o, h, w) or (T, S, o, h, w), as given to Adam. The
    random starts come from a generator seeded with ``seed`` and the method's
    name. ``floor`` (per trial) defaults to ``GAP_FLOOR`` times the loss of
    Gamma = 0. Returns a dict of per-trial float64 tensors (T,): ``adam``,
    ``reference``, ``gap``, ``lower_bound``, ``gap_to_bound``,
    ``starts_near_best`` (N for Cases 1-2, whose reference is exact), and
    ``kind`` (``evidence_kind``) and ``starts`` (N, 0 for Cases 1-2).
    Raises ``EvidenceError`` when anything goes below a proven lower bound.
    """
    b, y = b.double(), y.double()
    gamma = adam_gamma.double()
    adam = distance(b * (gamma.unsqueeze(1) if y.dim() == 5 else gamma), y, loss)
    if floor is None:
        floor = GAP_FLOOR * distance(torch.zeros_like(y), y, loss)
    bound = exact_optimum("case2", b, y, loss)[1]
    if method in ("case1", "case2"):
        reference = bound if method == "case2" else exact_optimum(method, b, y, loss)[1]
        lower_bound, near, n = reference, torch.zeros_like(reference), 0
    else:
        generator = torch.Generator().manual_seed(seed + zlib.crc32(method.encode()))
        _, reference, per_start = alternating_search(method, b, y, loss, starts, sweeps, generator)
        _check(relative_gap(reference, bound, floor), "the best alternating start", method)
        lower_bound, n = bound, starts
        near = (relative_gap(per_start, reference, floor) <= NEAR_BEST).sum(0).double()
    out = {"kind": evidence_kind(method, starts), "starts": n, "adam": adam, "reference": reference,
           "gap": relative_gap(adam, reference, floor), "lower_bound": lower_bound,
           "gap_to_bound": relative_gap(adam, lower_bound, floor), "starts_near_best": near}
    _check(out["gap_to_bound"], "Adam's loss", method)
    return out
