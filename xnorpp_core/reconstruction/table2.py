"""The Table 2 study (Section 4.2): configuration, run, and the table beside the paper's.

One trial: draw ``W`` (64x64x3x3) and ``I`` (64x16x16) from N(0, 1), compute the
real output ``Y = I * W`` and the binary output ``B`` with the binary weights
fixed at ``sign(W)``, then score every method's ``B . scale`` against ``Y``
(``xnorpp_core.reconstruction`` holds the maths). Reported per method:

- ``l1``: mean absolute difference per output element (the paper's "L1 distance");
- ``rel_l1``: ``l1`` divided by the mean ``|Y|`` of the same trial;
- ``steps``: Adam steps (0 for the analytic methods);
- for the learned Cases 1-4, the evidence on Adam's fit in its own loss
  (``evidence.fit_evidence``): ``evidence`` (``exact`` for Cases 1-2; for Cases
  3-4 ``best of N independent starts; lower bound from Case 2``), ``reference``,
  the signed relative ``gap`` of Adam to it, ``starts_near_best`` (Cases 3-4),
  the proven ``lower_bound`` and Adam's signed ``gap_to_bound`` above it. A gap
  below a proven bound raises ``evidence.EvidenceError``.
"""

import time
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import limits, paper
from ..layers import PAD_MODES
from ..limits import CHANNELS, ITERATIONS, KERNEL_SIZE, SEED, SIDE, TRIALS, check_fields, ints
from ..provenance import markdown_table
from .evidence import GAP_FLOOR, NEAR_BEST, STARTS, fit_evidence
from .fit import LOSSES, RECONSTRUCTION_METHODS, FitConfig, distance, draw_layers, fit_adam, layer_outputs

__all__ = ["ReconstructionConfig", "run_table2", "score_trials", "summarize", "display", "to_markdown", "to_page",
           "bound_note"]

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class ReconstructionConfig:
    """The protocol of one Table 2 run. The defaults are the paper's (Section 4.2)."""

    trials: int = field(default=100, metadata={"bounds": TRIALS})
    seed: int = field(default=0, metadata={"bounds": SEED})
    padding: int = field(default=0, metadata={"bounds": ints(0, KERNEL_SIZE.high // 2)})
    pad_mode: str = "zero"
    loss: str = "l1"
    device: str = "cpu"
    out_channels: int = field(default=64, metadata={"bounds": CHANNELS})
    in_channels: int = field(default=64, metadata={"bounds": CHANNELS})
    kernel_size: int = field(default=3, metadata={"bounds": KERNEL_SIZE})
    input_size: int = field(default=16, metadata={"bounds": SIDE})
    starts: int = field(default=STARTS, metadata={
        "help": "independent random starts of the alternating search behind Cases 3-4's reference",
        "bounds": limits.STARTS})
    sweeps: int = field(default=100, metadata={"help": "most sweeps of the alternating search per start",
                                               "bounds": ITERATIONS})
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self):
        check_fields(self)
        if not 0 <= self.padding <= self.kernel_size // 2:
            raise ValueError(f"padding must be between 0 and {self.kernel_size // 2}, got {self.padding}")
        if self.kernel_size > self.input_size + 2 * self.padding:
            raise ValueError(f"kernel_size {self.kernel_size} is larger than input_size {self.input_size} plus twice "
                             f"the padding {self.padding}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")

    def check_memory(self):
        """``ValueError`` (one line) when the trials' main tensors alone, ``W``, ``I`` and three outputs of float32
        (``Y``, ``B`` and a prediction), exceed this machine's memory."""
        o, c, k, size = self.out_channels, self.in_channels, self.kernel_size, self.input_size
        out = size + 2 * self.padding - k + 1
        floats = self.trials * (o * c * k * k + c * size * size + 3 * o * out * out)
        limits.check_memory(f"--trials {self.trials} of a {o}x{c}x{k}x{k} layer on {size}x{size} inputs", 4 * floats)


def _analytic_prediction(method, b, alpha, k):
    return {"direct": b, "xnor": b * alpha * k, "xnor_alpha": b * alpha}[method]


EVIDENCE_COLUMNS = ("evidence", "reference", "gap", "starts", "starts_near_best", "lower_bound", "gap_to_bound")


def run_table2(config: ReconstructionConfig, progress=True):
    """Run every method on ``config.trials`` trials drawn from ``config.seed``; returns ``(trials, info)``.

    ``trials`` is a long DataFrame (trial, method, l1, rel_l1, steps and, for
    the learned cases, the evidence columns ``EVIDENCE_COLUMNS``); ``info``
    holds the wall times.
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    w, x = draw_layers(config.trials, config.out_channels, config.in_channels, config.kernel_size,
                       config.input_size, generator, config.device)
    trials, seconds = score_trials(w, x, config, progress)
    return trials, {"wall_seconds": time.perf_counter() - start, "method_seconds": seconds}


def score_trials(w, x, config: ReconstructionConfig, progress=True):
    """Score every method on the layers ``w`` (T, o, c, k, k) and inputs ``x`` (T, c, H, W).

    ``config`` gives the padding, the loss, Adam's schedule and the search; its
    sizes and seed are not used. Returns ``(trials DataFrame, seconds per method)``.
    """
    y, b, alpha, k = layer_outputs(w, x, config.padding, config.pad_mode)
    mean_abs_y = y.abs().mean(dim=(1, 2, 3)).cpu()  # (T,)
    rows, seconds = [], {}
    bar = tqdm(RECONSTRUCTION_METHODS, desc="Table 2", disable=None if progress else True)
    for method in bar:
        bar.set_description(f"Table 2: {method}")
        t0 = time.perf_counter()
        steps, evidence = 0, None
        if method in ("direct", "xnor", "xnor_alpha"):
            pred = _analytic_prediction(method, b, alpha, k)
        else:
            with tqdm(desc=f"{method}: Adam steps", leave=False, disable=bar.disable) as step_bar:
                scale, _, steps = fit_adam(method, b, y, config.loss, config.fit, step_bar.update)
            with torch.no_grad():
                pred = b * scale()
            evidence = fit_evidence(method, b, y, config.loss, scale.fused(), config.starts, config.sweeps,
                                    seed=config.seed)
        l1 = distance(pred, y, "l1").cpu()
        rel = l1 / mean_abs_y
        for t in range(y.shape[0]):
            row = {"trial": t, "method": method, "l1": l1[t].item(), "rel_l1": rel[t].item(), "steps": steps}
            row.update({c: None for c in EVIDENCE_COLUMNS} if evidence is None else {
                "evidence": evidence["kind"], "starts": evidence["starts"] or None,
                **{c: evidence[c][t].item() for c in ("reference", "gap", "lower_bound", "gap_to_bound")},
                "starts_near_best": evidence["starts_near_best"][t].item() if evidence["starts"] else None})
            rows.append(row)
        seconds[method] = time.perf_counter() - t0
    return pd.DataFrame(rows), seconds


def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per method: our mean/std beside the paper's Table 2 and the ratios."""
    g = trials.groupby("method", sort=False)
    table = pd.DataFrame({
        "l1_mean": g["l1"].mean(),
        "l1_std": g["l1"].std(),
        "rel_l1_mean": g["rel_l1"].mean(),
        "rel_l1_std": g["rel_l1"].std(),
        "steps_mean": g["steps"].mean(),
        "evidence": g["evidence"].first(),
        "gap_min": g["gap"].min(),
        "gap_max": g["gap"].max(),
        "starts": g["starts"].max(),
        "starts_near_best_min": g["starts_near_best"].min(),
        "lower_bound_mean": g["lower_bound"].mean(),
        "gap_to_bound_min": g["gap_to_bound"].min(),
        "gap_to_bound_mean": g["gap_to_bound"].mean(),
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

    def column(name):  # tables written before the evidence columns existed show them empty
        return table[name] if name in table else pd.Series([float("nan")] * len(table), dtype=object)

    return pd.DataFrame({
        "method": table["method"],
        "L1 (ours)": [pm(m, s, 4) for m, s in zip(table["l1_mean"], table["l1_std"])],
        "L1 / mean|Y| (ours)": [pm(m, s, 3) for m, s in zip(table["rel_l1_mean"], table["rel_l1_std"])],
        "L1 (paper)": [pm(m, s, 3) for m, s in zip(table["paper_l1_mean"], table["paper_l1_std"])],
        "ours / paper": [num(v, ".3g") for v in table["l1_over_paper"]],
        "vs XNOR (ours)": [num(v, ".3f") for v in table.get("l1_vs_xnor", [])],
        "vs XNOR (paper)": [num(v, ".3f") for v in table.get("paper_l1_vs_xnor", [])],
        "Adam steps": [num(v, ".0f") if v else "" for v in table["steps_mean"]],
        "reference": [_reference(e, n) for e, n in zip(column("evidence"), column("starts"))],
        "Adam vs reference (min, max)": [_span(a, b) for a, b in zip(column("gap_min"), column("gap_max"))],
        "starts near best (min)": [f"{v:.0f} of {n:.0f}" if not pd.isna(v) else ""
                                   for v, n in zip(column("starts_near_best_min"), column("starts"))],
        "Adam above lower bound (mean)": [_signed(v, ".3g") for v in column("gap_to_bound_mean")],
    })


def _reference(kind, starts):
    if not isinstance(kind, str):
        return ""
    return "exact optimum" if kind == "exact" else f"best of {starts:.0f} starts"


def _signed(v, fmt):
    return "" if pd.isna(v) else format(v, "+" + fmt)


def _span(low, high):
    return "" if pd.isna(low) else f"{_signed(low, '.1e')}, {_signed(high, '.1e')}"


def to_markdown(table: pd.DataFrame) -> str:
    """Table 2 as markdown: ours (mean +- std) beside the paper's, and the ratios."""
    return markdown_table(display(table), disable_numparse=True)


def bound_note(table: pd.DataFrame) -> str:
    """How far above the proven lower bound Adam's Cases 3-4 end, as a ratio of losses (``1 + gap_to_bound``
    averaged over trials): a bound far below the fit says little about how close the fit is to its optimum."""
    if "gap_to_bound_mean" not in table:
        return ""
    rows = table.set_index("method").reindex(["case3", "case4"]).dropna(subset=["gap_to_bound_mean"])
    if rows.empty:
        return ""
    ratios = " and ".join(f"{1 + r.gap_to_bound_mean:.3g}x the bound for {m}" for m, r in rows.iterrows())
    return (f"For the non-convex cases Adam's loss is on average {ratios}: the Case 2 bound is that far below "
            "the fits, so it proves no fit optimal; the independent starts are the closer check.")


def to_page(table: pd.DataFrame, config: ReconstructionConfig) -> str:
    """The whole of ``table2.md``: the protocol in one line, the table, what its evidence columns mean."""
    header = (f"Table 2 reproduction: {config.trials} trials, seed {config.seed}, "
              f"W {config.out_channels}x{config.in_channels}x{config.kernel_size}x{config.kernel_size}, "
              f"I {config.in_channels}x{config.input_size}x{config.input_size} ~ N(0, 1), "
              f"padding {config.padding} ({config.pad_mode}), fitted with {config.loss.upper()} loss.")
    evidence = (f"Evidence on each Adam fit, in its {config.loss.upper()} fitting loss: `reference` is the exact "
                "optimum for Cases 1-2 and, for the non-convex Cases 3-4, the best of "
                f"{config.starts} alternating exact-update searches from independent random starts (not a "
                "proof of optimality). `Adam vs reference` is the signed relative gap (adam - reference) / "
                "reference over trials: negative for Cases 3-4 means Adam found a lower loss than every start. "
                f"`starts near best` counts the starts that ended within a relative {NEAR_BEST:g} of the best. "
                "`Adam above lower bound` is Adam's relative distance above a proven lower bound (the exact "
                "optimum for Cases 1-2; the exact Case 2 optimum for Cases 3-4, which contain no better Gamma). "
                f"Relative gaps divide by at least {GAP_FLOOR:.1%} of the loss of Gamma = 0. "
                "Per-trial values: `trials.csv`.")
    note = bound_note(table)
    return f"{header}\n\n{to_markdown(table)}\n\n{evidence}" + (f" {note}" if note else "") + "\n\n"
