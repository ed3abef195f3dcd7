"""The reproduction, artifact by artifact: the paper's value, ours, the verdict, the file and machine behind it.

Each ``read_*`` function reads one artifact's committed result files under a
``results`` folder and returns a ``Finding`` (or a ``Finding`` that says the
artifact has not been run). Readers look columns up by name and keep to the few
they need, so that a result file may gain or rename other columns. Every verdict
is chosen by a condition on the numbers it cites (``verdict_*`` functions, pure,
tested with numbers that reverse each finding); no sentence is fixed prose.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import paper
from ..reconstruction.protocol import PAPER_ORDER
from ..speedup import CONSISTENT_MODEL, speedup_ours, speedup_xnor
from .machine import machine_label
from .tables import collect_runs, row_statistics

__all__ = ["Finding", "ReportError", "read_findings", "READERS", "verdict_table2_ratio", "verdict_nested_order",
           "verdict_formula", "verdict_kernel", "verdict_network", "verdict_rows", "verdict_weights",
           "verdict_protocol", "verdict_trained_ratio", "verdict_trained_order", "TRAINED_SPLIT", "TRAINED_LAYERS"]


class ReportError(ValueError):
    """A result file the report cannot read (missing column, unexpected shape), named with its reader."""


@dataclass(frozen=True)
class Finding:
    """One artifact of the paper and what this toolkit measured for it (markdown-ready strings)."""

    artifact: str
    paper: str
    ours: str
    verdict: str
    files: tuple = ()
    command: str = ""
    machine: str = ""
    details: tuple = field(default_factory=tuple)  # extra lines for the report

    @property
    def ran(self):
        return bool(self.files)


def _missing(artifact, paper_value, files, command):
    return Finding(artifact, paper_value, "not run", f"not run yet (`{command}`)", (), command, "",
                   (f"expected file: `{files}`",))


def _env(path):
    path = Path(path)
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    return record.get("environment", {})


def _column(frame, *names):
    """The first of ``names`` that ``frame`` has, else ``KeyError`` naming them all."""
    for name in names:
        if name in frame.columns:
            return frame[name]
    raise KeyError(f"none of the columns {', '.join(names)} in the result file (it has {', '.join(frame.columns)})")


# ---------------------------------------------------------------- verdicts (pure, tested)
def verdict_table2_ratio(ours_ratio, paper_ratio, tolerance=0.2):
    """XNOR-Net's L1 over Case 1's: within ``tolerance`` (relative) of the paper's factor, or not."""
    if abs(ours_ratio / paper_ratio - 1) <= tolerance:
        return f"**reproduced**: Case 1 is {ours_ratio:.2f}x closer to the real layer than XNOR-Net"
    if ours_ratio < 1:
        return (f"**contradicted**: Case 1 is farther from the real layer than XNOR-Net "
                f"({ours_ratio:.3f}x), the paper has it {paper_ratio:.1f}x closer")
    return (f"**not reproduced**: Case 1 is {ours_ratio:.3f}x closer than XNOR-Net, "
            f"the paper {paper_ratio:.1f}x")


def verdict_nested_order(case3, case4, paper_case3, paper_case4):
    """Table 2's Case 4 < Case 3, against ours (Case 3's shape contains Case 4's)."""
    paper_says = "Case 4 below Case 3" if paper_case4 < paper_case3 else "Case 4 not below Case 3"
    if (case4 < case3) == (paper_case4 < paper_case3):
        return f"**holds**: {paper_says}, as the paper prints"
    return (f"**contradicted**: ours has Case 3 {'<=' if case3 <= case4 else '>'} Case 4 "
            f"({case3:.4g} vs {case4:.4g}); the paper prints {paper_says}")


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
    if share >= 0.9:
        return f"**reaches** the predicted {predicted:.1f}x ({share:.0%})"
    if measured > 1:
        return f"**faster, below the prediction**: {share:.0%} of the predicted {predicted:.1f}x"
    return f"**slower** than float32 (predicted {predicted:.1f}x faster)"


def verdict_network(low, high, layer=None):
    """The whole packed network's speed-up over the real one, beside the single layer's."""
    if high <= 1:
        return f"**slower** than the real-valued network ({low:.1f}x to {high:.1f}x)"
    text = f"{low:.1f}x to {high:.1f}x faster than the real-valued network"
    if layer is not None and high < layer:
        text += f", less than the single binary layer's {layer:.1f}x"
    return text


def _busy(run_json, threads):
    """A note naming the thread counts that ran on more threads than the cores other processes left idle (the
    1-minute load average before the run, rounded, from its ``run.json``); empty when none did."""
    record = json.loads(Path(run_json).read_text()) if Path(run_json).exists() else {}
    load, cores = record.get("load_average_before"), record.get("environment", {}).get("cpu_count")
    busy = sorted({int(t) for t in threads if load and cores and round(load[0]) + int(t) > cores})
    if not busy:
        return ""
    return (f" ({' and '.join(map(str, busy))} thread{'s' if busy != [1] else ''} beside a load average of "
            f"{load[0]:.1f} on {cores} cores: disturbed timings)")


def _arithmetic(run_json):
    """Which arithmetic the packed backend of a run used, from its ``run.json``: int8 tiles or XNOR-popcount."""
    record = json.loads(Path(run_json).read_text()) if Path(run_json).exists() else {}
    backend = record.get("backend") or {}
    return "int8 tiles (AMX)" if backend.get("amx") else "XNOR-popcount"


def _threads(values):
    """``1`` or ``"1 and 2"``: the thread counts of a benchmark's rows."""
    values = sorted({int(v) for v in values})
    return values[0] if len(values) == 1 else " and ".join(map(str, values))


def verdict_weights(ratio, claimed=32.0):
    """Storage ratio of the binary weights against the introduction's ~32x."""
    if abs(ratio - claimed) / claimed < 0.05:
        return f"**holds**: {ratio:.1f}x"
    return f"**differs**: {ratio:.1f}x against ~{claimed:.0f}x"


def verdict_rows(stats, paper_gaps):
    """Each method's ordering against XNOR-Net beside the paper's sign, summarised in one sentence.

    ``stats``: ``row_statistics`` records; ``paper_gaps``: (arch, method) -> the paper's top-1 minus XNOR-Net's.
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
        parts.append(f"not separable from XNOR-Net (the 95% interval contains zero): {', '.join(unseparated)}")
    if missing:
        parts.append(f"fewer than 2 paired seeds, no interval: {', '.join(missing)}")
    return "; ".join(parts) or "no row compared"


# ---------------------------------------------------------------- readers, one per artifact
def read_table2(results):
    folder = Path(results) / "reconstruction"
    command = "python -m studies.reconstruction --trials 100"
    paper_ratio = paper.TABLE2["xnor"][0] / paper.TABLE2["case1"][0]
    paper_text = (f"XNOR-Net L1 {paper.TABLE2['xnor'][0]}, Case 1 {paper.TABLE2['case1'][0]} "
                  f"({paper_ratio:.1f}x closer)")
    if not (folder / "table2.csv").exists():
        return [_missing("Table 2: learned scale against XNOR-Net", paper_text, folder / "table2.csv", command)]
    t = pd.read_csv(folder / "table2.csv").set_index("method")
    l1 = _column(t, "l1_mean")
    rel = _column(t, "rel_l1_mean", "rel_l1")
    ratio = l1["xnor"] / l1["case1"]
    machine = machine_label(_env(folder / "run.json"))
    files = (str(folder / "table2.md"), str(folder / "table2.csv"))
    ours = (f"XNOR-Net L1 {l1['xnor']:.3f}, Case 1 {l1['case1']:.3f} ({ratio:.3f}x); "
            f"L1 / mean|Y| {rel['xnor']:.2f} and {rel['case1']:.2f}")
    first = Finding("Table 2: learned scale against XNOR-Net", paper_text, ours,
                    verdict_table2_ratio(ratio, paper_ratio), files, command, machine,
                    (f"absolute L1 over the paper's: XNOR-Net {l1['xnor'] / paper.TABLE2['xnor'][0]:.0f}x, "
                     f"Case 1 {l1['case1'] / paper.TABLE2['case1'][0]:.0f}x",))
    second = Finding("Table 2: Case 4 against Case 3",
                     f"Case 4 {paper.TABLE2['case4'][0]} < Case 3 {paper.TABLE2['case3'][0]}",
                     f"Case 4 {l1['case4']:.4f}, Case 3 {l1['case3']:.4f}",
                     verdict_nested_order(l1["case3"], l1["case4"], paper.TABLE2["case3"][0],
                                          paper.TABLE2["case4"][0]), files, command, machine,
                     ("Case 3's shape contains Case 4's, so on the input it is fitted to its optimum cannot be "
                      "larger; the protocol study scores held-out inputs too.",))
    return [first, second]


def read_speedup(results):
    """Eq. 8/9 for the paper's headline layer, computed by ``xnorpp_core.speedup`` (the formulas, no timing)."""
    folder = Path(results) / "speedup"
    paper_text = f"Eq. 8 {paper.SPEEDUP_256_3x3['xnor']}x, Eq. 9 {paper.SPEEDUP_256_3x3['ours']}x (o = 256, 3x3)"
    xnor, ours = speedup_xnor(256, 3, 3), speedup_ours(256, 3, 3)
    verdict = (f"Eq. 8 {verdict_formula(xnor, paper.SPEEDUP_256_3x3['xnor'])}; "
               f"Eq. 9 {verdict_formula(ours, paper.SPEEDUP_256_3x3['ours'])}")
    details = (f"charging a float operation as one multiplication (64 packed binary operations): "
               f"XNOR-Net {speedup_xnor(256, 3, 3, float_cost=CONSISTENT_MODEL):.1f}x, "
               f"ours {speedup_ours(256, 3, 3, float_cost=CONSISTENT_MODEL):.1f}x",)
    return [Finding("Eq. 8/9: theoretical speed-up", paper_text, f"Eq. 8 {xnor:.3f}x, Eq. 9 {ours:.3f}x", verdict,
                    (str(folder / "figure1.png"), str(folder / "speedup.csv")), "python -m studies.speedup",
                    "computed from the formulas (no timing)", details)]


def read_kernel(results):
    folder = Path(results) / "kernel_bench"
    command = "python -m studies.kernel_bench"
    paper_text = "~58x to 64x for a binary convolution on CPU (Eq. 9: 64x)"
    if not (folder / "kernel_bench.csv").exists():
        return [_missing("Packed binary convolution, measured", paper_text, folder / "kernel_bench.csv", command)]
    k = pd.read_csv(folder / "kernel_bench.csv")
    env = _env(folder / "run.json")
    out = []
    layer = k[_column(k, "paper_layer").astype(bool)]
    lines = []
    for _, row in layer.sort_values("threads").iterrows():
        lines.append((int(row["threads"]), float(row["speedup"]), float(row["eq9"])))
    if lines:
        threads, measured, predicted = lines[0]
        ours = "; ".join(f"{s:.1f}x on {t} thread{'s' if t > 1 else ''}" for t, s, _ in lines) \
            + f", {_arithmetic(folder / 'run.json')}" + _busy(folder / "run.json", [t for t, _, _ in lines])
        out.append(Finding("Packed binary convolution, measured (256->256, 3x3, 14x14, packing included)",
                           paper_text, ours, verdict_kernel(measured, predicted),
                           (str(folder / "kernel_bench.md"), str(folder / "kernel_bench.csv")), command,
                           machine_label(env, threads=_threads([t for t, _, _ in lines]))))
    if (folder / "model_size.csv").exists():
        size = pd.read_csv(folder / "model_size.csv").set_index("method")
        ratio = _column(size, "compression_binary_weights").dropna()
        if len(ratio):
            out.append(Finding("Binary weights, stored as bits", "~32x smaller than float32",
                               (f"{ratio.min():.1f}x" if ratio.min() == ratio.max()
                                else f"{ratio.min():.1f}x to {ratio.max():.1f}x")
                               + " (ResNet-18, every packable method)",
                               verdict_weights(float(ratio.min())), (str(folder / "model_size.csv"),),
                               command, "a count of bytes (no timing)"))
    net = Path(results) / "inference"
    if (net / "speedup.csv").exists():
        m = pd.read_csv(net / "speedup.csv")
        speed = _column(m, "speedup_vs_best_real")
        parts = [f"{r['method']} batch {int(r['batch'])}, {int(r['threads'])} thread(s): "
                 f"{r['speedup_vs_best_real']:.1f}x" for _, r in m.iterrows()]
        out.append(Finding("Whole binary ResNet-18, packed, against the real-valued one at its best",
                           "not measured in the paper",
                           "; ".join(parts) + f"; {_arithmetic(net / 'run.json')}"
                           + _busy(net / "run.json", m["threads"]),
                           verdict_network(float(speed.min()), float(speed.max()),
                                           float(layer["speedup"].min()) if len(layer) else None),
                           (str(net / "summary.md"), str(net / "speedup.csv")), "python -m studies.bench_inference",
                           machine_label(_env(net / "run.json"), threads=_threads(m["threads"]))))
    return out


def _paper_gaps(grid):
    if grid == "table1":
        return {("resnet18", m): v[0] - paper.TABLE1["xnor"][0] for m, v in paper.TABLE1.items()}
    return {(a, m): v[0] - rows["xnor"][0] for a, rows in paper.TABLE3.items() for m, v in rows.items()}


def read_grids(results):
    runs_root = Path(results) / "runs"
    out = []
    for grid, title, paper_text in (
            ("table1", "Table 1: ResNet-18, Cases 1-4 against XNOR-Net",
             "every case above XNOR-Net on ImageNet (+4.3 to +5.9 top-1)"),
            ("table3", "Table 3: AlexNet and ResNet-18, BNN / XNOR-Net / ours / real",
             "BNN < XNOR-Net < ours < real on ImageNet")):
        command = f"python -m studies.notebooks {grid}"
        runs = collect_runs(runs_root) if runs_root.is_dir() else pd.DataFrame()
        if runs.empty:
            out.append(_missing(title, paper_text, runs_root, command))
            continue
        stats = row_statistics(runs, grid)
        ran = [r for r in stats if r["n"]]
        datasets = sorted({r["dataset"] for r in ran})
        seeds = sorted({r["n"] for r in ran})
        epochs = sorted({r["epochs"] for r in ran})
        ours = (f"{len(ran)} of {len(stats)} rows on the {', '.join(datasets)}, {'/'.join(map(str, seeds))} seeds, "
                f"{'/'.join(map(str, epochs))} epochs")
        details = tuple(
            f"{r['arch']} {r['method']}: top-1 {r['mean']:.1f}" + (f" ± {r['std']:.1f}" if r["n"] > 1 else "")
            + f" over {r['n']} seed(s)"
            + (f"; minus XNOR-Net {r['diff']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}], {r['ordering']}"
               if r["diff_n"] >= 2 else "") for r in ran)
        machines = sorted(set(runs.machine))
        out.append(Finding(title, paper_text, ours, verdict_rows(stats, _paper_gaps(grid)),
                           (str(Path(results) / "tables" / f"{grid}.md"), str(runs_root)), command,
                           "; ".join(machines), details))
    return out


def read_training(results):
    folder = Path(results) / "train" / "digits-resnet18-case4"
    command = "python -m studies.train"
    if not (folder / "summary.json").exists():
        return [_missing("Default training run (digits)", "not in the paper", folder / "summary.json", command)]
    summary = json.loads((folder / "summary.json").read_text())
    final = summary["final"]
    return [Finding("Default training run: binary ResNet-18, Case 4, embedded digits", "not in the paper",
                    f"top-1 {final['val_top1']:.2f}% after {final['epoch']} epochs (chance 10%)",
                    "trains: the code path of Tables 1 and 3 learns on a CPU" if final["val_top1"] > 50 else
                    "**does not train** beyond chance on the digits",
                    (str(folder / "summary.json"),), command, machine_label(summary.get("environment", {})))]


def read_train_step(results):
    out = []
    for device in ("cpu", "cuda"):
        folder = Path(results) / "benchmarks" / "train_step" / device
        if not (folder / "benchmark.csv").exists():
            continue
        b = pd.read_csv(folder / "benchmark.csv").set_index("method")
        ratio = _column(b, "time_vs_real")
        binary = ratio.drop(index="real", errors="ignore")
        slowest = binary.idxmax()
        out.append(Finding(f"Training step, binary ResNet-18 against real ({device})", "not measured in the paper",
                           f"{binary.min():.2f}x to {binary.max():.2f}x the real step (slowest: {slowest})",
                           "every method within 1.25x of the real step" if binary.max() <= 1.25 else
                           f"{', '.join(binary[binary > 1.25].index)} above 1.25x the real step",
                           (str(folder / "benchmark.md"),), f"python -m studies.bench_train --device {device}",
                           machine_label(_env(folder / "run.json"))))
    return out


def verdict_protocol(best_ratio, paper_ratio, cells_with_order, cells):
    """The protocol study: does any cell reach the paper's XNOR-Net / Case 1 factor or its full ordering?"""
    reach = (f"a cell reaches the paper's {paper_ratio:.1f}x (best {best_ratio:.2f}x)" if best_ratio >= paper_ratio
             else f"no cell reaches the paper's {paper_ratio:.1f}x (best {best_ratio:.2f}x)")
    order = (f"Table 2's full ordering in {cells_with_order} of {cells} cell-split-metric rows" if cells_with_order
             else "Table 2's full ordering in none of its rows")
    return f"{reach}; {order}"


def read_protocol(results):
    folder = Path(results) / "protocol_sweep"
    command = "python -m studies.protocol_sweep"
    paper_ratio = paper.TABLE2["xnor"][0] / paper.TABLE2["case1"][0]
    title = "Protocol study: conditions around Table 2's protocol"
    paper_text = f"XNOR-Net / Case 1 = {paper_ratio:.1f}; order Direct > XNOR-Net > Case 1 > Case 3 > Case 4"
    if not (folder / "claims.csv").exists():
        return [_missing(title, paper_text, folder / "claims.csv", command)]
    c = pd.read_csv(folder / "claims.csv")
    ratio = _column(c, "xnor_over_case1")
    order = _column(c, "paper_order").astype(bool)
    cells = c["cell_id"].nunique() if "cell_id" in c.columns else len(c)
    return [Finding(title, paper_text, f"{cells} cells; XNOR-Net / Case 1 from {ratio.min():.2f} to {ratio.max():.2f}",
                    verdict_protocol(float(ratio.max()), paper_ratio, int(order.sum()), len(c)),
                    (str(folder / "README.md"), str(folder / "claims.csv")), command,
                    machine_label(_env(folder / "run.json")))]

# The verdicts on trained layers rest on the held-out images (a learned Gamma is static; the images it was
# fitted to flatter it) and on the convolutions a binary network of that architecture binarizes.
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


def verdict_trained_order(order_holds, steps, where):
    """Table 2's order on each layer of a trained model. ``order_holds``: one bool per layer (every step's
    interval above zero); ``steps``: {step name: (layers whose interval lies above zero, below zero)}."""
    n = len(order_holds)
    held = sum(bool(v) for v in order_holds)
    text = ("**holds**: " if n and held == n else "**does not hold**: ") + (
        f"Table 2's order holds on {held} of {n} {where}" if held
        else f"Table 2's order holds on none of the {n} {where}")
    missing = [f"{step} on {n - above}" + (f" (reversed on {below})" if below else "")
               for step, (above, below) in steps.items() if above < n]
    if missing:
        text += "; steps whose interval is not above zero: " + ", ".join(missing)
    return text


def read_trained_layers(results):
    """Table 2 on the convolutions of trained networks (``python -m studies.trained_layers``)."""
    folder = Path(results) / "reconstruction" / "trained"
    command = "python -m studies.trained_layers"
    paper_ratio = paper.TABLE2["xnor"][0] / paper.TABLE2["case1"][0]
    titles = ("Table 2 on trained layers: XNOR-Net against Case 1",
              "Table 2 on trained layers: the order of the methods")
    if not (folder / "claims.csv").exists():
        return [_missing(titles[0], f"{paper_ratio:.1f}x on random layers", folder / "claims.csv", command)]
    c = pd.read_csv(folder / "claims.csv")
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    command = run.get("command", command)
    images = {s: int(v) for s, v in c.groupby("split")["images"].first().items()}
    chosen = c[(_column(c, "split") == TRAINED_SPLIT) & _column(c, TRAINED_LAYERS).astype(bool)]
    files = (str(folder / "trained_layers.md"), str(folder / "claims.csv"), str(folder / "trained_layers.png"))
    machine = machine_label(run.get("environment", {}))
    ratio, order, ours_ratio, ours_order, details = [], [], [], [], []
    for model, rows in chosen.groupby("model", sort=False):
        where = f"binarized layers ({images.get(TRAINED_SPLIT, 0)} held-out images)"
        r = _column(rows, "xnor_over_case1")
        ratio.append(f"{model}: " + verdict_trained_ratio(
            list(zip(_column(rows, "xnor_over_case1_low"), _column(rows, "xnor_over_case1_high"))), paper_ratio,
            where))
        ours_ratio.append(f"{model}: {r.min():.2f}x to {r.max():.2f}x over {len(rows)} binarized layers")
        steps = {f"{a} > {b}": (int((_column(rows, f"{a}_minus_{b}_low") > 0).sum()),
                                int((_column(rows, f"{a}_minus_{b}_high") < 0).sum()))
                 for a, b in zip(PAPER_ORDER[:-1], PAPER_ORDER[1:])}
        holds = _column(rows, "paper_order").astype(bool)
        order.append(f"{model}: " + verdict_trained_order(list(holds), steps, where))
        ours_order.append(f"{model}: Table 2's order on {int(holds.sum())} of {len(rows)} binarized layers")
        fit = c[(c.model == model) & (c.split != TRAINED_SPLIT) & c[TRAINED_LAYERS].astype(bool)]
        details.append(f"{model}, on the {images.get('train', 0)} images Gamma was fitted to: XNOR-Net / Case 1 "
                       f"{fit.xnor_over_case1.min():.3f}x to {fit.xnor_over_case1.max():.3f}x")
    for m in run.get("models", []):
        if m.get("val_top1") is not None:
            details.append(f"{m['name']}: validation top-1 {m['val_top1']:.1f}%, {m['layers']} convolutions scored")
    return [Finding(titles[0], f"XNOR-Net / Case 1 = {paper_ratio:.1f} on random layers",
                    "; ".join(ours_ratio), "; ".join(ratio), files, command, machine, tuple(details)),
            Finding(titles[1], "Direct > XNOR-Net > Case 1 > Case 3 > Case 4 on random layers",
                    "; ".join(ours_order), "; ".join(order), files, command, machine)]


READERS = (read_table2, read_protocol, read_trained_layers, read_grids, read_speedup, read_kernel, read_training,
           read_train_step)


def read_findings(results):
    """Every artifact's ``Finding``, in the report's order; paths relative to ``results``' parent."""
    results = Path(results)
    found = []
    for reader in READERS:
        try:
            found += reader(results)
        except (KeyError, ValueError, IndexError, json.JSONDecodeError) as e:
            raise ReportError(f"{reader.__name__} cannot read {results}: {e}") from e
    root = results.resolve().parent

    def rel(p):
        p = Path(p).resolve()
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    return [Finding(f.artifact, f.paper, f.ours, f.verdict, tuple(rel(p) for p in f.files), f.command, f.machine,
                    f.details) for f in found]
