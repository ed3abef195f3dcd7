"""The protocol study of Table 2: under which conditions do its claims hold?

Section 4.2 leaves the protocol open. A *cell* fixes every choice:

- ``weights``       the scale of ``W`` (``distributions.WEIGHT_SCALES``);
- ``inputs``        the distribution of ``I`` (``distributions.INPUT_DISTRIBUTIONS``);
- ``padding``       ``"0"``, ``"1-zero"`` or ``"1-minus_one"`` (padding 1 under each
  border convention of ``layers.PAD_MODES``);
- ``fit_loss``      the loss Gamma is fitted with, ``l1`` or ``l2``;
- ``shape``         the layer, ``"OxCxKxK@H"``: o filters of c x k x k on c x H x H inputs;
- ``train_inputs``  N, the number of inputs per trial one Gamma is fitted to.

Every trial draws one layer ``W``, ``heldout_inputs`` held-out inputs and
``train_inputs`` training inputs (in that order, from one generator seeded with
the sweep's seed: cells that differ in loss, padding or N see the same ``W``
and inputs, and ``he`` / ``small`` layers are exact multiples of the ``unit``
one). Each learned Gamma is fitted with Adam on the training inputs (with N = 1
this is the paper's protocol: fitted and scored on the same single input) and
scored on the training inputs (``split="train"``) and on the held-out inputs
(``split="heldout"``) in both metrics; XNOR-Net computes ``K`` from each input
it scores, so it adapts to held-out inputs, which a learned static Gamma cannot.

Evidence. For every learned fit, the training loss Adam reached is compared
(``evidence.fit_evidence``) with a reference: the exact optimum for Cases 1
and 2; for Cases 3 and 4 the best of ``starts`` alternating exact-update
searches from independent random starts (none from Adam), with the exact
Case 2 optimum on the same inputs as a proven lower bound. Gaps are signed,
``(adam - reference) / max(reference, GAP_FLOOR * zero)``, ``zero`` the loss of
Gamma = 0 (mean|Y| or mean Y^2; the floor only matters when the reference
reproduces Y almost exactly, as Case 2 can, where a relative gap means
nothing). A fit below a proven bound raises ``evidence.EvidenceError``. A fit
is ``within_tolerance`` when its largest gap over trials is at most
``tolerance`` (for Cases 3-4: no worse than the best start by more than that).

A sweep is the base cell (the first value of every axis), every other value
of each axis with the rest at base (a star), and the full product of each
pair of axes in ``crosses``.
"""

import itertools
import math
from dataclasses import asdict, dataclass, field, fields

import torch

from .distributions import INPUT_DISTRIBUTIONS, WEIGHT_SCALES, draw_inputs, draw_weights
from .expectations import expected_distances
from .. import limits
from ..layers import PAD_MODES, conv_output_size
from ..limits import CHANNELS, ITERATIONS, KERNEL_SIZE, SEED, SIDE, TRIALS, check_fields, ints, reals
from .evidence import GAP_FLOOR, STARTS, fit_evidence
from .fit import LOSSES, FitConfig, distance, fit_adam, layer_outputs

__all__ = ["PADDINGS", "SHAPES", "LEARNED", "METHODS", "SPLITS", "AXES", "GAP_FLOOR", "EVIDENCE_COLUMNS",
           "PAPER_ORDER", "RATIOS",
           "parse_shape", "parse_padding", "Cell", "SweepConfig", "run_cell", "fit_cases", "cell_rows", "claim_rows"]

PADDINGS = ("0", "1-zero", "1-minus_one")
SHAPES = ("64x64x3x3@16", "64x64x1x1@16", "64x64x5x5@16", "256x256x3x3@16", "64x64x3x3@32")
LEARNED = ("case1", "case2", "case3", "case4")
METHODS = ("zero", "direct", "xnor", "xnor_alpha") + LEARNED  # "zero" predicts 0: the scale of Y
SPLITS = ("train", "heldout")
AXES = ("weights", "inputs", "padding", "fit_loss", "shape", "train_inputs")
INPUTS = ints(1, 4_096)  # inputs per trial
EVIDENCE_COLUMNS = ("reference", "gap_min", "gap_max", "starts", "starts_near_best_min", "lower_bound",
                    "gap_to_bound_min", "adam_steps")


def parse_shape(text):
    """``"OxCxKxK@H"`` -> ``(o, c, k, H)``; ValueError with the expected form otherwise."""
    try:
        kernel, size = text.split("@")
        o, c, k1, k2 = (int(v) for v in kernel.split("x"))
        size = int(size)
    except ValueError:
        raise ValueError(f"shape {text!r} is not of the form OxCxKxK@H, e.g. 64x64x3x3@16") from None
    if k1 != k2 or k1 > size:
        raise ValueError(f"shape {text!r}: need square kernels no larger than the input")
    for name, value, bounds in (("O", o, CHANNELS), ("C", c, CHANNELS), ("K", k1, KERNEL_SIZE), ("H", size, SIDE)):
        if not bounds.contains(value):
            raise ValueError(f"shape {text!r}: {name} must be {bounds.describe()}, got {value}")
    return o, c, k1, size


def parse_padding(text, only=PADDINGS):
    """A border written ``N-MODE`` (N pixels, ``zero`` or ``minus_one``; see ``xnorpp_core.layers``) or ``N``
    (zeros) as ``(N, MODE)``: ``"0"`` -> ``(0, "zero")``, ``"1-minus_one"`` -> ``(1, "minus_one")``. ``only``:
    the texts accepted (``None``: any such border); ``ValueError`` otherwise."""
    size, _, mode = str(text).partition("-")
    if (only is not None and text not in only) or not size.isdigit() or mode not in ("", *PAD_MODES):
        raise ValueError(f"unknown padding {text!r}; choose from {only or ('N', 'N-zero', 'N-minus_one')}")
    return int(size), mode or "zero"


@dataclass(frozen=True)
class Cell:
    """One protocol: a value for every axis (see the module docstring)."""

    weights: str = "unit"
    inputs: str = "gaussian"
    padding: str = "0"
    fit_loss: str = "l1"
    shape: str = "64x64x3x3@16"
    train_inputs: int = 1

    def __post_init__(self):
        if self.weights not in WEIGHT_SCALES:
            raise ValueError(f"unknown weight scale {self.weights!r}; choose from {WEIGHT_SCALES}")
        if self.inputs not in INPUT_DISTRIBUTIONS:
            raise ValueError(f"unknown input distribution {self.inputs!r}; choose from {INPUT_DISTRIBUTIONS}")
        if self.fit_loss not in LOSSES:
            raise ValueError(f"unknown fit loss {self.fit_loss!r}; choose from {LOSSES}")
        if not isinstance(self.train_inputs, int) or self.train_inputs < 1:
            raise ValueError(f"train_inputs must be a positive integer, got {self.train_inputs!r}")
        o, c, k, size = parse_shape(self.shape)
        pad, _ = parse_padding(self.padding)
        if min(conv_output_size(size, k, 1, pad)) < 1:
            raise ValueError(f"shape {self.shape!r} with padding {self.padding!r} has no output")

    @property
    def layer(self):
        """``(o, c, k, H)``."""
        return parse_shape(self.shape)

    def describe(self):
        return (f"W {self.weights}, I {self.inputs}, pad {self.padding}, {self.fit_loss}, {self.shape}, "
                f"N={self.train_inputs}")


@dataclass(frozen=True)
class SweepConfig:
    """The grid, the number of trials and inputs, the fitting and the evidence on the fits.

    ``fit`` starts Adam at lr 0.3 and stops one decade later than
    ``FitConfig()``: with lr 0.1 and 4 decays, Case 2 on the 256-channel layer
    stops 0.6-1.1 % above its exact optimum (its targets ``y / b`` reach 100 and
    travel at lr per step), outside a tolerance of 0.1 % of its exact optimum.
    """

    weights: tuple = WEIGHT_SCALES
    inputs: tuple = INPUT_DISTRIBUTIONS
    padding: tuple = PADDINGS
    fit_loss: tuple = LOSSES
    shape: tuple = SHAPES
    train_inputs: tuple = field(default=(1, 4, 16), metadata={"bounds": INPUTS})
    crosses: tuple = (("inputs", "padding"), ("fit_loss", "train_inputs"), ("weights", "shape"))
    trials: int = field(default=10, metadata={"bounds": TRIALS})
    heldout_inputs: int = field(default=8, metadata={"bounds": INPUTS})
    starts: int = field(default=STARTS, metadata={"bounds": limits.STARTS})
    sweeps: int = field(default=100, metadata={"bounds": ITERATIONS})
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.3, decays=5))
    tolerance: float = field(default=1e-3, metadata={"bounds": reals(0, 1, open_low=True, open_high=True)})
    seed: int = field(default=0, metadata={"bounds": SEED})

    def __post_init__(self):
        check_fields(self)
        for axis in AXES:
            values = getattr(self, axis)
            if not isinstance(values, tuple) or not values or len(set(values)) != len(values):
                raise ValueError(f"{axis} needs a non-empty tuple of distinct values, got {values!r}")
            for value in values:
                Cell(**{axis: value})  # validates the value
        for pair in self.crosses:
            if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(AXES):
                raise ValueError(f"crosses must be pairs of distinct axes from {AXES}, got {pair!r}")
        if not isinstance(self.fit, FitConfig):
            raise ValueError("fit must be a FitConfig")

    @property
    def base(self):
        return Cell(**{axis: getattr(self, axis)[0] for axis in AXES})

    def check_memory(self):
        """``ValueError`` (one line) when one cell's main tensors alone, ``W``, its inputs and two outputs of float32
        (``Y``, ``B``) per input, exceed this machine's memory."""
        for cell in self.cells():
            o, c, k, size = cell.layer
            pad, _ = parse_padding(cell.padding)
            out = size + 2 * pad - k + 1
            inputs = cell.train_inputs + self.heldout_inputs
            floats = self.trials * (o * c * k * k + inputs * (c * size * size + 2 * o * out * out))
            limits.check_memory(f"the cell {cell.describe()} with {self.trials} trials", 4 * floats)

    def cells(self):
        """The base cell, the star around it, then each cross; in that order, without repeats."""
        base = asdict(self.base)
        out = [self.base]
        for axis in AXES:
            out += [Cell(**{**base, axis: v}) for v in getattr(self, axis)[1:]]
        for a, b in self.crosses:
            out += [Cell(**{**base, a: u, b: v}) for u, v in itertools.product(getattr(self, a), getattr(self, b))]
        return list(dict.fromkeys(out))

    def to_dict(self):
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["fit"] = asdict(self.fit)
        return d


def _generator(seed):
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def _draw(cell, config):
    """``W`` (T, o, c, k, k), held-out ``I`` (T, M, c, H, H), training ``I`` (T, N, c, H, H)."""
    o, c, k, size = cell.layer
    t = config.trials
    g = _generator(config.seed)
    w = draw_weights(cell.weights, (t, o, c, k, k), g)
    # one input of every trial at a time: the first n training inputs are the same for every N >= n
    heldout = torch.stack([draw_inputs(cell.inputs, (t, c, size, size), g) for _ in range(config.heldout_inputs)], 1)
    train = torch.stack([draw_inputs(cell.inputs, (t, c, size, size), g) for _ in range(cell.train_inputs)], 1)
    return w, train, heldout


def run_cell(cell, config, on_step=None):
    """Fit and score every method of ``cell`` over ``config.trials`` trials.

    Returns ``{"distance": {(method, split, metric): (T,)}, "evidence": {case: dict},
    "steps": {case: int}}``: the distances of every method, and for each
    learned case the evidence on Adam's fit (``evidence.fit_evidence``, its
    losses in the units of ``Y``) and Adam's number of steps.

    The learned cases are fitted by ``fit_cases``.
    """
    w, x_train, x_held = _draw(cell, config)
    pad, mode = parse_padding(cell.padding)
    data = {"train": layer_outputs(w, x_train, pad, mode), "heldout": layer_outputs(w, x_held, pad, mode)}
    preds = {split: {"zero": torch.zeros_like(y), "direct": b, "xnor": b * alpha * k, "xnor_alpha": b * alpha}
             for split, (y, b, alpha, k) in data.items()}
    y_tr, b_tr = data["train"][:2]
    out = {"distance": {}, "evidence": {}, "steps": {}}
    fits = fit_cases(b_tr, y_tr, cell.fit_loss, config.fit, config.starts, config.sweeps, config.seed, on_step)
    for case, (gamma, evidence, steps) in fits.items():
        for split, (y, b, _, _) in data.items():
            preds[split][case] = b * gamma[:, None]  # one Gamma per trial, for every input
        out["evidence"][case], out["steps"][case] = evidence, steps
    for split, (y, *_) in data.items():
        for method, pred in preds[split].items():
            for metric in LOSSES:
                out["distance"][(method, split, metric)] = distance(pred, y, metric)
    return out


def fit_cases(b, y, loss, fit, starts, sweeps, seed, on_step=None):
    """Fit every learned case to ``y`` with Adam, with the evidence on each fit.

    ``b`` and ``y`` are (T, N, o, h, w): one Gamma per trial, fitted to its N
    inputs. Adam fits Gamma' to ``Y / c`` with ``c = mean|Y| / mean|B|`` per
    trial, and ``Gamma = c Gamma'``. Both losses are homogeneous, so this is the
    same problem with the same relative gaps; it only puts the optimum near
    Adam's start (Gamma = 1) at every scale of ``W`` and ``I`` (from Gamma = 1
    with a fixed learning rate, Adam does not converge when the optimum is
    0.006, as it is with ``W ~ N(0, 0.01^2)``). Returns ``{case: (gamma (T, o,
    h, w), evidence, steps)}``, the evidence (``evidence.fit_evidence``) in the
    units of ``Y``.
    """
    dims = tuple(range(1, y.dim()))
    b_abs = b.abs().mean(dims)
    c = torch.where(b_abs > 0, y.abs().mean(dims) / b_abs.clamp_min(1e-30), torch.ones_like(b_abs))  # (T,)
    y_fit = y / c[:, None, None, None, None]
    power = 1 if loss == "l1" else 2  # distance(c x, c y) = c^power distance(x, y)
    zero = distance(torch.zeros_like(y_fit), y_fit, loss).double()  # (T,) the loss of Gamma = 0
    out = {}
    for case in LEARNED:
        scale, _, steps = fit_adam(case, b, y_fit, loss, fit, on_step=on_step)
        evidence = fit_evidence(case, b, y_fit, loss, scale.fused(), starts, sweeps, seed=seed, floor=GAP_FLOOR * zero)
        for name in ("adam", "reference", "lower_bound"):  # back to the units of Y
            evidence[name] = evidence[name] * c.double() ** power
        out[case] = (scale.fused() * c[:, None, None, None], evidence, steps)  # Gamma (T, o, h, w)
    return out


def _stats(values):
    v = values.double()
    std = v.std().item() if v.numel() > 1 else float("nan")
    return v.mean().item(), std, std / math.sqrt(v.numel())


def cell_rows(cell_id, cell, result, config):
    """Tidy rows (one per method, split and metric) of one cell's ``run_cell`` result.

    Columns: the cell's axes and layer, ``method``, ``split``, ``metric``,
    ``mean`` / ``std`` / ``sem`` over trials, ``rel`` (mean over the ``zero``
    method's mean: distance relative to mean|Y| or mean Y^2), ``expected``
    (``expectations.expected_distances``; NaN where none is derived) and, on
    the row where a learned case was fitted (training split, fit metric), the
    evidence on the fit (``evidence.fit_evidence``): ``evidence`` (its kind),
    ``reference`` and ``lower_bound`` (means over trials), ``gap_min`` /
    ``gap_max`` (Adam's signed relative gap to the reference over trials),
    ``starts`` and ``starts_near_best_min`` (Cases 3-4: the fewest starts, over
    trials, within a relative ``evidence.NEAR_BEST`` of the best),
    ``gap_to_bound_min``, ``within_tolerance`` and ``adam_steps``.
    """
    o, c, k, size = cell.layer
    pad, mode = parse_padding(cell.padding)
    h_out = conv_output_size(size, k, 1, pad)[0]
    expected = expected_distances(cell.inputs, cell.weights, c, k, size, pad, mode, cell.train_inputs,
                                  cell.fit_loss)
    head = {"cell_id": cell_id, "weights": cell.weights, "inputs": cell.inputs, "padding": pad,
            "pad_mode": mode if pad else "none", "fit_loss": cell.fit_loss, "shape": cell.shape,
            "out_channels": o, "in_channels": c, "kernel": k, "size": size, "out_size": h_out,
            "fan_in": c * k * k, "train_inputs": cell.train_inputs, "heldout_inputs": config.heldout_inputs,
            "trials": config.trials}
    rows = []
    for (method, split, metric), values in result["distance"].items():
        mean, std, sem = _stats(values)
        zero = result["distance"][("zero", split, metric)].double().mean().item()
        row = {**head, "row_id": f"{cell_id}/{method}/{split}/{metric}", "method": method, "split": split,
               "metric": metric, "mean": mean, "std": std, "sem": sem, "rel": mean / zero,
               "expected": expected.get((method, split, metric), float("nan")),
               "evidence": "", **{col: float("nan") for col in EVIDENCE_COLUMNS}, "within_tolerance": ""}
        if method in LEARNED and split == "train" and metric == cell.fit_loss:
            ev = result["evidence"][method]
            row.update(evidence=ev["kind"], reference=ev["reference"].mean().item(),
                       gap_min=ev["gap"].min().item(), gap_max=ev["gap"].max().item(),
                       starts=ev["starts"] or float("nan"),
                       starts_near_best_min=ev["starts_near_best"].min().item() if ev["starts"] else float("nan"),
                       lower_bound=ev["lower_bound"].mean().item(), gap_to_bound_min=ev["gap_to_bound"].min().item(),
                       within_tolerance=bool(ev["gap"].max().item() <= config.tolerance),
                       adam_steps=result["steps"][method])
        rows.append(row)
    return rows


PAPER_ORDER = ("direct", "xnor", "case1", "case3", "case4")  # Table 2, largest distance first
RATIOS = (("xnor", "case1"), ("direct", "xnor"), ("case3", "case1"), ("case4", "case1"), ("case2", "case1"))


def claim_rows(cell_id, cell, result):
    """One row per split and metric with the paper's claims, checked on paired trials.

    ``order``: the methods of ``PAPER_ORDER`` sorted by mean distance, largest
    first; ``paper_order`` whether it is Table 2's order, ``paper_order_trials``
    the fraction of trials in which it holds; ``<a>_over_<b>``: the mean over
    trials of the per-trial ratio of two methods' distances (with ``_std``), and
    ``_expected`` the ratio of the analytic expectations (NaN where none).
    """
    o, c, k, size = cell.layer
    pad, mode = parse_padding(cell.padding)
    expected = expected_distances(cell.inputs, cell.weights, c, k, size, pad, mode, cell.train_inputs,
                                  cell.fit_loss)
    d = result["distance"]
    rows = []
    for split, metric in itertools.product(SPLITS, LOSSES):
        values = torch.stack([d[(m, split, metric)].double() for m in PAPER_ORDER])  # (5, T)
        means = values.mean(1)
        order = [PAPER_ORDER[i] for i in means.argsort(descending=True).tolist()]
        holds = (values[:-1] > values[1:]).all(0)  # (T,)
        row = {"claim_id": f"{cell_id}/{split}/{metric}", "cell_id": cell_id, "split": split, "metric": metric,
               "order": " > ".join(order), "paper_order": order == list(PAPER_ORDER),
               "paper_order_trials": holds.double().mean().item()}
        for a, b in RATIOS:
            ratio = d[(a, split, metric)].double() / d[(b, split, metric)].double()
            row[f"{a}_over_{b}"] = ratio.mean().item()
            row[f"{a}_over_{b}_std"] = ratio.std().item() if ratio.numel() > 1 else float("nan")
            ea, eb = expected.get((a, split, metric)), expected.get((b, split, metric))
            row[f"{a}_over_{b}_expected"] = ea / eb if ea is not None and eb is not None else float("nan")
        rows.append(row)
    return rows
