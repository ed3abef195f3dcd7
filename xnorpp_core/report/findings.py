"""The reproduction, artifact by artifact: the paper's value, ours, the verdict, the file and machine behind it.

Each ``read_*`` function reads one artifact's committed result files under a
``results`` folder and returns a ``Finding`` (or a ``Finding`` that says the
artifact has not been run). Readers look columns up by name and keep to the few
they need, so that a result file may gain or rename other columns. Every verdict
is chosen by a condition on the numbers it cites (``xnorpp_core.report.verdicts``:
pure functions, their thresholds and the rules in words); no sentence is fixed
prose. The command of each finding is the one its ``run.json`` records, where it
records one.
"""

import dataclasses
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paper
from ..provenance import disturbed_text
from ..reconstruction.protocol import PAPER_ORDER
from ..reconstruction.trained import CLAIM_KEYS, claims_from_images
from ..speedup import CONSISTENT_MODEL, speedup_ours, speedup_xnor
from ..training import grids
from ..training.data import NATIVE_SIZE
from .machine import machine_label
from .tables import collect_runs, row_statistics
from .verdicts import (NETWORK_PRECISIONS, NETWORK_SETTING, TRAINED_LAYERS, TRAINED_SPLIT, verdict_compression,
                       verdict_formula, verdict_kernel, verdict_nested_order, verdict_network, verdict_protocol,
                       verdict_rows, verdict_sanitizer, verdict_table2_ratio, verdict_train_step,
                       verdict_trained_order, verdict_trained_ratio, verdict_training, verdict_weakest)

__all__ = ["Finding", "ReportError", "read_findings", "READERS", "FASHION_MNIST"]


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
    brief: str = ""  # the at-a-glance table's "here" cell, where ``ours`` is too long for it
    glance: bool = True  # a row of the at-a-glance table (else a section of the report only)

    @property
    def ran(self):
        return bool(self.files)


def _missing(artifact, paper_value, files, command):
    return Finding(artifact, paper_value, "not run", f"not run yet (`{command}`)", (), command, "",
                   (f"expected file: `{files}`",))


def _record(path):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def _env(path):
    return _record(path).get("environment", {})


def _command(path, default):
    """The command a run's record (``run.json``, ``summary.json``) says wrote it, else ``default``."""
    return _record(path).get("command") or default


def _column(frame, *names):
    """The first of ``names`` that ``frame`` has, else ``KeyError`` naming them all."""
    for name in names:
        if name in frame.columns:
            return frame[name]
    raise KeyError(f"none of the columns {', '.join(names)} in the result file (it has {', '.join(frame.columns)})")


def _network_ratios(frame):
    """``{precision: (median ratio, fastest ratio)}`` per row of a bench_inference ``speedup.csv`` (files written
    before bf16 and int8 were timed have fp32 only, as ``speedup_vs_best_real``)."""
    if "speedup_vs_fp32_median" not in frame.columns:
        frame = frame.rename(columns={"speedup_vs_best_real_median": "speedup_vs_fp32_median",
                                      "speedup_vs_best_real": "speedup_vs_fp32"})
    return [{p: (float(r[f"speedup_vs_{p}_median"]), float(r[f"speedup_vs_{p}"])) for p in NETWORK_PRECISIONS
             if f"speedup_vs_{p}_median" in frame.columns and not pd.isna(r[f"speedup_vs_{p}_median"])}
            for _, r in frame.iterrows()]


def _network_label(row):
    real = row.get("real_layers", "float")
    label = f"{row['method']}" + ("" if real == "float" or pd.isna(real) else f" ({real} real layers)")
    return label + f", {int(row['threads'])} thread{'s' if int(row['threads']) > 1 else ''}, batch {int(row['batch'])}"


def _network_text(label, ratios):
    return f"{label}: " + ", ".join(f"{m:.1f}x ({f:.1f}x) over {p}" for p, (m, f) in ratios.items())


def _busy(run_json, threads):
    """A note naming the thread counts that ran on more threads than the cores other processes left idle
    (``provenance.disturbed_threads`` on the load average before the run, from its ``run.json``); empty when none
    did; a note that it cannot be told when the run recorded no load."""
    record = _record(run_json)
    load, cores = record.get("load_average_before"), record.get("environment", {}).get("cpu_count")
    if not load:
        return " (load average before the run not recorded: disturbed timings cannot be ruled out)"
    text = disturbed_text(load[0], cores, threads)
    return f" ({text})" if text else ""


def _arithmetic(run_json):
    """Which arithmetic the packed backend of a run used, from its ``run.json``: int8 tiles or XNOR-popcount."""
    backend = _record(run_json).get("backend") or {}
    return "int8 tiles (AMX)" if backend.get("amx") else "XNOR-popcount"


def _bytes(n):
    """``0 B``, ``15.4 kB``, ``6.02 MB``: a byte count for a sentence."""
    n = float(n)
    if n >= 1e6:
        return f"{n / 1e6:.2f} MB"
    return f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n:.0f} B"


def _threads(values):
    """``1`` or ``"1 and 2"``: the thread counts of a benchmark's rows."""
    values = sorted({int(v) for v in values})
    return values[0] if len(values) == 1 else " and ".join(map(str, values))


# ---------------------------------------------------------------- readers, one per artifact
def read_table2(results):
    folder = Path(results) / "reconstruction"
    command = _command(folder / "run.json", "python -m studies.reconstruction --trials 100")
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
                     _nesting_details(t))
    return [first, second]


def _nesting_details(t):
    """What the fits' evidence in table2.csv says about the nesting argument (Case 3 contains Case 4)."""
    lines = ["Case 4's Gamma is a rank-1 Case 3 Gamma, so between global optima on the fitted input Case 3 "
             "cannot exceed Case 4; the protocol study scores held-out inputs too."]
    if {"starts_near_best_min", "starts", "gap_to_bound_mean"} <= set(t.columns):
        case = {m: t.loc[m] for m in ("case3", "case4")}
        lines.append("Neither fit is proven optimal (Cases 3-4 are not convex): in the worst trial "
                     + " and ".join(f"{r['starts_near_best_min']:.0f} of {r['starts']:.0f} independent starts "
                                    f"ended near the best for {m}" for m, r in case.items())
                     + "; Adam's loss is on average "
                     + " and ".join(f"{1 + r['gap_to_bound_mean']:.1f}x" for r in case.values())
                     + " the proven lower bound (the exact Case 2 optimum), which is therefore loose.")
    return tuple(lines)


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
    command = _command(folder / "run.json", "python -m studies.kernel_bench")
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
                           paper_text, ours,
                           verdict_kernel(measured, predicted) + _busy(folder / "run.json", [threads]),
                           (str(folder / "kernel_bench.md"), str(folder / "kernel_bench.csv")), command,
                           machine_label(env, threads=_threads([t for t, _, _ in lines]))))
    if (Path(results) / "model_size" / "model_size.csv").exists():
        out.append(_model_size(Path(results)))
    net = Path(results) / "inference"
    if (net / "speedup.csv").exists():
        out.append(_read_network(net, layer))
    return out


def _model_size(results):
    """The model file of the binary ResNet-18 against the float32 real one (``model_size.csv``), and the exported
    file of the default digits run (``evaluation.json``)."""
    folder = results / "model_size"
    size = pd.read_csv(folder / "model_size.csv").set_index("method")
    whole = _column(size, "compression_vs_real").dropna()
    weights = _column(size, "compression_binary_weights").dropna()
    scales, int8 = _column(size, "scales"), _column(size, "int8_real_layers")
    ours = ("the model file against the float32 real-valued ResNet-18: "
            + "; ".join(f"{method} {ratio:.2f}x (scales {_bytes(scales[method])})" for method, ratio in whole.items())
            + f" (each file also holds the real layers' int8 form, {_bytes(int8.max())}); binary weights alone "
              f"{weights.min():.1f}x")
    files = [str(folder / "model_size.csv")]
    evaluation = results / "inference" / "digits" / "evaluation.json"
    if evaluation.exists():
        e = json.loads(evaluation.read_text())
        b = e["size_budget"]
        ours += (f"; the exported model file of the default digits run ({e['arch']} {e['method']}) holds "
                 f"{_bytes(e['model_file_bytes'])}, {e['model_file_bytes'] / b['total']:.2f}x the bytes of its "
                 f"tensors (packed weights {_bytes(b['packed_weights'])}, scales {_bytes(b['scales'])}, real "
                 f"layers {_bytes(b['real_layers'])}, int8 real layers {_bytes(b['int8_real_layers'])})")
        files.append(str(evaluation))
    return Finding("Model size: binary ResNet-18 stored packed, against float32",
                   "~32x model compression (Introduction, after XNOR-Net); ~64x space saving by bit-packing "
                   "(Section 4.3)", ours,
                   verdict_compression(float(whole.min()), float(whole.max()), float(weights.min())),
                   tuple(files), _command(folder / "run.json", "python -m studies.model_size"),
                   "a count of bytes (no timing)")


def _read_network(net, layer):
    """The whole packed network against the fastest real form of each precision (``studies.bench_inference``),
    beside the single binary layer's rows of ``kernel_bench.csv`` (``layer``, or None) when they ran on its CPU."""
    m = pd.read_csv(net / "speedup.csv")
    single = None
    if layer is not None and "cpu" in layer and set(layer["cpu"]) == set(m["cpu"]):
        single = dict(zip(layer["threads"].astype(int), layer["speedup"].astype(float))).get(
            NETWORK_SETTING["threads"])
    _column(m, "speedup_vs_fp32", "speedup_vs_best_real")
    ratios = _network_ratios(m)
    headline = (m["threads"] == NETWORK_SETTING["threads"]) & (m["batch"] == NETWORK_SETTING["batch"])
    if not headline.any():
        headline = m.index == m.index[0]
    rows = [(_network_label(r), q, r.get("real_layers", "float")) for (_, r), q, h in
            zip(m.iterrows(), ratios, headline) if h]
    options = list(dict.fromkeys("float" if pd.isna(o) else o for _, _, o in rows))  # real-layer options, in order
    worst = {}  # per option: {precision: least (median, fastest) ratio}
    for option in options:
        group = [q for _, q, o in rows if ("float" if pd.isna(o) else o) == option]
        worst[option] = {p: (min(q[p][0] for q in group), min(q[p][1] for q in group)) for p in group[0]}
    if len(options) == 1:
        verdict = verdict_network(worst[options[0]], single)
    else:
        verdict = "; ".join(f"{o} real layers: " + verdict_network(worst[o], single if i == 0 else None)
                            for i, o in enumerate(options))
    threads = sorted({int(t) for t in m.loc[headline, "threads"]})
    verdict += _busy(net / "run.json", threads)
    # beside the headline, the least median-call speed-up of every committed setting and precision, and where that
    # one's timings are disturbed, the least of those that are not
    cells = sorted((q[p][0], p, i) for i, q in enumerate(ratios) for p in q)
    least, precision, row = cells[0]
    verdict += "; " + verdict_weakest(least, precision, _network_label(m.iloc[row]), len(m))
    note = _busy(net / "run.json", [m.iloc[row]["threads"]])
    if note:
        verdict += note
        quiet = [c for c in cells if not _busy(net / "run.json", [m.iloc[c[2]]["threads"]])]
        if quiet:
            verdict += "; " + verdict_weakest(quiet[0][0], quiet[0][1], _network_label(m.iloc[quiet[0][2]]),
                                              len({c[2] for c in quiet}), "with undisturbed timings")
    brief = (f"{len(m)} settings: " + "; ".join(
        f"{name} {' and '.join(map(str, sorted(set(m[column]))))}" for name, column in
        (("methods", "method"), ("real layers", "real_layers"), ("threads", "threads"), ("batch", "batch"))
        if column in m.columns) + f"; the verdict at {_threads(threads)} thread{'s' if threads != [1] else ''}, "
             f"batch {NETWORK_SETTING['batch']} "
             "(the least over the methods), beside the weakest setting")
    # the longest path names the int8 real layers' arithmetic too, where they were timed
    path = max(m["path"].astype(str), key=len) if "path" in m.columns else _arithmetic(net / "run.json")
    ours = ("; ".join(_network_text(label, q) for label, q, _ in rows)
            + " (median call, fastest call in brackets)"
            + "".join(f"; {p} not timed" for p in NETWORK_PRECISIONS if p not in worst[options[0]])
            + f"; packed path: {path}" + _busy(net / "run.json", m["threads"]))
    details = ("every setting, median call (fastest call) over the fastest form of each precision: "
               + "; ".join(_network_text(_network_label(r), q) for (_, r), q in zip(m.iterrows(), ratios)),)
    return Finding("Whole binary ResNet-18, packed, against the real-valued one in fp32, bf16 and int8",
                   "not measured in the paper", ours, verdict,
                   (str(net / "summary.md"), str(net / "speedup.csv")),
                   _command(net / "run.json", "python -m studies.bench_inference"),
                   machine_label(_env(net / "run.json"), threads=_threads(m["threads"])), details, brief)


def read_tradeoff(results):
    """Top-1 and latency of the digits-trained networks, real against packed binary (``studies.deploy_tradeoff``):
    each packed form against the fastest form of each precision at each input size, by the median call."""
    folder = Path(results) / "inference" / "digits" / "tradeoff"
    title = "Digits, trained: the real ResNet-18 in fp32, bf16 and int8 against the packed binary one"
    command = _command(folder / "run.json", "python -m studies.deploy_tradeoff")
    if not (folder / "tradeoff.csv").exists():
        return [_missing(title, "not measured in the paper", folder / "tradeoff.csv", command)]
    t = pd.read_csv(folder / "tradeoff.csv")
    sizes = sorted(int(c.rsplit("_", 1)[1]) for c in t.columns if c.startswith("median_ms_"))
    packed = t[_column(t, "form").astype(str).str.startswith("packed")]
    real = t[t.form == "fp32_real_eager"]
    ours, verdicts = [], []
    for _, net in packed.iterrows():
        what = {"packed": "float"}.get(net.form, net.form.removeprefix("packed_").removesuffix("real")) + " real layers"
        clauses = []
        for size in sizes:
            ratios = {}
            for p in NETWORK_PRECISIONS:
                rows = t[t.precision == p]
                if not rows.empty:
                    ratios[p] = (float(rows[f"median_ms_{size}"].min() / net[f"median_ms_{size}"]),
                                 float(rows[f"fastest_ms_{size}"].min() / net[f"fastest_ms_{size}"]))
            clauses.append(f"at {size}x{size} {verdict_network(ratios)}")
        verdicts.append(f"{what}: " + "; ".join(clauses))
        ours.append(f"{what}: top-1 {net.top1:.1f}%, median call "
                    + ", ".join(f"{net[f'median_ms_{size}']:.2f} ms at {size}x{size}" for size in sizes))
    top1 = f"; the real network in fp32 {real.top1.iloc[0]:.1f}%" if len(real) else ""
    return [Finding(title, "not measured in the paper",
                    "; ".join(ours) + top1 + " (one training seed each: no ordering of accuracy is claimed)",
                    "; ".join(verdicts) + _busy(folder / "run.json", [1]),
                    (str(folder / "tradeoff.md"), str(folder / "tradeoff.csv")), command,
                    machine_label(_env(folder / "run.json"), threads=1))]


def read_sanitizer(results):
    """The compiled kernels' tests under AddressSanitizer and UndefinedBehaviorSanitizer (``scripts/sanitize.sh``'s
    record); a section of the report and a sentence of docs/packed.md, not a row of the at-a-glance table."""
    record_file = Path(results) / "sanitize" / "run.json"
    title = "Packed kernels under AddressSanitizer and UndefinedBehaviorSanitizer"
    if not record_file.exists():
        return [dataclasses.replace(_missing(title, "not in the paper", record_file, "bash scripts/sanitize.sh"),
                                    glance=False)]
    r = json.loads(record_file.read_text())
    counts = (f"{r['tests']} tests run ({r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped)"
              if r.get("tests") is not None else "no test count (the run stopped before its end)")
    backends = ", ".join(f"{name} ({path})" for name, path in (r.get("backends") or {}).items())
    ours = (f"{counts} of {', '.join(f'`{Path(f).name}`' for f in r.get('test_files', []))}, on the backends "
            f"{backends or 'not recorded'}, built by {r.get('compiler', 'an unrecorded compiler')} with "
            f"{' '.join(r.get('flags', []))}; {r['sanitizer_reports']} sanitizer reports")
    return [Finding(title, "not in the paper", ours,
                    verdict_sanitizer(r["exit_status"], r["sanitizer_reports"], r.get("failed")),
                    (str(record_file),), r.get("command", "bash scripts/sanitize.sh"),
                    machine_label(r.get("environment", {})), glance=False)]


def _paper_gaps(grid):
    if grid == "table1":
        return {("resnet18", m): v[0] - paper.TABLE1["xnor"][0] for m, v in paper.TABLE1.items()}
    return {(a, m): v[0] - rows["xnor"][0] for a, rows in paper.TABLE3.items() for m, v in rows.items()}


GRID_TITLES = {"table1": ("Table 1: ResNet-18, Cases 1-4 against XNOR-Net",
                          "every case above XNOR-Net on ImageNet (+4.3 to +5.9 top-1)"),
               "table3": ("Table 3: AlexNet and ResNet-18, BNN / XNOR-Net / ours / real",
                          "BNN < XNOR-Net < ours < real on ImageNet")}
FASHION_MNIST_PLAN = grids.GRID_PLANS[("fashion-mnist", "cuda")]
FASHION_MNIST = str(Path(FASHION_MNIST_PLAN.out).relative_to("results"))  # its grid's folder under results/
FASHION_MNIST_COMMAND = "bash scripts/gpu_grid.sh"


def _grid_finding(folder, grid, title, paper_text, command, missing):
    """The finding of ``grid`` from the runs under ``folder/runs``, or the finding ``missing`` when there are none."""
    runs_root = Path(folder) / "runs"
    runs = collect_runs(runs_root) if runs_root.is_dir() else pd.DataFrame()
    if runs.empty:
        return missing
    stats = row_statistics(runs, grid)
    ran = [r for r in stats if r["n"]]
    datasets = sorted({r["dataset"] for r in ran})
    seeds = sorted({r["n"] for r in ran})
    epochs = sorted({r["epochs"] for r in ran})
    on = ", ".join(("the " if d[0].islower() else "") + d for d in datasets)  # the embedded digits; Fashion-MNIST
    ours = (f"{len(ran)} of {len(stats)} rows on {on}, {'/'.join(map(str, seeds))} seeds, "
            f"{'/'.join(map(str, epochs))} epochs")
    details = tuple(
        f"{r['arch']} {r['method']}: top-1 {r['mean']:.1f}" + (f" ± {r['std']:.1f}" if r["n"] > 1 else "")
        + f" over {r['n']} seed(s)"
        + (f"; minus XNOR-Net {r['diff']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}], {r['ordering']}"
           if r["diff_n"] >= 2 else "") for r in ran)
    machines = sorted(set(runs.machine))
    return Finding(title, paper_text, ours, verdict_rows(stats, _paper_gaps(grid)),
                   (str(Path(folder) / "tables" / f"{grid}.md"), str(runs_root)), command, "; ".join(machines),
                   details)


def read_grids(results):
    out = []
    for grid, (title, paper_text) in GRID_TITLES.items():
        command = f"python -m studies.notebooks {grid}"
        missing = _missing(title, paper_text, Path(results) / "runs", command)
        out.append(_grid_finding(results, grid, title, paper_text, command, missing))
    return out


def read_fashion_mnist_grids(results):
    """Tables 1 and 3 on Fashion-MNIST (``results/fashion-mnist``), or, before they ran, that they are not
    measured yet, with the time the grid is estimated to take on one GPU (``grids.estimate_seconds``)."""
    estimate = _fashion_mnist_estimate(results)
    out = []
    for grid, (title, paper_text) in GRID_TITLES.items():
        title = f"Fashion-MNIST: {title}"
        missing = Finding(title, paper_text, "not measured yet",
                          f"not measured yet: the grid needs a GPU (`{FASHION_MNIST_COMMAND}`)", (),
                          FASHION_MNIST_COMMAND, "", estimate)
        found = _grid_finding(Path(results) / FASHION_MNIST, grid, title, paper_text, FASHION_MNIST_COMMAND,
                              missing)
        out.append(replace(found, details=found.details + _wall_time(Path(results) / FASHION_MNIST)) if found.ran
                   else found)
    return out


def _wall_time(folder):
    """The grid's wall time over the calls of ``scripts/gpu_grid.sh``, from its ``gpu/steps.csv``, in words."""
    steps = folder / "gpu" / "steps.csv"
    if not steps.exists():
        return ()
    s = pd.read_csv(steps)
    grid = s[_column(s, "step") == "grid"]
    return (f"wall time of the grid: {_column(grid, 'seconds').sum() / 60:.1f} min over {len(grid)} call(s) "
            f"(`{FASHION_MNIST}/gpu/steps.csv`)",)


def _fashion_mnist_estimate(results):
    """What the GPU grid should take, from the committed GPU training-step benchmark, in words."""
    bench = Path(results) / "benchmarks" / "train_step" / "cuda"
    if not (bench / "benchmark.csv").exists():
        return ("no GPU training-step benchmark to estimate its time from (`python -m studies.bench_train "
                "--device cuda`)",)
    step_ms = _column(pd.read_csv(bench / "benchmark.csv").set_index("method"), "step_ms").to_dict()
    plan = FASHION_MNIST_PLAN
    step_ms = {m: step_ms[m] for _, m in plan.rows}  # the methods the grid trains
    record = _record(bench / "run.json")
    protocol, gpu = record.get("protocol", {}), record.get("environment", {}).get("gpu", "a GPU")
    minutes, size = grids.estimate_seconds(plan, step_ms) / 60, NATIVE_SIZE["fashion-mnist"]
    return (f"estimated, not measured: {minutes:.1f} min on one GPU for {len(plan.rows)} rows x {len(plan.seeds)} "
            f"seeds of {plan.epochs} epochs, every training step charged what the GPU training-step benchmark "
            f"measured on the {gpu} for binary ResNet-18 with the same method at {protocol.get('input_size', '?')}x"
            f"{protocol.get('input_size', '?')}, batch {protocol.get('batch_size', '?')}, float32 "
            f"({min(step_ms.values()):.1f} to {max(step_ms.values()):.1f} ms), a validation batch a third of that, "
            f"each notebook {grids.RUN_OVERHEAD_S:.0f} s (assumed); no credit taken for the smaller steps on "
            f"{size}x{size} images or for mixed precision",)


def read_training(results):
    folder = Path(results) / "train" / "digits-resnet18-case4"
    command = _command(folder / "summary.json", "python -m studies.train")
    if not (folder / "summary.json").exists():
        return [_missing("Default training run (digits)", "not in the paper", folder / "summary.json", command)]
    summary = json.loads((folder / "summary.json").read_text())
    final = summary["final"]
    return [Finding("Default training run: binary ResNet-18, Case 4, embedded digits", "not in the paper",
                    f"top-1 {final['val_top1']:.2f}% after {final['epoch']} epochs (chance 10%)",
                    verdict_training(float(final["val_top1"])),
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
                           verdict_train_step(binary.to_dict()) + _busy(folder / "run.json", [_step_threads(
                               folder / "run.json")]), (str(folder / "benchmark.md"),),
                           _command(folder / "run.json", f"python -m studies.bench_train --device {device}"),
                           machine_label(_env(folder / "run.json"))))
    return out


def _step_threads(run_json):
    """The torch threads of a training-step benchmark, from its ``run.json``."""
    record = _record(run_json)
    return int((record.get("protocol") or {}).get("threads") or record.get("environment", {}).get("torch_threads")
               or 1)


def read_protocol(results):
    folder = Path(results) / "protocol_sweep"
    command = _command(folder / "run.json", "python -m studies.protocol_sweep")
    paper_ratio = paper.TABLE2["xnor"][0] / paper.TABLE2["case1"][0]
    title = "Protocol study: conditions around Table 2's protocol"
    paper_text = (f"XNOR-Net / Case 1 = {paper_ratio:.1f} in L1; order Direct > XNOR-Net > Case 1 > Case 3 > "
                  "Case 4")
    if not (folder / "claims.csv").exists():
        return [_missing(title, paper_text, folder / "claims.csv", command)]
    c = pd.read_csv(folder / "claims.csv")
    ratio = _column(c, "xnor_over_case1")
    metric = _column(c, "metric")
    order = _column(c, "paper_order").astype(bool)
    share = _column(c, "paper_order_trials")
    row = _column(c, "claim_id")
    cells = _column(c, "cell_id").nunique()
    l1 = ratio[metric == "l1"]
    if l1.empty:
        raise ValueError("claims.csv has no L1 rows, the paper's metric")
    orders = {m: (int((metric == m).sum()), [(row[i], float(share[i])) for i in c.index[(metric == m) & order]])
              for m in sorted(set(metric))}
    spans = "; ".join(f"in {m.upper()} from {ratio[metric == m].min():.2f} to {ratio[metric == m].max():.2f}"
                      for m in sorted(set(metric)))
    return [Finding(title, paper_text, f"{cells} cells; XNOR-Net / Case 1 {spans}",
                    verdict_protocol(float(l1.max()), row[l1.idxmax()], paper_ratio, orders),
                    (str(folder / "README.md"), str(folder / "claims.csv")), command,
                    machine_label(_env(folder / "run.json")))]

# The verdicts on trained layers rest on the held-out images (a learned Gamma is static; the images it was
# fitted to flatter it) and on the convolutions a binary network of that architecture binarizes.
def _recomputed_claims(folder):
    """claims.csv, after checking every interval and order in it against the ones recomputed from the per-image
    distances of per_image.csv (``ValueError`` naming the first that differs, or a missing per_image.csv)."""
    claims = pd.read_csv(folder / "claims.csv")
    if not (folder / "per_image.csv").exists():
        raise ValueError(f"{folder / 'per_image.csv'} is missing: the intervals of claims.csv cannot be recomputed")
    again = pd.DataFrame(claims_from_images(pd.read_csv(folder / "per_image.csv")))
    keys = list(CLAIM_KEYS)
    both = claims.merge(again, on=keys, how="outer", suffixes=("", "_again"), indicator=True)
    unmatched = both[both["_merge"] != "both"]
    if len(unmatched):
        raise ValueError(f"claims.csv and per_image.csv name different layers: {unmatched[keys].iloc[0].to_dict()}")
    for column in (c for c in again.columns if c not in keys):
        ours, theirs = both[column], both[f"{column}_again"]
        same = (ours.astype(str) == theirs.astype(str)) if column == "paper_order" else \
            np.isclose(ours.astype(float), theirs.astype(float), rtol=RECOMPUTE_RTOL, atol=0, equal_nan=True)
        if not same.all():
            i = np.flatnonzero(~np.asarray(same))[0]
            raise ValueError(f"claims.csv {column} at {both[keys].iloc[i].to_dict()} is {ours.iloc[i]}, recomputed "
                             f"from per_image.csv {theirs.iloc[i]}")
    return claims


RECOMPUTE_RTOL = 1e-9  # per_image.csv holds the float32 distances exactly: the intervals recompute to rounding


def read_trained_layers(results):
    """Table 2 on the convolutions of trained networks (``python -m studies.trained_layers``)."""
    folder = Path(results) / "reconstruction" / "trained"
    command = "python -m studies.trained_layers"
    paper_ratio = paper.TABLE2["xnor"][0] / paper.TABLE2["case1"][0]
    titles = ("Table 2 on trained layers: XNOR-Net against Case 1",
              "Table 2 on trained layers: the order of the methods")
    if not (folder / "claims.csv").exists():
        return [_missing(titles[0], f"{paper_ratio:.1f}x on random layers", folder / "claims.csv", command)]
    c = _recomputed_claims(folder)
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    command = run.get("command", command)
    images = {s: int(v) for s, v in c.groupby("split")["images"].first().items()}
    chosen = c[(_column(c, "split") == TRAINED_SPLIT) & _column(c, TRAINED_LAYERS).astype(bool)]
    files = (str(folder / "trained_layers.md"), str(folder / "claims.csv"), str(folder / "per_image.csv"),
             str(folder / "trained_layers.png"))
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
        outcomes = list(_column(rows, "paper_order").astype(str))
        order.append(f"{model}: " + verdict_trained_order(outcomes, steps, where))
        ours_order.append(f"{model}: Table 2's order holds on {outcomes.count('holds')} of {len(rows)} binarized "
                          f"layers, reversed on {outcomes.count('reversed')}")
        fit = c[(c.model == model) & (c.split != TRAINED_SPLIT) & c[TRAINED_LAYERS].astype(bool)]
        details.append(f"{model}, on the {images.get('train', 0)} images Gamma was fitted to: XNOR-Net / Case 1 "
                       f"{fit.xnor_over_case1.min():.3f}x to {fit.xnor_over_case1.max():.3f}x")
    for m in run.get("models", []):
        if m.get("val_top1") is not None:
            details.append(f"{m['name']}: validation top-1 {m['val_top1']:.1f}%, {m['layers']} convolutions scored")
    details.append("every interval and order of `claims.csv` recomputed from the per-image distances of "
                   "`per_image.csv`")
    return [Finding(titles[0], f"XNOR-Net / Case 1 = {paper_ratio:.1f} on random layers",
                    "; ".join(ours_ratio), "; ".join(ratio), files, command, machine, tuple(details)),
            Finding(titles[1], "Direct > XNOR-Net > Case 1 > Case 3 > Case 4 on random layers",
                    "; ".join(ours_order), "; ".join(order), files, command, machine)]


READERS = (read_table2, read_protocol, read_trained_layers, read_grids, read_fashion_mnist_grids, read_speedup,
           read_kernel, read_tradeoff, read_training, read_train_step, read_sanitizer)


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

    return [dataclasses.replace(f, files=tuple(rel(p) for p in f.files)) for f in found]
