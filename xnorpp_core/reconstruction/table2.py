"""The Table 2 study (Section 4.2): configuration, run, and the table beside the paper's.

One trial: draw ``W`` (64x64x3x3) and ``I`` (64x16x16) from N(0, 1), compute the
real output ``Y = I * W`` and the binary output ``B`` with the binary weights
fixed at ``sign(W)``, then score every method's ``B . scale`` against ``Y``
(``xnorpp_core.reconstruction`` holds the maths). Reported per method:

- ``l1``: mean absolute difference per output element (the paper's "L1 distance");
- ``rel_l1``: ``l1`` divided by the mean ``|Y|`` of the same trial;
- ``steps``: Adam steps (0 for the analytic methods);
- ``gap_to_optimum``: the relative excess of Adam's fitting loss over the best
  known optimum: exact for Cases 1-2, for Cases 3-4 the result of alternating
  exact factor updates started from Adam's own solution.
"""

import time
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import paper
from ..layers import PAD_MODES
from ..provenance import markdown_table
from .fit import (LOSSES, RECONSTRUCTION_METHODS, FitConfig, alternating_optimum, distance, draw_layers,
                             fit_adam, layer_outputs)

__all__ = ["ReconstructionConfig", "run_table2", "summarize", "display", "to_markdown"]

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class ReconstructionConfig:
    """The protocol of one Table 2 run. The defaults are the paper's (Section 4.2)."""

    trials: int = 100
    seed: int = 0
    padding: int = 0
    pad_mode: str = "zero"
    loss: str = "l1"
    device: str = "cpu"
    out_channels: int = 64
    in_channels: int = 64
    kernel_size: int = 3
    input_size: int = 16
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self):
        for name in ("trials", "out_channels", "in_channels", "kernel_size", "input_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if not 0 <= self.padding <= self.kernel_size // 2:
            raise ValueError(f"padding must be between 0 and {self.kernel_size // 2}, got {self.padding}")
        if self.kernel_size > self.input_size + 2 * self.padding:
            raise ValueError("the kernel is larger than the (padded) input")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")


def _analytic_prediction(method, b, alpha, k):
    return {"direct": b, "xnor": b * alpha * k, "xnor_alpha": b * alpha}[method]


def run_table2(config: ReconstructionConfig, progress=True):
    """Run every method on ``config.trials`` trials; returns ``(trials, info)``.

    ``trials`` is a long DataFrame (trial, method, l1, rel_l1, steps, gap_to_optimum);
    ``info`` holds the wall times.
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    w, x = draw_layers(config.trials, config.out_channels, config.in_channels, config.kernel_size,
                       config.input_size, generator, config.device)
    y, b, alpha, k = layer_outputs(w, x, config.padding, config.pad_mode)
    mean_abs_y = y.abs().mean(dim=(1, 2, 3))
    rows, seconds = [], {}
    bar = tqdm(RECONSTRUCTION_METHODS, desc="Table 2", disable=None if progress else True)
    for method in bar:
        bar.set_description(f"Table 2: {method}")
        t0 = time.perf_counter()
        steps, gap = 0, None
        if method in ("direct", "xnor", "xnor_alpha"):
            pred = _analytic_prediction(method, b, alpha, k)
        else:
            with tqdm(desc=f"{method}: Adam steps", leave=False, disable=bar.disable) as step_bar:
                scale, objective, steps = fit_adam(method, b, y, config.loss, config.fit, step_bar.update)
            with torch.no_grad():
                pred = b * scale()
            spatial_product = method in ("case3", "case4")
            _, best = alternating_optimum(method, b, y, config.loss, restarts=0 if spatial_product else 1,
                                          sweeps=20, init=list(scale.parameters()) if spatial_product else None)
            best = torch.minimum(best, objective)
            gap = ((objective - best) / best).cpu()
        l1 = distance(pred, y, "l1").cpu()
        rel = (l1 / mean_abs_y.cpu())
        for t in range(config.trials):
            rows.append({"trial": t, "method": method, "l1": l1[t].item(), "rel_l1": rel[t].item(),
                         "steps": steps, "gap_to_optimum": None if gap is None else gap[t].item()})
        seconds[method] = time.perf_counter() - t0
    info = {"wall_seconds": time.perf_counter() - start, "method_seconds": seconds}
    return pd.DataFrame(rows), info


def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per method: our mean/std beside the paper's Table 2 and the ratios."""
    g = trials.groupby("method", sort=False)
    table = pd.DataFrame({
        "l1_mean": g["l1"].mean(),
        "l1_std": g["l1"].std(),
        "rel_l1_mean": g["rel_l1"].mean(),
        "rel_l1_std": g["rel_l1"].std(),
        "steps_mean": g["steps"].mean(),
        "gap_to_optimum": g["gap_to_optimum"].max(),
    }).reset_index()
    table["paper_l1_mean"] = table["method"].map(lambda m: paper.TABLE2.get(m, (None, None))[0])
    table["paper_l1_std"] = table["method"].map(lambda m: paper.TABLE2.get(m, (None, None))[1])
    table["l1_over_paper"] = table["l1_mean"] / table["paper_l1_mean"]
    xnor = table.set_index("method")
    if "xnor" in xnor.index:
        table["l1_vs_xnor"] = table["l1_mean"] / xnor.loc["xnor", "l1_mean"]
        table["paper_l1_vs_xnor"] = table["paper_l1_mean"] / paper.TABLE2["xnor"][0]
    return table


def display(table: pd.DataFrame) -> pd.DataFrame:
    """Table 2 as formatted text columns: ours (mean +- std) beside the paper's, and the ratios."""
    def pm(mean, std, digits):
        return "" if pd.isna(mean) else f"{mean:.{digits}g} ± {std:.2g}"

    def num(v, fmt):
        return "" if pd.isna(v) else format(v, fmt)

    return pd.DataFrame({
        "method": table["method"],
        "L1 (ours)": [pm(m, s, 4) for m, s in zip(table["l1_mean"], table["l1_std"])],
        "L1 / mean|Y| (ours)": [pm(m, s, 3) for m, s in zip(table["rel_l1_mean"], table["rel_l1_std"])],
        "L1 (paper)": [pm(m, s, 3) for m, s in zip(table["paper_l1_mean"], table["paper_l1_std"])],
        "ours / paper": [num(v, ".3g") for v in table["l1_over_paper"]],
        "vs XNOR (ours)": [num(v, ".3f") for v in table.get("l1_vs_xnor", [])],
        "vs XNOR (paper)": [num(v, ".3f") for v in table.get("paper_l1_vs_xnor", [])],
        "Adam steps": [num(v, ".0f") if v else "" for v in table["steps_mean"]],
        "gap to optimum (max)": [num(v, ".1e") for v in table["gap_to_optimum"]],
    })


def to_markdown(table: pd.DataFrame) -> str:
    """Table 2 as markdown: ours (mean +- std) beside the paper's, and the ratios."""
    return markdown_table(display(table), disable_numparse=True)
