"""Tables, figures and the written analysis of the protocol study.

Pure functions of the study's tidy tables (``protocol.cell_rows`` and
``protocol.claim_rows`` as DataFrames): they return DataFrames, matplotlib
figures and markdown text, and write nothing. Every number the analysis states
is read from a row of those tables and cited by its id: ``[c00/xnor/train/l1]``
is the ``row_id`` of a ``sweep.csv`` row (cell / method / split / metric),
``[c00/train/l1]`` the ``claim_id`` of a ``claims.csv`` row (cell / split / metric).
The text adapts to the grid it is given: a paragraph whose cells were not
run is left out, and every sentence that states a finding is chosen by a
condition on the numbers it cites (with its opposite when the numbers say so).
"""

import math
from dataclasses import asdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..reconstruction.expectations import BEST_SCALE_REL_ERROR_GAUSSIAN  # noqa: E402
from ..paper import TABLE2  # noqa: E402
from ..reconstruction.evidence import NEAR_BEST  # noqa: E402
from ..reconstruction.protocol import AXES, GAP_FLOOR, LEARNED  # noqa: E402
from .seeds import t_half_width  # noqa: E402

__all__ = ["cells_table", "figures", "analysis"]

LABELS = {"zero": "Zero (the scale of Y)", "direct": "Direct", "xnor": "XNOR-Net (alpha K)",
          "xnor_alpha": "XNOR-Net, alpha only", "case1": "Case 1", "case2": "Case 2", "case3": "Case 3",
          "case4": "Case 4"}


def cells_table(cells):
    """One row per cell: ``cell_id`` and its protocol."""
    return pd.DataFrame([{"cell_id": f"c{i:02d}", **asdict(c)} for i, c in enumerate(cells)])


def _f(x, digits=4):
    """A number as text with ``digits`` significant digits; ``n/a`` for NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


class _Tables:
    """Look-ups into the study's tables by the ids the analysis cites, and cells by their protocol."""

    def __init__(self, sweep, claims, cells, base):
        self.sweep = sweep.set_index("row_id")
        self.claims = claims.set_index("claim_id")
        self.cells = cells
        self.base = asdict(base)

    def changes(self, cell_id):
        """The axes on which ``cell_id`` differs from the base, as text."""
        row = self.cells.set_index("cell_id").loc[cell_id]
        diff = [f"{axis} {row[axis]}" for axis in AXES if str(row[axis]) != str(self.base[axis])]
        return ", ".join(diff) or "the base protocol"

    def cell(self, **changes):
        """The id of the cell with the base protocol but ``changes``; None when not run."""
        want = {**self.base, **changes}
        mask = pd.Series(True, index=self.cells.index)
        for axis in AXES:
            mask &= self.cells[axis].astype(str) == str(want[axis])
        hit = self.cells[mask]
        return None if hit.empty else hit.cell_id.iloc[0]

    def v(self, row_id, column="mean"):
        return float(self.sweep.at[row_id, column])

    def c(self, claim_id, column):
        return self.claims.at[claim_id, column]


def _cite(*ids):
    return "[" + ", ".join(ids) + "]"


def _side_of_one(t, claim_id, column="xnor_over_case1"):
    """+1 / -1 when the 95 % t-interval over trials of a per-trial ratio lies above / below 1, else 0."""
    mean, std = float(t.c(claim_id, column)), float(t.c(claim_id, column + "_std"))
    trials = int(t.sweep.trials.iloc[0])
    if trials < 2 or math.isnan(std):
        return 0
    half = t_half_width(std, trials, confidence=0.95)
    return 1 if mean - half > 1 else -1 if mean + half < 1 else 0


def _close(value, target, rel):
    return abs(value - target) <= rel * abs(target)


def _paper_section(t, c0):
    b = t.base
    lines = ["## The paper's protocol, as we read it", "",
             f"Cell {c0} (the base of the grid): W {b['weights']}, inputs {b['inputs']}, layer {b['shape']} "
             f"(OxCxKxK@H), padding {b['padding']}, Gamma fitted with {b['fit_loss'].upper()} on "
             f"{b['train_inputs']} input(s) per trial and scored on the same (the `train` split), "
             f"{int(t.sweep.trials.iloc[0])} trials (the paper: 100). `held-out` scores the same Gamma on "
             f"{int(t.sweep.heldout_inputs.iloc[0])} new inputs per trial. `expected` is the analytic "
             "expectation (`xnorpp_core/expectations.py`).", "",
             "| method | paper (Table 2) | train: mean ± std | held-out | relative to mean abs Y | expected | row |",
             "|---|---|---|---|---|---|---|"]
    for m in ("zero", "direct", "xnor", "xnor_alpha") + LEARNED:
        rid, hid = f"{c0}/{m}/train/l1", f"{c0}/{m}/heldout/l1"
        paper = TABLE2.get(m)
        paper = f"{paper[0]} ± {paper[1]}" if paper else "-"
        lines.append(f"| {LABELS[m]} | {paper} | {_f(t.v(rid))} ± {_f(t.v(rid, 'std'), 2)} | {_f(t.v(hid))} | "
                     f"{_f(t.v(rid, 'rel'))} | {_f(t.v(rid, 'expected'))} | {rid} |")
    return lines


def _order_section(t, c0):
    claims = t.claims.reset_index()
    lines = ["## Claim 1: the ordering Direct > XNOR > Case 1 > Case 3 > Case 4", ""]
    for split in ("train", "heldout"):
        sub = claims[(claims.split == split) & (claims.metric == "l1")]
        held = sub[sub.paper_order.astype(str) == "True"]
        lines.append(f"- {split}: Table 2's order of mean L1 distances holds in {len(held)} of {len(sub)} cells"
                     + (" (" + "; ".join(f"{r.cell_id}: {t.changes(r.cell_id)}, in {r.paper_order_trials:.0%} "
                                         f"of its trials {_cite(r.claim_id)}" for r in held.itertuples()) + ")"
                        if len(held) else "")
                     + f"; in the paper's protocol the order is {t.c(f'{c0}/{split}/l1', 'order')} "
                     + _cite(f"{c0}/{split}/l1") + ".")
    e1, e3 = t.v(f"{c0}/case1/train/l1", "expected"), t.v(f"{c0}/case3/train/l1", "expected")
    if t.base["padding"] == "0" and abs(e1 - e3) <= 1e-9 * abs(e1):
        lines += ["", f"Why: with padding 0 the best Gamma of every case is, in expectation, one scale for "
                  f"all outputs, so Cases 1, 3 and 4 share one expected distance ({_f(e1)} and {_f(e3)} "
                  + _cite(f"{c0}/case1/train/l1", f"{c0}/case3/train/l1") + "). Fitted and scored on the "
                  "same input, each case gains what its extra parameters can overfit, and the shapes are "
                  "nested (Case 1 is Case 4 with beta = gamma = 1, Case 4 a rank-1 Case 3), so at their optima "
                  "on the training input Case 3 <= Case 4 <= Case 1 (measured "
                  f"{_f(t.v(f'{c0}/case3/train/l1'))}, {_f(t.v(f'{c0}/case4/train/l1'))}, "
                  f"{_f(t.v(f'{c0}/case1/train/l1'))} "
                  + _cite(f"{c0}/case3/train/l1", f"{c0}/case4/train/l1", f"{c0}/case1/train/l1")
                  + (") and Table 2's Case 3 > Case 4 cannot happen."
                     if t.v(f"{c0}/case3/train/l1") <= t.v(f"{c0}/case4/train/l1") <= t.v(f"{c0}/case1/train/l1")
                     else "): the fits break this order, so at least one of them is far from its optimum.")
                  + " On held-out inputs, Case 3, Case 4 and "
                  "Case 1 score "
                  f"{_f(t.v(f'{c0}/case3/heldout/l1'))}, {_f(t.v(f'{c0}/case4/heldout/l1'))} and "
                  f"{_f(t.v(f'{c0}/case1/heldout/l1'))} "
                  + _cite(f"{c0}/case3/heldout/l1", f"{c0}/case4/heldout/l1", f"{c0}/case1/heldout/l1")
                  + (": the order reverses." if t.v(f"{c0}/case3/heldout/l1") > t.v(f"{c0}/case4/heldout/l1")
                     > t.v(f"{c0}/case1/heldout/l1") else ".")]
    return lines


def _ratio_section(t, c0):
    claims = t.claims.reset_index()
    lines = ["## Claim 2: XNOR / Case 1 of about 2.5 (0.095 / 0.038)", ""]
    r0 = f"{c0}/train/l1"
    lines.append(f"In the paper's protocol XNOR / Case 1 = {_f(t.c(r0, 'xnor_over_case1'))} ± "
                 f"{_f(t.c(r0, 'xnor_over_case1_std'), 2)} over trials, expected "
                 f"{_f(t.c(r0, 'xnor_over_case1_expected'))} {_cite(r0)}; on held-out inputs "
                 f"{_f(t.c(f'{c0}/heldout/l1', 'xnor_over_case1'))} {_cite(f'{c0}/heldout/l1')}."
                 + (" The expectation is 1 because XNOR-Net's alpha_o K is, in expectation, the L2-optimal "
                    "Case 1 scale: given W, the best scale of channel o is E[x sign x] alpha_o = E|x| alpha_o, "
                    "and E K = E|x|, for any inputs with P(x > 0) = 1/2."
                    if abs(t.c(r0, "xnor_over_case1_expected") - 1) < 1e-6 else ""))
    for metric in ("l1", "l2"):
        sub = claims[claims.metric == metric]
        top = sub.loc[sub.xnor_over_case1.idxmax()]
        low = sub.loc[sub.xnor_over_case1.idxmin()]
        cell = t.cells.set_index("cell_id").loc[top.cell_id]
        lines += ["", f"- {metric.upper()} metric, over all {sub.cell_id.nunique()} cells and both splits: from "
                  f"{_f(low.xnor_over_case1)} {_cite(low.claim_id)} to {_f(top.xnor_over_case1)} "
                  f"{_cite(top.claim_id)} (inputs {cell.inputs}, padding {cell.padding}, expected "
                  f"{_f(top.xnor_over_case1_expected)}); 2.5 is reached in "
                  f"{int((sub.xnor_over_case1 >= 2.5).sum())} of {len(sub)} rows."]
    uni = t.cell(inputs="uniform")
    if uni:
        r1 = t.c(f"{uni}/train/l1", "xnor_over_case1")
        lines += ["", f"All-positive inputs (cell {uni}, U[0, 1)) "
                  + ("break the equality (the 95 % interval over trials lies above 1): sign(I) = +1, B is one "
                     "constant per channel, Case 1 fits each channel's mean and XNOR-Net's fixed multiple of B "
                     "cannot. " if _side_of_one(t, f"{uni}/train/l1") > 0 else
                     "do not put XNOR-Net above Case 1 here (the 95 % interval over trials does not lie above 1), "
                     "although sign(I) = +1 makes B one constant per channel. ")
                  + f"XNOR / Case 1 = {_f(r1)} in L1 and "
                  f"{_f(t.c(f'{uni}/train/l2', 'xnor_over_case1'))} in L2 (mean squared) distance, expected "
                  f"{_f(t.c(f'{uni}/train/l1', 'xnor_over_case1_expected'))} and "
                  f"{_f(t.c(f'{uni}/train/l2', 'xnor_over_case1_expected'))} "
                  f"{_cite(f'{uni}/train/l1', f'{uni}/train/l2')} (for large n, sqrt(1 + 3 (1 - 2/pi)) = 1.45 "
                  "and its square)."]
    pads = [(p, t.cell(padding=p)) for p in ("1-zero", "1-minus_one")]
    if all(cid for _, cid in pads):
        lines += ["", "Padding 1: " + "; ".join(
            f"padding {p}: {_f(t.c(f'{cid}/train/l1', 'xnor_over_case1'))} (expected "
            f"{_f(t.c(f'{cid}/train/l1', 'xnor_over_case1_expected'))}) {_cite(f'{cid}/train/l1')}"
            for p, cid in pads) + "."]
        zero_pad, minus_pad = (_side_of_one(t, f"{cid}/train/l1") for _, cid in pads)
        words = {1: "above 1", -1: "below 1", 0: "not separable from 1"}
        lines[-1] += (f" Over trials (95 % interval) the ratio is {words[zero_pad]} with the 0 border and "
                      f"{words[minus_pad]} with the -1 border.")
        if zero_pad > 0:
            lines[-1] += (" With the 0 border K shrinks at the border where the best scale does not (XNOR-Net "
                          "under-scales the border).")
        if minus_pad < 0:
            lines[-1] += (" With the -1 border the best scale shrinks as K does, and a single Case 1 scale cannot "
                          "follow.")
    return lines


def _scale_section(t, c0):
    lines = ["## Claim 3: the absolute values 6.36, 0.095, 0.038", ""]
    zero, x0, k0 = f"{c0}/zero/train/l1", f"{c0}/xnor/train/l1", f"{c0}/case1/train/l1"
    gaussian = t.base["inputs"] == "gaussian"
    lines.append(f"In cell {c0}, mean|Y| = {_f(t.v(zero))} {_cite(zero)}: XNOR-Net's "
                 f"{_f(t.v(x0))} and Case 1's {_f(t.v(k0))} {_cite(x0, k0)} are "
                 f"{_f(t.v(x0, 'rel'))} and {_f(t.v(k0, 'rel'))} of it"
                 + (f", close to sqrt(1 - 4/pi^2) = {_f(BEST_SCALE_REL_ERROR_GAUSSIAN)}, the relative error of "
                    "the best scalar-scaled sign dot product of Gaussian vectors"
                    if gaussian and _close(t.v(k0, "rel"), BEST_SCALE_REL_ERROR_GAUSSIAN, 0.05) else "")
                 + ". No normalisation of the distance changes a ratio of two methods.")
    he = t.cell(weights="he")
    if he:
        xh = f"{he}/xnor/train/l1"
        fan_in = int(t.v(xh, "fan_in"))
        ratio = t.v(xh) / t.v(x0)
        lines += ["", f"The He layer (cell {he}) is the unit layer times sqrt(2 / {fan_in}) = "
                  f"{_f(math.sqrt(2 / fan_in))}"
                  + (", and so are its distances (every scaled method is equivariant)"
                     if _close(ratio, math.sqrt(2 / fan_in), 1e-3) else ", but its distances are not")
                  + f": XNOR-Net {_f(t.v(xh))} / {_f(t.v(x0))} = {_f(ratio)} {_cite(xh, x0)}."]
    implied = (TABLE2["xnor"][0] / t.v(x0), TABLE2["case1"][0] / t.v(k0))
    lines += ["", f"The paper's XNOR value would need W and I scaled by s_W s_I = {TABLE2['xnor'][0]} / "
              f"{_f(t.v(x0))} = {_f(implied[0], 3)} and its Case 1 value by {TABLE2['case1'][0]} / {_f(t.v(k0))} = "
              f"{_f(implied[1], 3)} {_cite(x0, k0)}"
              + (": no single scale gives both." if max(implied) > 1.1 * min(implied) else ".")]
    small = t.cell(weights="small")
    if small and gaussian:
        ds, d0 = f"{small}/direct/train/l1", f"{c0}/direct/train/l1"
        floor = BEST_SCALE_REL_ERROR_GAUSSIAN * t.v(ds)
        lines += ["", "Direct binarization has no scale, so it "
                  + ("does not follow" if t.v(ds) > 2 * 0.01 * t.v(d0) else "would not follow, yet here it does")
                  + f": {_f(t.v(d0))} in cell {c0} "
                  f"and {_f(t.v(ds))} with W ~ N(0, 0.01^2), where Y is negligible and the distance is mean|B| "
                  f"(expected {_f(t.v(ds, 'expected'))}) {_cite(d0, ds)}. Over all scales of W and I its minimum "
                  "is the error of the best multiple of Y as an approximation of B, "
                  f"{_f(BEST_SCALE_REL_ERROR_GAUSSIAN)} x mean|B| = {_f(floor)} {_cite(ds)}, "
                  + ("above" if floor > TABLE2["direct"][0] else "below") + " Table 2's 6.36."]
        one = t.cell(weights="small", shape="64x64x1x1@16")
        if one:
            d1 = f"{one}/direct/train/l1"
            near = _close(t.v(d1), TABLE2["direct"][0], 0.02)
            equal = _side_of_one(t, f"{one}/train/l1") == 0
            lines += ["", "A sum of n = 64 signs has E|B| = n C(n, n/2) / 2^n = "
                      f"{_f(64 * math.comb(64, 32) / 2 ** 64)}: with a 1x1 kernel over 64 channels and small "
                      f"weights, Direct = {_f(t.v(d1))} ± {_f(t.v(d1, 'std'), 2)} over trials (expected "
                      f"{_f(t.v(d1, 'expected'))}, below E|B| because Y, though small, is correlated with B) "
                      f"{_cite(d1)}, "
                      + ("within 2 % of Table 2's 6.36 ± 0.04. The Direct value thus fits a layer with 64 taps per "
                         "output and a small Y, not the 576 taps of 64x64x3x3" if near else
                         "more than 2 % from Table 2's 6.36 ± 0.04")
                      + "; XNOR / Case 1 there is "
                      f"{_f(t.c(f'{one}/train/l1', 'xnor_over_case1'))} {_cite(f'{one}/train/l1')}"
                      + (", not separable from 1 over trials (their ratio does not depend on scale)." if equal
                         else ", separable from 1 over trials.")]
    return lines


def _generalisation_section(t):
    if not any(len(_n_cells(t, loss)) > 1 for loss in ("l1", "l2")):
        return []
    lines = ["## Generalisation: fitted on N inputs, scored on held-out inputs", ""]
    for loss in ("l1", "l2"):
        ids = _n_cells(t, loss)
        if len(ids) < 2:
            continue
        expected = [t.v(f"{cid}/case2/heldout/{loss}", "expected") / t.v(f"{cid}/zero/heldout/{loss}", "expected")
                    for _, cid in ids]
        with_expected = not all(math.isnan(e) for e in expected)
        lines += [f"Fitted with {loss.upper()} on N inputs per trial, scored in {loss.upper()} on the held-out "
                  "inputs, relative to predicting zero (`rel`):", "",
                  "| N | Case 2 train | Case 2 held-out | " + ("Case 2 held-out, expected | " if with_expected else "")
                  + "Case 1 held-out | Case 3 held-out | XNOR-Net held-out | cell |",
                  "|---|---|---|---|---|---|---|" + ("---|" if with_expected else "")]
        for (n, cid), e in zip(ids, expected):
            def r(m, split="heldout"):
                return _f(t.v(f"{cid}/{m}/{split}/{loss}", "rel"))
            lines.append(f"| {n} | {r('case2', 'train')} | {r('case2')} | " + (f"{_f(e)} | " if with_expected else "")
                         + f"{r('case1')} | {r('case3')} | {r('xnor')} | {cid} |")
        first, last = ids[0][1], ids[-1][1]
        c2f, c2l = f"{first}/case2/heldout/{loss}", f"{last}/case2/heldout/{loss}"
        c1l = f"{last}/case1/heldout/{loss}"
        lines += ["", f"With N = {ids[0][0]} Case 2's held-out distance is {_f(t.v(c2f, 'rel'))} times that of "
                  f"predicting zero {_cite(c2f)}; with N = {ids[-1][0]} it is {_f(t.v(c2l))} against Case 1's "
                  f"{_f(t.v(c1l))} {_cite(c2l, c1l)}."
                  + (" The expectation of the least-squares fit (L2), gamma = sum y b / sum b^2 per element, "
                     "is a held-out excess of n r* E[1 / sum b^2] over the best static scale's r*, about "
                     "1 / (N - 2) for large N rather than the 1 / N of a fixed regressor: a sum of signs "
                     "is small too often." if loss == "l2" else ""), ""]
    c0 = t.cell()
    h = f"{c0}/heldout/l1"
    lines += [f"On held-out inputs XNOR-Net, whose K follows each input, and the static Case 1 scale are within "
              f"{_f(abs(t.c(h, 'xnor_over_case1') - 1) * 100, 2)} % of each other in the paper's protocol "
              f"(XNOR / Case 1 = {_f(t.c(h, 'xnor_over_case1'))} {_cite(h)})."]
    return lines


def _inputs_section(t):
    ids = [(d, t.cell(inputs=d)) for d in ("gaussian", "relu", "uniform", "laplace", "student_t")]
    ids = [(d, cid) for d, cid in ids if cid]
    if len(ids) < 2:
        return []
    lines = ["## Input distributions and layer shapes", "",
             "Relative L1 distances (over mean|Y|) on the training input, with their expectations; "
             "for P(x > 0) = 1/2 the best static scale leaves sqrt(1 - (2/pi) (E|x|)^2 / E x^2):", "",
             "| cell | inputs | shape | XNOR-Net | expected | Case 1 | expected | Case 4 | XNOR / Case 1 | "
             "held-out XNOR / Case 1 | order |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    shapes = [(s, t.cell(shape=s)) for s in t.cells["shape"].unique()]
    rows = [(d, t.base["shape"], cid) for d, cid in ids] + [(t.base["inputs"], s, cid) for s, cid in shapes
                                                            if cid and s != t.base["shape"]]
    for d, s, cid in rows:
        def rel(m, col="rel"):
            v = t.v(f"{cid}/{m}/train/l1", col)
            return v if col == "rel" else v / t.v(f"{cid}/zero/train/l1", "expected")
        lines.append(f"| {cid} | {d} | {s} | {_f(rel('xnor'))} | {_f(rel('xnor', 'expected'))} | {_f(rel('case1'))} "
                     f"| {_f(rel('case1', 'expected'))} | {_f(rel('case4'))} | "
                     f"{_f(t.c(f'{cid}/train/l1', 'xnor_over_case1'))} | "
                     f"{_f(t.c(f'{cid}/heldout/l1', 'xnor_over_case1'))} | {t.c(f'{cid}/train/l1', 'order')} |")
    held = [float(t.c(f"{cid}/heldout/l1", "xnor_over_case1")) for _, _, cid in rows]
    far = max(held, key=lambda r: abs(r - 1))
    lines += ["", "Rows: `<cell>/<method>/train/l1` of sweep.csv, `<cell>/train/l1` and `<cell>/heldout/l1` of "
              "claims.csv. XNOR-Net's K follows each held-out input; the static Case 1 scale does not"
              + (f", and for these i.i.d. inputs that makes little difference (held-out XNOR / Case 1 within 5 % "
                 f"of 1 in every row, farthest {_f(far)})." if abs(far - 1) <= 0.05 else
                 f"; held-out XNOR / Case 1 reaches {_f(far)}, more than 5 % from 1.")]
    return lines


def _evidence_section(t, config):
    fits = t.sweep[t.sweep.gap_max.notna()].reset_index()
    exact, search = fits[fits.evidence == "exact"], fits[fits.evidence != "exact"]
    tol = f"{config.tolerance:.1%}"
    lines = ["## Optimality evidence on the fits", "",
             f"Every learned fit (Adam, {len(fits)} cell-case pairs, {int(config.trials)} trials each) is compared "
             "with a reference in its own training loss (`sweep.csv` columns `evidence`, `reference`, `gap_min`, "
             "`gap_max`, `starts_near_best_min`, `lower_bound`, `gap_to_bound_min`, `within_tolerance`). Gaps are "
             "signed, (adam - reference) / reference, or relative to "
             f"{GAP_FLOOR:.1%} of mean|Y| (mean Y^2) when the reference is smaller; nothing is clamped.", ""]
    if len(exact):
        worst = exact.loc[exact.gap_max.idxmax()]
        ok = int((exact.within_tolerance.astype(str) == "True").sum())
        lines.append(f"- Cases 1-2, against their exact optimum (weighted median / least squares; a fit below it "
                     f"would stop the study as a solver error): {ok} of {len(exact)} fits within {tol}; the largest "
                     f"gap is {_f(worst.gap_max * 100, 2)} % {_cite(worst.row_id)}.")
    if len(search):
        n = int(search.starts.max())
        below = search[search.gap_min < 0]
        ok = int((search.within_tolerance.astype(str) == "True").sum())
        worst = search.loc[search.gap_max.idxmax()]
        lines.append(f"- Cases 3-4, against the best of {n} alternating exact-update searches from independent "
                     f"random starts (none from Adam; a search, not a proof): Adam is within {tol} of the best "
                     f"start in {ok} of {len(search)} fits (largest gap {_f(worst.gap_max * 100, 2)} % "
                     f"{_cite(worst.row_id)}).")
        if len(below):
            low = below.loc[below.gap_min.idxmin()]
            lines[-1] += (f" Adam ends below every start in some trial of {len(below)} of {len(search)} fits (by up "
                          f"to {_f(-low.gap_min * 100, 2)} % {_cite(low.row_id)}): there the alternating search "
                          "stalls above Adam's loss and bounds nothing.")
        else:
            lines[-1] += " Adam never ends below the best start."
        agree = search[search.starts_near_best_min >= 2]
        fewest = search.loc[search.starts_near_best_min.idxmin()]
        lines.append(f"- In {len(agree)} of {len(search)} Case 3-4 fits at least 2 starts reach the best in every "
                     f"trial (within a relative {NEAR_BEST:g}); the fewest is "
                     f"{int(fewest.starts_near_best_min)} of {n} "
                     f"{_cite(fewest.row_id)}" + (": a best reached by a single start suggests that more starts "
                                                  "could go lower still." if fewest.starts_near_best_min < 2
                                                  else "."))
        tight = search.loc[search.gap_to_bound_min.idxmin()]
        lines.append("- The proven lower bound of Cases 3-4 is the exact Case 2 optimum on the same inputs. Adam is "
                     f"at least {_f(tight.gap_to_bound_min, 3)} (relative) above it in every trial of every fit "
                     f"{_cite(tight.row_id)}" + (": the bound is loose, and proves little about how far Adam is "
                                                 "from the Case 3-4 optimum." if tight.gap_to_bound_min > 0.01
                                                 else ", so there the bound is nearly tight."))
    return lines


def _summary_section(t, c0, config):
    claims = t.claims.reset_index()
    l1 = claims[claims.metric == "l1"]
    top = l1.loc[l1.xnor_over_case1.idxmax()]
    held = l1[(l1.split == "heldout") & (l1.paper_order.astype(str) == "True")]
    train = l1[(l1.split == "train") & (l1.paper_order.astype(str) == "True")]
    x0, k0 = f"{c0}/xnor/train/l1", f"{c0}/case1/train/l1"
    fits = t.sweep[t.sweep.gap_max.notna()]
    reached = int((l1.xnor_over_case1 >= 2.5).sum())
    ratio = f"reached in {reached} of {len(l1)} L1 rows" if reached else "not reproduced in any cell"
    r0 = f"{c0}/train/l1"
    lines = ["## Summary", "",
             f"- Ratio XNOR / Case 1 of 2.5: {ratio}. In the paper's protocol it is "
             f"{_f(t.c(r0, 'xnor_over_case1'))} {_cite(r0)}"
             + ("; the analytic expectation is 1 for every input distribution with P(x > 0) = 1/2, at every "
                "scale, because XNOR-Net's alpha K is the best static scale in expectation"
                if abs(t.c(r0, "xnor_over_case1_expected") - 1) < 1e-6 else
                f"; its analytic expectation here is {_f(t.c(r0, 'xnor_over_case1_expected'))}")
             + f". The largest ratio in the grid is "
             f"{_f(top.xnor_over_case1)} {_cite(top.claim_id)} ({t.changes(top.cell_id)}).",
             f"- Ordering Direct > XNOR > Case 1 > Case 3 > Case 4: holds in {len(train)} cells on the training "
             f"input and {len(held)} on held-out inputs"
             + (" (" + ", ".join(f"{r.cell_id}: {t.changes(r.cell_id)}" for r in held.itertuples()) + ")"
                if len(held) else "") + "."]
    c1, c3 = (f"{c0}/case1/{{}}/l1", f"{c0}/case3/{{}}/l1")
    if t.v(c3.format("train")) < t.v(c1.format("train")) and t.v(c3.format("heldout")) > t.v(c1.format("heldout")):
        lines[-1] += (" In the paper's protocol Case 3 beats Case 1 only on the input it was fitted to, with its "
                      "extra parameters, and loses to it on held-out inputs "
                      + _cite(c3.format("train"), c1.format("train"), c3.format("heldout"), c1.format("heldout"))
                      + ".")
    else:
        lines[-1] += (" In the paper's protocol Case 3 against Case 1: "
                      f"{_f(t.v(c3.format('train')))} against {_f(t.v(c1.format('train')))} on the training input, "
                      f"{_f(t.v(c3.format('heldout')))} against {_f(t.v(c1.format('heldout')))} held out "
                      + _cite(c3.format("train"), c1.format("train"), c3.format("heldout"), c1.format("heldout"))
                      + ".")
    implied = (TABLE2["xnor"][0] / t.v(x0), TABLE2["case1"][0] / t.v(k0))
    he = t.cell(weights="he")
    follows = ""
    if he:
        scale = math.sqrt(2 / int(t.v(x0, "fan_in")))
        ratios = {m: t.v(f"{he}/{m}/train/l1") / t.v(f"{c0}/{m}/train/l1") for m in ("direct", "xnor") + LEARNED}
        scaled = all(_close(ratios[m], scale, 1e-2) for m in ("xnor",) + LEARNED)
        follows = (("XNOR-Net and Cases 1-4 scale with W and I" if scaled else
                    "XNOR-Net and Cases 1-4 do not all scale with W and I")
                   + (", Direct does not" if not _close(ratios["direct"], scale, 1e-2) else ", nor does Direct")
                   + f" (cell {he} against {c0}); ")
    lines.append(f"- Absolute values 6.36, 0.095, 0.038: {follows}scaling the paper's protocol "
                 f"({_f(t.v(x0))} and {_f(t.v(k0))} {_cite(x0, k0)}) to "
                 f"XNOR-Net's 0.095 and to Case 1's 0.038 takes s_W s_I = {_f(implied[0], 3)} and "
                 f"{_f(implied[1], 3)}" + (": no single scale gives both." if max(implied) > 1.1 * min(implied)
                                           else "."))
    one = t.cell(weights="small", shape="64x64x1x1@16")
    if one:
        d1 = f"{one}/direct/train/l1"
        lines[-1] += (f" Direct is {_f(t.v(d1))} ± {_f(t.v(d1, 'std'), 2)} {_cite(d1)} for a sum of 64 signs "
                      "(a 1x1 kernel on 64 channels) with small weights, against Table 2's 6.36 ± 0.04.")
    h2 = f"{c0}/case2/heldout/l1"
    fitted = t.v(f"{c0}/case2/train/l1", "rel")
    lines.append("- Case 2, one scale per output element: "
                 + ("reproduces Y on the single input it is fitted to" if fitted < 0.1 else
                    "does not reproduce Y even on the input it is fitted to")
                 + f" ({_f(fitted)} x mean|Y| {_cite(f'{c0}/case2/train/l1')}) and "
                 f"scores {_f(t.v(h2, 'rel'))} x mean|Y| on held-out inputs {_cite(h2)}.")
    exact, search = fits[fits.evidence == "exact"], fits[fits.evidence != "exact"]
    lines.append(f"- Fits: {int((exact.within_tolerance.astype(str) == 'True').sum())} of {len(exact)} Case 1-2 fits "
                 f"within {config.tolerance:.1%} of their exact optimum; in Cases 3-4, Adam is within "
                 f"{config.tolerance:.1%} of the best of {int(search.starts.max()) if len(search) else 0} independent "
                 f"alternating starts in {int((search.within_tolerance.astype(str) == 'True').sum())} of "
                 f"{len(search)} fits and below every start in some trial of {int((search.gap_min < 0).sum())} "
                 "(see the evidence section).")
    return lines


def analysis(sweep, claims, cells, config, run_info, figure_names=()):
    """The markdown analysis (README.md of the study's output folder), showing ``figure_names``."""
    t = _Tables(sweep, claims, cells, config.base)
    c0 = t.cell()
    env = run_info["environment"]
    lines = ["# Protocol study of Table 2", "",
             "Generated by `python -m studies.protocol_sweep` (configuration, seed, versions and hardware in "
             f"`run.json`): {len(cells)} cells (`cells.csv`) of {config.trials} trials, "
             f"{run_info['seconds']:.0f} s on {env['cpu']} ({env['torch_threads']} torch thread"
             f"{'s' if env['torch_threads'] != 1 else ''}).", "",
             "Numbers in brackets cite rows: `[c00/xnor/train/l1]` is the `row_id` of a row of `sweep.csv` "
             "(cell / method / split / metric), `[c00/train/l1]` the `claim_id` of a row of `claims.csv`. "
             "`train` scores Gamma on the inputs it was fitted to (the paper's protocol when N = 1), "
             "`heldout` on new inputs of the same distribution.", ""]
    for section in (_summary_section(t, c0, config), _paper_section(t, c0), _order_section(t, c0),
                    _ratio_section(t, c0), _scale_section(t, c0), _generalisation_section(t), _inputs_section(t),
                    _evidence_section(t, config)):
        lines += section + [""] if section else []
    lines += ["## Figures", ""] + [f"![{FIGURES[name]}]({name})\n" for name in figure_names]
    return "\n".join(lines)


def _ratio_figure(claims, t):
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * claims.cell_id.nunique()), 3.6))
    for split, marker in (("train", "o"), ("heldout", "s")):
        sub = claims[(claims.split == split) & (claims.metric == "l1")]
        ax.errorbar(sub.cell_id, sub.xnor_over_case1, yerr=sub.xnor_over_case1_std, fmt=marker, ms=4,
                    label=f"measured, {split}", alpha=0.8)
    sub = claims[(claims.split == "train") & (claims.metric == "l1")]
    ax.plot(sub.cell_id, sub.xnor_over_case1_expected, "k_", ms=12, label="expected")
    ax.axhline(TABLE2["xnor"][0] / TABLE2["case1"][0], color="r", ls="--", label="paper (0.095 / 0.038)")
    ax.axhline(1, color="grey", lw=0.5)
    ax.set_ylabel("XNOR / Case 1, L1")
    ids = list(dict.fromkeys(claims[(claims.split == "train") & (claims.metric == "l1")].cell_id))
    ax.set_xticks(range(len(ids)), [f"{t.changes(cid).replace('the base protocol', 'base')} ({cid})" for cid in ids])
    ax.set_xlabel("condition: what differs from the base protocol (cell of cells.csv)")
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    ax.legend(fontsize=7)
    return fig


def _n_cells(t, loss):
    """``[(N, cell_id)]`` of the base protocol fitted with ``loss`` on N inputs, for every N that was run."""
    ids = [(int(n), t.cell(train_inputs=int(n), fit_loss=loss)) for n in sorted(t.cells.train_inputs.unique())]
    return [(n, cid) for n, cid in ids if cid]


def _generalisation_figure(t):
    losses = [loss for loss in ("l1", "l2") if len(_n_cells(t, loss)) > 1]
    fig, axes = plt.subplots(1, len(losses), figsize=(4.5 * len(losses), 3.4), squeeze=False)
    for ax, loss in zip(axes[0], losses):
        ids = _n_cells(t, loss)
        ns = [n for n, _ in ids]
        for m in ("xnor", "case1", "case2", "case3", "case4"):
            ax.plot(ns, [t.v(f"{cid}/{m}/heldout/{loss}", "rel") for _, cid in ids], "o-", label=LABELS[m])
        exp = [t.v(f"{cid}/case2/heldout/{loss}", "expected") / t.v(f"{cid}/zero/heldout/{loss}", "expected")
               for _, cid in ids]
        ax.plot(ns, exp, "k--", label="Case 2, expected")
        ax.plot(ns, [t.v(f"{cid}/case2/train/{loss}", "rel") for _, cid in ids], "x:", label="Case 2, train")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N training inputs per trial")
        ax.set_ylabel(f"held-out {loss.upper()} / predicting zero")
        ax.set_title(f"fitted with {loss.upper()}", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _inputs_figure(t):
    ids = [(d, t.cell(inputs=d)) for d in ("gaussian", "relu", "uniform", "laplace", "student_t")]
    ids = [(d, cid) for d, cid in ids if cid]
    methods = ("direct", "xnor", "xnor_alpha", "case1", "case3", "case4")
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        xs = [i + (j - len(methods) / 2) * width for i in range(len(ids))]
        ax.bar(xs, [t.v(f"{cid}/{m}/train/l1", "rel") for _, cid in ids], width, label=LABELS[m])
        ax.plot(xs, [t.v(f"{cid}/{m}/train/l1", "expected") / t.v(f"{cid}/zero/train/l1", "expected")
                     for _, cid in ids], "k_", ms=8)
    ax.set_xticks(range(len(ids)), [f"{d}\n{cid}" for d, cid in ids])
    ax.set_ylabel("L1 / mean|Y| (train); - expected")
    ax.legend(fontsize=7, ncol=3)
    return fig


def _scale_figure(sweep):
    sub = sweep[(sweep.split == "train") & (sweep.metric == "l1") & (sweep.inputs == "gaussian")
                & (sweep.padding == 0) & (sweep.train_inputs == 1) & (sweep.fit_loss == "l1")]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for m, marker in (("direct", "o"), ("xnor", "s"), ("case1", "^")):
        s = sub[sub.method == m]
        ax.scatter(s.cell_id + " " + s.weights + " " + s["shape"], s["mean"], marker=marker, label=LABELS[m])
    for m, color in (("direct", "C0"), ("xnor", "C1"), ("case1", "C2")):
        ax.axhline(TABLE2[m][0], color=color, ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("L1 distance (train); -- paper")
    ax.set_xlabel("cell, weight scale, layer (Gaussian inputs, padding 0, fitted on one input)")
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    ax.legend(fontsize=7)
    return fig


FIGURES = {"xnor_over_case1.png": "XNOR / Case 1 in every cell, measured and expected",
           "generalisation.png": "held-out distances against the number N of training inputs",
           "inputs.png": "relative distances by input distribution",
           "scale.png": "absolute distances against the paper's, by weight scale and layer shape"}


def figures(sweep, claims, cells, config):
    """``{file name: matplotlib figure}`` for the study's output folder (those its grid supports)."""
    t = _Tables(sweep, claims, cells, config.base)
    out = {"xnor_over_case1.png": _ratio_figure(claims, t)}
    if any(len(_n_cells(t, loss)) > 1 for loss in ("l1", "l2")):
        out["generalisation.png"] = _generalisation_figure(t)
    if cells.inputs.nunique() > 1:
        out["inputs.png"] = _inputs_figure(t)
    out["scale.png"] = _scale_figure(sweep)
    return out
