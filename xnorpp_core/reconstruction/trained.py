"""Table 2 on the layers of a trained network: the real weights and the real inputs a layer sees.

Table 2 (``table2``) and the protocol study (``protocol``) draw ``W`` and ``I``
from chosen distributions. Here every convolution of a trained model gives one
layer: its weights ``W`` (for a binary layer, the latent real weights the
network binarizes), and its real input activations ``I``, recorded with a
forward hook on a set of images. A binary network computes its layers'
inputs from binary layers, a real one from real layers; either way ``I`` is
what reaches the convolution (after BN, before the sign).

On each layer the Table 2 protocol runs as in the protocol study:
``Y = I * W`` and ``B = sign(I) (*) sign(W)`` with the layer's own stride,
padding and border convention (``fit.layer_outputs``); ``direct``, ``xnor``
and ``xnor_alpha`` are analytic; each learned Gamma (Cases 1-4) is fitted with
Adam on ``fit_images`` images and scored on them (``split="train"``) and on
``heldout_images`` other images (``split="heldout"``), with the evidence on
every fit (``protocol.fit_cases``: the exact optimum for Cases 1-2, the best of
independent starts and the Case 2 lower bound for Cases 3-4).

Per image, the L1 distance ``mean |pred - Y|`` over the layer's output; a
layer's value is the mean over images with a Student-t interval over images
(``CONFIDENCE``), and ``rel_l1`` divides it by the mean of ``mean|Y|``. The
paper's claims are checked per image on the same images: the ratio XNOR-Net /
Case 1 (mean of the per-image ratios, with its interval) and, for each
consecutive pair of Table 2's order (``protocol.PAPER_ORDER``), the per-image
difference of distances with its interval. Table 2's order on a layer has
three outcomes (``order_outcome``): it *holds* when every step's interval lies
above zero, is *reversed* when some step's lies below zero, and is *not
separable* otherwise.

The per-image distances themselves (``image_rows``; float32, as computed) are
kept beside the claims, so that every interval can be recomputed from them
(``claims_from_images``).
"""

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn

from ..layers import BinaryConv2d
from ..limits import ITERATIONS, SEED, STARTS, check_fields, ints
from .fit import LOSSES, RECONSTRUCTION_METHODS, FitConfig, distance, layer_outputs
from .protocol import LEARNED, PAPER_ORDER, SPLITS, fit_cases

__all__ = ["CONFIDENCE", "TrainedLayersConfig", "Layer", "convolutions", "record_inputs", "score_layer",
           "interval", "layer_rows", "claim_rows", "claims_of", "order_outcome", "ORDER_OUTCOMES", "image_rows",
           "claims_from_images", "CLAIM_KEYS", "PAIRS"]

CONFIDENCE = 0.95  # two-sided Student-t intervals over images
IMAGES = ints(1, 10_000)  # validation images recorded, each layer's inputs held for all of them
PAIRS = tuple(zip(PAPER_ORDER[:-1], PAPER_ORDER[1:]))  # Table 2's order, one consecutive pair at a time
ORDER_OUTCOMES = ("holds", "reversed", "not separable")  # Table 2's order on one layer (``order_outcome``)
CLAIM_KEYS = ("model", "depth", "split")  # what names one row of claims.csv


@dataclass(frozen=True)
class TrainedLayersConfig:
    """The images, the fitting and the evidence of one run over a trained model's layers."""

    fit_images: int = field(default=8, metadata={"help": "validation images each learned Gamma is fitted to",
                                                 "bounds": IMAGES})
    heldout_images: int = field(default=32, metadata={
        "help": "other validation images every method is also scored on (at least 2: an interval needs two)",
        "bounds": ints(2, IMAGES.high)})
    loss: str = field(default="l1", metadata={"help": "loss the learned scales are fitted with", "choices": LOSSES})
    starts: int = field(default=4, metadata={
        "help": "independent random starts of the alternating search behind Cases 3-4's reference",
        "bounds": STARTS})
    sweeps: int = field(default=100, metadata={"help": "most sweeps of the alternating search per start",
                                               "bounds": ITERATIONS})
    seed: int = field(default=0, metadata={"help": "seed of the choice of images and of the searches' starts",
                                           "bounds": SEED})
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.3))

    def __post_init__(self):
        check_fields(self)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    @property
    def images(self):
        return self.fit_images + self.heldout_images

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Layer:
    """One convolution of a model: its name, depth (forward order, from 1) and whether the network binarizes it."""

    name: str
    depth: int
    module: nn.Conv2d
    binarized: bool

    def describe(self):
        m = self.module
        return (f"{m.out_channels}x{m.in_channels}x{m.kernel_size[0]}x{m.kernel_size[1]}"
                f"/{m.stride[0]}")


def convolutions(model, example):
    """Every ``nn.Conv2d`` of ``model`` in the order a forward pass on ``example`` (N, c, H, W) reaches it.

    ``binarized``: a ``BinaryConv2d`` (of any method, ``real`` included: the
    layers a binary network of this architecture binarizes). ``ValueError``
    when the model has no convolution, or one this study cannot score (groups,
    dilation or a padding mode other than zeros).
    """
    convs = {m: name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if not convs:
        raise ValueError(f"the model ({type(model).__name__}) has no convolution")
    for m, name in convs.items():
        if m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ValueError(f"convolution {name} has groups, dilation or non-zero padding; not supported")
    order = []
    hooks = [m.register_forward_pre_hook(lambda m, args: order.append(m) if m not in order else None)
             for m in convs]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return [Layer(convs[m], i + 1, m, isinstance(m, BinaryConv2d)) for i, m in enumerate(order)]


@torch.no_grad()
def record_inputs(model, images, modules, batch_size=64):
    """The input each of ``modules`` receives on ``images`` (N, c, H, W), model in eval mode.

    Returns one tensor (N, c_in, H_in, W_in) per module, in the order given,
    recorded by forward pre-hooks (the tensor the module's ``forward`` is called with).
    """
    seen = [[] for _ in modules]
    hooks = [m.register_forward_pre_hook(lambda m, args, i=i: seen[i].append(args[0].detach().clone()))
             for i, m in enumerate(modules)]
    try:
        model.eval()
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(s) for s in seen]


def _weight_and_geometry(module):
    pad_mode = module.pad_mode if isinstance(module, BinaryConv2d) else "zero"
    if module.padding[0] != module.padding[1] or module.stride[0] != module.stride[1]:
        raise ValueError("only square strides and paddings are supported")
    return module.weight.detach(), module.stride[0], module.padding[0], pad_mode


def score_layer(module, x_fit, x_held, config: TrainedLayersConfig, on_step=None):
    """Every method on one convolution ``module``, given its inputs on the fit and held-out images.

    ``x_fit`` (N, c, H, W) and ``x_held`` (M, c, H, W). Returns ``{"l1": {(method, split): (images,)},
    "mean_abs_y": {split: (images,)}, "evidence": {case: dict}, "steps": {case: int}}``, distances in float64.
    """
    w, stride, padding, pad_mode = _weight_and_geometry(module)
    w = w.float()[None]  # one trial: (1, o, c, k, k)
    data = {split: layer_outputs(w, x.float()[None], padding, pad_mode, stride)
            for split, x in zip(SPLITS, (x_fit, x_held))}
    preds = {split: {"direct": b, "xnor": b * alpha * k, "xnor_alpha": b * alpha}
             for split, (y, b, alpha, k) in data.items()}
    y_fit, b_fit = data[SPLITS[0]][:2]
    fits = fit_cases(b_fit, y_fit, config.loss, config.fit, config.starts, config.sweeps, config.seed, on_step)
    for case, (gamma, _, _) in fits.items():
        for split, (y, b, _, _) in data.items():
            preds[split][case] = b * gamma[:, None]  # one Gamma for every image
    out = {"l1": {}, "mean_abs_y": {}, "evidence": {c: f[1] for c, f in fits.items()},
           "steps": {c: f[2] for c, f in fits.items()}}
    for split, (y, *_) in data.items():
        out["mean_abs_y"][split] = y[0].abs().mean(dim=(1, 2, 3)).double()
        for method in RECONSTRUCTION_METHODS:
            out["l1"][(method, split)] = distance(preds[split][method][0], y[0], "l1").double()  # per image
    return out


def interval(values, confidence=CONFIDENCE):
    """``(mean, low, high)`` of ``values`` with the two-sided Student-t interval of the mean (NaN for one value)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def layer_rows(model_name, layer: Layer, result):
    """Tidy rows, one per method and split: the L1 distance (mean and interval over images), ``rel_l1``,
    and on the row where a learned case was fitted (training split) the evidence on its fit."""
    m = layer.module
    head = {"model": model_name, "layer": layer.name, "depth": layer.depth, "binarized": layer.binarized,
            "shape": layer.describe(), "out_channels": m.out_channels, "in_channels": m.in_channels,
            "kernel": m.kernel_size[0], "stride": m.stride[0], "padding": m.padding[0]}
    rows = []
    for (method, split), values in result["l1"].items():
        mean, low, high = interval(values)
        mean_abs_y = result["mean_abs_y"][split].mean().item()
        row = {**head, "method": method, "split": split, "images": len(values), "l1_mean": mean, "l1_low": low,
               "l1_high": high, "rel_l1": mean / mean_abs_y, "rel_l1_low": low / mean_abs_y,
               "rel_l1_high": high / mean_abs_y, "evidence": "", "gap": math.nan, "gap_to_bound": math.nan,
               "starts_near_best": math.nan, "adam_steps": math.nan}
        if method in LEARNED and split == SPLITS[0]:
            ev = result["evidence"][method]
            row.update(evidence=ev["kind"], gap=ev["gap"].item(), gap_to_bound=ev["gap_to_bound"].item(),
                       starts_near_best=ev["starts_near_best"].item() if ev["starts"] else math.nan,
                       adam_steps=result["steps"][method])
        rows.append(row)
    return rows


def order_outcome(steps):
    """Table 2's order on one layer from each step's interval ``(low, high)`` of the per-image difference
    (larger minus smaller in the paper's order): ``reversed`` when some interval lies below zero (``high < 0``),
    ``holds`` when every interval lies above zero (``low > 0``), else ``not separable`` (an interval that
    touches zero, or none for lack of images, separates nothing)."""
    steps = list(steps)
    if any(high < 0 for _, high in steps):
        return "reversed"
    if steps and all(low > 0 for low, _ in steps):
        return "holds"
    return "not separable"


def claims_of(d):
    """The paper's claims checked on per-image distances ``d`` (method -> array over the same images).

    ``xnor_over_case1`` (and ``_low`` / ``_high``): the mean per-image ratio of
    XNOR-Net's distance to Case 1's with its interval over images. For each
    consecutive pair ``a > b`` of ``PAPER_ORDER``, ``<a>_minus_<b>`` (and
    ``_low`` / ``_high``): the per-image difference of distances, and
    ``paper_order``: ``order_outcome`` of the steps' intervals.
    """
    d = {m: np.asarray(v, dtype=np.float64) for m, v in d.items()}
    row = {"images": len(d["xnor"])}
    row["xnor_over_case1"], row["xnor_over_case1_low"], row["xnor_over_case1_high"] = interval(
        d["xnor"] / d["case1"])
    for a, b in PAIRS:
        row[f"{a}_minus_{b}"], row[f"{a}_minus_{b}_low"], row[f"{a}_minus_{b}_high"] = interval(d[a] - d[b])
    row["paper_order"] = order_outcome((row[f"{a}_minus_{b}_low"], row[f"{a}_minus_{b}_high"]) for a, b in PAIRS)
    return row


def claim_rows(model_name, layer: Layer, result):
    """One row per split: the layer's names and ``claims_of`` its per-image distances on that split."""
    return [{"model": model_name, "layer": layer.name, "depth": layer.depth, "binarized": layer.binarized,
             "shape": layer.describe(), "split": split,
             **claims_of({m: result["l1"][(m, split)].numpy() for m in RECONSTRUCTION_METHODS})}
            for split in SPLITS]


def image_rows(model_name, layer: Layer, result, images):
    """One row per split and image: the image's index in the validation split (``images``: the fit images
    first, then the held-out ones), its mean|Y| and every method's L1 distance, as float32 (the precision they
    are computed in, so that the intervals recompute exactly from these rows)."""
    rows, offset = [], 0
    for split in SPLITS:
        n = len(result["mean_abs_y"][split])
        columns = {"mean_abs_y": result["mean_abs_y"][split],
                   **{m: result["l1"][(m, split)] for m in RECONSTRUCTION_METHODS}}
        columns = {k: v.numpy().astype(np.float32) for k, v in columns.items()}
        for i in range(n):
            rows.append({"model": model_name, "depth": layer.depth, "split": split, "image": images[offset + i],
                         **{k: v[i] for k, v in columns.items()}})
        offset += n
    return rows


def claims_from_images(frame):
    """``claims_of`` recomputed from per-image rows (``image_rows``' columns, read back as float32): one row per
    ``CLAIM_KEYS``, in the order the rows first name them."""
    out = []
    for key, rows in frame.groupby(list(CLAIM_KEYS), sort=False):
        d = {m: rows[m].to_numpy().astype(np.float32) for m in RECONSTRUCTION_METHODS}
        out.append({**dict(zip(CLAIM_KEYS, key)), **claims_of(d)})
    return out
