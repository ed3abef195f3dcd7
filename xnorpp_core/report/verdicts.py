"""Every verdict of the report: the rule that chooses it, its constants, and the rule in words.

Each ``verdict_*`` function is pure: numbers in, one markdown sentence out, and the
sentence can come out either way (the tests feed numbers that reverse each one).
Each threshold is a module constant read by its verdict and by ``rules_text``, the
section of ``results/REPORT.md`` that states every rule, so the page and the
verdicts cannot disagree.
"""

import math

from ..reconstruction.trained import ORDER_OUTCOMES
from .seeds import CONFIDENCE as INTERVAL  # the interval over seeds that must exclude zero for an ordering

__all__ = ["TABLE2_TOLERANCE", "KERNEL_REACHES", "SIZE_TOLERANCE", "TRAINS_ABOVE", "STEP_LIMIT", "INTERVAL",
           "verdict_table2_ratio", "verdict_nested_order", "verdict_protocol", "verdict_rows", "verdict_formula",
           "verdict_kernel", "verdict_compression", "verdict_network", "verdict_weakest", "verdict_sanitizer",
           "verdict_training", "verdict_train_step", "verdict_trained_ratio", "verdict_trained_order", "rules_text"]

TABLE2_TOLERANCE = 0.20  # relative distance to the paper's XNOR-Net / Case 1 factor within which it is reproduced
KERNEL_REACHES = 0.90  # share of Eq. 9's predicted speed-up at which a measured layer reaches the prediction
SIZE_TOLERANCE = 0.05  # relative shortfall from a claimed storage ratio within which the claim holds
TRAINS_ABOVE = 50.0  # top-1 (%) on the digits (10 classes, chance 10%) above which the default run trains
STEP_LIMIT = 1.25  # a binary training step within this multiple of the real step's time


def _x(value):
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


# ---------------------------------------------------------------- Table 2 and the protocol study
def verdict_table2_ratio(ours_ratio, paper_ratio):
    """XNOR-Net's L1 over Case 1's: within ``TABLE2_TOLERANCE`` (relative) of the paper's factor, or not."""
    if abs(ours_ratio / paper_ratio - 1) <= TABLE2_TOLERANCE:
        return f"**reproduced**: Case 1 is {ours_ratio:.2f}x closer to the real layer than XNOR-Net"
    if ours_ratio < 1:
        return (f"**contradicted**: Case 1 is farther from the real layer than XNOR-Net "
                f"({ours_ratio:.3f}x), the paper has it {paper_ratio:.1f}x closer")
    return (f"**not reproduced**: Case 1 is {ours_ratio:.3f}x closer than XNOR-Net, "
            f"the paper {paper_ratio:.1f}x")


def verdict_nested_order(case3, case4, paper_case3, paper_case4):
    """Table 2's order of Case 4 and Case 3, ours against the paper's.

    Case 4's Gamma is a special Case 3 Gamma, so between global optima on the fitted input Case 3 <= Case 4;
    Case 3 is not convex, so a fit that stops short of its optimum may still land above Case 4.
    """
    def order(c3, c4):
        return "Case 4 below Case 3" if c4 < c3 else "Case 3 at or below Case 4"

    if (case4 < case3) == (paper_case4 < paper_case3):
        return f"**holds**: {order(case3, case4)} ({case4:.4g} vs {case3:.4g}), as the paper prints"
    text = (f"**not reproduced**: ours has {order(case3, case4)} ({case3:.4g} vs {case4:.4g}), the paper "
            f"{order(paper_case3, paper_case4)}")
    if case3 <= case4:
        text += ("; between global optima on the fitted input the nesting allows only ours, so the paper's "
                 "order needs a Case 3 fit short of its optimum")
    return text


def verdict_protocol(best_l1, best_cell, paper_ratio, orders):
    """The protocol study against Table 2, on the paper's metric.

    ``best_l1``: the largest XNOR-Net / Case 1 ratio of L1 distances over cells and splits (the paper's 2.5 is a
    ratio of L1 distances), in cell ``best_cell``. ``orders``: metric -> (rows of that metric, [(row id, share
    of its trials in which the order holds), ...] for the rows whose mean distances follow Table 2's order).
    """
    if best_l1 >= paper_ratio:
        reach = f"a cell reaches the paper's L1 ratio {paper_ratio:.1f} (best {best_l1:.2f}, {best_cell})"
    else:
        reach = f"no cell reaches the paper's L1 ratio {paper_ratio:.1f} (best {best_l1:.2f}, {best_cell})"
    parts = []
    for metric, (rows, held) in orders.items():
        if held:
            where = ", ".join(f"{row} in {share:.0%} of its trials" for row, share in held)
            parts.append(f"{metric.upper()}: {len(held)} of {rows} cell-split rows ({where})")
        else:
            parts.append(f"{metric.upper()}: none of {rows} cell-split rows")
    return f"{reach}; Table 2's full order of mean distances in " + "; ".join(parts)


# ---------------------------------------------------------------- Tables 1 and 3
def verdict_rows(stats, paper_gaps):
    """Each method's ordering against XNOR-Net beside the paper's sign, summarised in one sentence.

    ``stats``: ``row_statistics`` records (``low``/``high``: the ``INTERVAL`` interval of the paired difference
    over seeds); ``paper_gaps``: (arch, method) -> the paper's top-1 minus XNOR-Net's.
    """
    agree, disagree, unseparated, missing = [], [], [], []
    for r in stats:
        key = (r["arch"], r["method"])
        if r["method"] == "xnor" or key not in paper_gaps:
            continue
        name = f"{r['arch']} {r['method']}"
        if r["diff_n"] < 2:
            missing.append(name)
        elif r["low"] > 0 or r["high"] < 0:
            (agree if (r["low"] > 0) == (paper_gaps[key] > 0) else disagree).append(name)
        else:
            unseparated.append(name)
    parts = []
    if agree:
        parts.append(f"same side of XNOR-Net as the paper: {', '.join(agree)}")
    if disagree:
        parts.append(f"**opposite side** of XNOR-Net from the paper: {', '.join(disagree)}")
    if unseparated:
        parts.append(f"not separable from XNOR-Net (the {INTERVAL:.0%} interval contains zero): "
                     f"{', '.join(unseparated)}")
    if missing:
        parts.append(f"fewer than 2 paired seeds, no interval: {', '.join(missing)}")
    return "; ".join(parts) or "no row compared"


# ---------------------------------------------------------------- speed and size
def verdict_formula(value, printed):
    """A formula's value against the paper's printed digits: rounded, truncated, or neither."""
    digits = len(f"{printed}".split(".")[-1]) if "." in f"{printed}" else 0
    if round(value, digits) == printed:
        return f"**matches** the printed {printed}"
    if math.floor(value * 10 ** digits) / 10 ** digits == printed:
        return (f"**matches when truncated, not rounded** ({value:.{digits + 1}f} rounds to "
                f"{value:.{digits}f}, printed {printed})")
    if abs(value - printed) < 10 ** -digits:
        return (f"**differs in the last printed digit** ({value:.{digits + 1}f} rounds to {value:.{digits}f}, "
                f"printed {printed})")
    return f"**differs** from the printed {printed}: the formula gives {value:.{digits + 1}f}"


def verdict_kernel(measured, predicted):
    """A measured speed-up against the formula's prediction."""
    share = measured / predicted
    if share >= KERNEL_REACHES:
        return f"**reaches** the predicted {predicted:.1f}x ({share:.0%})"
    if measured > 1:
        return f"**faster, below the prediction**: {share:.0%} of the predicted {predicted:.1f}x"
    return f"**slower** than float32 (predicted {predicted:.1f}x faster)"


def _holds(ratio, claimed):
    return ratio >= claimed * (1 - SIZE_TOLERANCE)


def verdict_compression(whole_low, whole_high, weights, claimed=32.0, space_claimed=64.0):
    """Whole-model storage ratios (packed against float32) and the binary weights' alone, against the paper's
    ~32x model compression (Introduction) and ~64x space saving by bit-packing (Section 4.3)."""
    span = _x(whole_low) if whole_low == whole_high else f"{_x(whole_low)} to {_x(whole_high)}"
    if _holds(whole_low, claimed):
        model = f"~{claimed:.0f}x model compression **holds** for the whole model ({span})"
    elif _holds(whole_high, claimed):
        model = f"~{claimed:.0f}x model compression **holds for some methods only** (whole model {span})"
    else:
        model = (f"~{claimed:.0f}x model compression **not reached** by the whole model ({span}); "
                 f"the binary weights alone give {_x(weights)}")
    best = max(whole_high, weights)
    space = (f"~{space_claimed:.0f}x space saving **holds** ({_x(best)})" if _holds(best, space_claimed) else
             f"~{space_claimed:.0f}x space saving **not reached** (at most {_x(best)}, the binary weights alone)")
    return f"{model}; {space}"


# The whole-network row: the headline setting, and the band within which a speed-up counts as "about as fast".
NETWORK_SETTING = {"threads": 1, "batch": 1}
NETWORK_PRECISIONS = ("fp32", "bf16", "int8")
NETWORK_EQUAL_BAND = 0.1  # a median-call ratio within 1 +- this is "about as fast"


_BANDS = {"faster": "than", "about as fast": "as", "slower": "than"}  # each band and the word before the other


def _band(ratio):
    """``faster`` / ``about as fast`` / ``slower`` for a median-call speed-up."""
    if ratio > 1 + NETWORK_EQUAL_BAND:
        return "faster"
    return "slower" if ratio < 1 - NETWORK_EQUAL_BAND else "about as fast"


def verdict_network(ratios, layer=None):
    """The packed network against the fastest form of each precision, by the median call.

    ``ratios``: ``{precision: (median-call speed-up, fastest-call speed-up)}``, each the least over the packed
    networks at the headline setting (precisions not timed are absent); ``layer``: the single binary layer's
    speed-up over float32 at the same thread count, set beside the fastest-call fp32 ratio."""
    bands = {b: [p for p in NETWORK_PRECISIONS if p in ratios and _band(ratios[p][0]) == b] for b in _BANDS}
    words = [f"**{b}** {_BANDS[b]} {' and '.join(ps)}" for b, ps in bands.items() if ps]
    text = "; ".join(words) + " by the median call (" + ", ".join(
        f"{ratios[p][0]:.1f}x {p}" for p in NETWORK_PRECISIONS if p in ratios) + ")"
    if layer is not None and "fp32" in ratios:
        relation = "less than" if ratios["fp32"][1] < layer else "at or above"
        text += (f"; over fp32 by the fastest call {ratios['fp32'][1]:.1f}x, {relation} the single binary layer's "
                 f"{layer:.1f}x at the same thread count")
    return text


def verdict_weakest(ratio, precision, setting, settings, which=""):
    """The least median-call speed-up over ``settings`` committed settings (``which``: what they share) and every
    precision: ``ratio`` over ``precision`` at ``setting``, in the bands of ``verdict_network``."""
    band = _band(ratio)
    return (f"weakest of the {settings} settings{' ' + which if which else ''}: **{band}** {_BANDS[band]} "
            f"{precision} ({ratio:.3g}x, {setting})")


# Table 2 on trained layers: the split and the layers the verdicts rest on.
TRAINED_SPLIT = "heldout"
TRAINED_LAYERS = "binarized"


def verdict_trained_ratio(intervals, paper_ratio, where):
    """XNOR-Net / Case 1 on each layer of a trained model, against the paper's factor.

    ``intervals``: one ``(low, high)`` per layer, the 95% interval over images of the per-image ratio.
    A layer reaches the paper's factor when its interval's upper end does; Case 1 is closer than XNOR-Net
    when the interval lies above 1, farther when below 1. ``where`` names the layers and images.
    """
    n = len(intervals)
    reach = sum(high >= paper_ratio for _, high in intervals)
    closer = sum(low > 1 for low, _ in intervals)
    farther = sum(high < 1 for _, high in intervals)
    counts = (f"Case 1 closer than XNOR-Net on {closer}, farther on {farther}, not separable on "
              f"{n - closer - farther}")
    if n and reach == n:
        return f"**holds** on all {n} {where}: every interval reaches {paper_ratio:.1f}x; {counts}"
    if reach:
        return f"**holds on {reach} of {n}** {where} (interval reaching {paper_ratio:.1f}x); {counts}"
    return f"**not reproduced** on any of the {n} {where}: no interval reaches {paper_ratio:.1f}x; {counts}"


def verdict_trained_order(outcomes, steps, where):
    """Table 2's order on each layer of a trained model, counted by outcome. ``outcomes``: one of
    ``ORDER_OUTCOMES`` per layer (``reconstruction.trained.order_outcome``); ``steps``: {step name: (layers whose
    interval lies above zero, layers whose interval lies below zero)}."""
    n = len(outcomes)
    count = {o: sum(v == o for v in outcomes) for o in ORDER_OUTCOMES}
    if n and count["holds"] == n:
        text = f"**holds** on all {n} {where}"
    else:
        text = ", ".join(f"**{o}** on {count[o]}" for o in ORDER_OUTCOMES) + f" of the {n} {where}"
    short = []
    for step, (above, below) in steps.items():
        parts = ([f"reversed on {below}"] if below else []) + (
            [f"not separable on {n - above - below}"] if n - above - below else [])
        if parts:
            short.append(f"{step} " + ", ".join(parts))
    if short:
        text += "; steps not above zero: " + "; ".join(short)
    return text


def verdict_sanitizer(exit_status, reports, failed):
    """The compiled kernels' tests under AddressSanitizer and UndefinedBehaviorSanitizer: *no report* when the run
    exited 0 with no sanitizer report and no failed test, else what went wrong."""
    if exit_status == 0 and not reports and not failed:
        return "**passes with no sanitizer report** (exit status 0)"
    what = [f"{reports} sanitizer report{'s' if reports != 1 else ''}" if reports else "",
            f"{failed} failed test{'s' if failed != 1 else ''}" if failed else "",
            "no test count (the run stopped before its end)" if failed is None else ""]
    return f"**fails**: exit status {exit_status}" + "".join(f", {w}" for w in what if w)


def verdict_training(top1):
    """The default digits run: does the code path of Tables 1 and 3 learn at all?"""
    if top1 > TRAINS_ABOVE:
        return "trains: the code path of Tables 1 and 3 learns on a CPU"
    return f"**does not train**: top-1 {top1:.1f}% is not above {TRAINS_ABOVE:.0f}%"


def verdict_train_step(ratios):
    """Binary training-step times over the real step's (method -> ratio)."""
    over = [m for m, r in ratios.items() if r > STEP_LIMIT]
    if not over:
        return f"every method within {STEP_LIMIT}x of the real step"
    return f"{', '.join(over)} above {STEP_LIMIT}x the real step"


# ---------------------------------------------------------------- the rules, in words
def rules_text():
    """The report's section stating each verdict's rule with its constants (markdown bullets)."""
    pct = f"{TABLE2_TOLERANCE:.0%}"
    return "\n".join([
        f"- **Table 2, learned scale against XNOR-Net**: *reproduced* when our XNOR-Net / Case 1 ratio of mean L1 "
        f"distances is within {pct} (relative) of the paper's; *contradicted* when it is below 1; else "
        "*not reproduced*.",
        "- **Table 2, Case 4 against Case 3**: *holds* when our mean L1 distances order the two as the paper "
        "prints; else *not reproduced*, with the nesting argument where ours has Case 3 at or below Case 4 "
        "(it binds global optima only; Case 3 is not convex).",
        "- **Protocol study**: a cell *reaches* the paper's factor when its XNOR-Net / Case 1 ratio of L1 "
        "distances (the paper's metric) is at least the paper's; rows that follow Table 2's full order of "
        "mean distances are counted per metric (L1, L2), each with the share of its trials in which the "
        "order holds.",
        f"- **Tables 1 and 3**: a method is on one side of XNOR-Net only when the {INTERVAL:.0%} interval of its "
        "paired difference over seeds excludes zero; otherwise *not separable*.",
        "- **Eq. 8/9**: *matches* when the formula rounded to the printed digits gives the printed value; "
        "*matches when truncated* when truncating does; *differs in the last printed digit* when the two are "
        "within one unit of that digit; else *differs*.",
        f"- **Packed binary convolution**: *reaches* the prediction when the measured speed-up is at least "
        f"{KERNEL_REACHES:.0%} of Eq. 9's; *faster, below the prediction* when above 1x; else *slower*.",
        f"- **Model size**: a claimed storage ratio (~32x, ~64x) *holds* when ours is at least "
        f"{1 - SIZE_TOLERANCE:.0%} of it; the whole-model ratio counts every stored byte (binary weights as bits, scales, real layers) "
        "against the float32 model.",
        f"- **Whole network**: at {NETWORK_SETTING['threads']} thread, batch {NETWORK_SETTING['batch']}, for each "
        "option of the real layers (float, int8), the least speed-up over its packed networks (methods) against the "
        "fastest form of each precision (fp32, bf16, int8), by the "
        f"median call: *faster* above {1 + NETWORK_EQUAL_BAND:.1f}x, *slower* below {1 - NETWORK_EQUAL_BAND:.1f}x, "
        "else *about as fast*; the fastest-call fp32 ratio is set beside the single binary layer's speed-up at the "
        "same thread count, when both ran on the same CPU; beside the headline, the weakest committed setting (the "
        "least median-call speed-up over every setting and precision, in the same bands) and, when its timings are "
        "disturbed, the weakest of the undisturbed ones. The digits trade-off (trained networks) states the same "
        "bands for each packed form at each input size, at 1 thread, batch 1.",
        "- **Table 2 on trained layers**: on the binarized layers, scored on the held-out images, XNOR-Net / Case 1 "
        "*holds* on a layer when the 95% interval over images of the per-image ratio reaches the paper's factor; "
        "Case 1 is *closer* (*farther*) when the interval lies above (below) 1; Table 2's order *holds* on a "
        "layer when every step's interval (the per-image difference of distances) lies above zero, is *reversed* "
        "when some step's lies below zero, and is *not separable* otherwise (an interval touching zero separates "
        "nothing); each model's verdict counts its layers by outcome, and *holds on all* only when every layer "
        "holds.",
        f"- **Default training run**: *trains* when the final top-1 is above {TRAINS_ABOVE:.0f}% (chance 10%).",
        f"- **Training step**: every method *within* {STEP_LIMIT}x when no binary method's step takes more than "
        f"{STEP_LIMIT} times the real one's.",
        "- **Sanitizers**: the compiled kernels' tests *pass with no sanitizer report* when the run under "
        "AddressSanitizer and UndefinedBehaviorSanitizer exits 0 with no report and no failed test.",
        "- **Busy machine**: a timing row at t threads is marked *disturbed* when the 1-minute load average "
        "before the run (from its `run.json`, unrounded) plus t exceeds the cores (`provenance.disturbed_threads`; "
        "each timing command records the mark, `disturbed_threads`, beside the load); a verdict drawn from a "
        "disturbed thread count says so beside it, and one from a run that recorded no load says that.",
    ])
