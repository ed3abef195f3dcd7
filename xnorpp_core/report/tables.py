"""Tables 1, 2 and 3 and Figure 1's headline, ours beside the paper's, as markdown and LaTeX.

Inputs are tidy frames read from ``results/``:

- ``runs``: one row per finished training run, i.e. per (architecture, method,
  seed) (``RUN_COLUMNS``; ``collect_runs`` builds it from the run folders), for
  Table 1 (binarized ResNet-18, XNOR-Net against Cases 1-4) and Table 3 (AlexNet
  and ResNet-18: BNN, XNOR-Net, ours = Case 4, real-valued). A row of a table
  gives the mean ± std over its seeds and its paired difference to XNOR-Net on
  the same seeds with a 95% t interval (``xnorpp_core.report.seeds``); the
  ordering column states an ordering only where that interval excludes zero;
- the Table 2 study's ``table2.csv`` (``xnorpp_core.reconstruction.table2.summarize``).

Every row says what it was measured on (``dataset``: the embedded digits, or
the name of the ImageFolder tree, e.g. ImageNet) and every row of the paper
that has no measurement here is kept and marked, never dropped. The paper's
numbers come from ``xnorpp_core.paper`` only; a measured cell is never filled
from it. Accuracies are in percent.

Differences to XNOR-Net (``top-1 - XNOR``) are only given between rows measured
on the same dataset for the same number of epochs, on their common seeds:
absolute accuracies on the embedded digits say nothing about ImageNet.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import paper
from . import seeds
from .machine import machine_label
from ..provenance import atomic_write, markdown_table
from ..speedup import CONSISTENT_MODEL, speedup_ours, speedup_xnor
from ..reconstruction.table2 import display as table2_display
from ..training.data import parse_data

__all__ = ["GRIDS", "RUN_COLUMNS", "EMBEDDED", "Cell", "Table", "collect_runs", "dataset_label", "read_table2",
           "row_statistics", "table1", "table2", "table3", "figure1_headline", "mark_printed_speedups", "write_table"]

# The rows the toolkit can train for each table: the paper's rows minus other people's methods.
GRIDS = {
    "table1": tuple(("resnet18", m) for m in paper.TABLE1),
    "table3": tuple((arch, m) for arch, rows in paper.TABLE3.items() for m in rows if m != "bethge"),
}
RUN_COLUMNS = ("row", "arch", "method", "seed", "dataset", "val_images", "epochs", "lr_step", "val_top1",
               "val_top5", "best_val_top1", "best_epoch", "machine")
EMBEDDED = "embedded digits"
DATASET_LABELS = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
MISSING = "—"
ARCH_LABELS = {"alexnet": "AlexNet", "resnet18": "ResNet-18"}


@dataclass(frozen=True)
class Cell:
    """A cell with its own LaTeX spelling (mathematics); plain ``str`` cells are escaped."""

    md: str
    tex: str

    def __str__(self):
        return self.md


METHOD_LABELS = {
    "real": Cell("Real-valued", "Real-valued"),
    "direct": Cell("BNN (direct sign)", "BNN (direct sign)"),
    "xnor": Cell("XNOR-Net (α, K)", r"XNOR-Net ($\alpha$, $K$)"),
    "xnor_alpha": Cell("XNOR-Net (α only)", r"XNOR-Net ($\alpha$ only)"),
    "case1": Cell("Case 1: α", r"Case 1: $\alpha$"),
    "case2": Cell("Case 2: α", r"Case 2: $\alpha$"),
    "case3": Cell("Case 3: α ⊗ β", r"Case 3: $\alpha \otimes \beta$"),
    "case4": Cell("Case 4: α ⊗ β ⊗ γ (ours)", r"Case 4: $\alpha \otimes \beta \otimes \gamma$ (ours)"),
    "bethge": Cell("Bethge et al.", "Bethge et al."),
}
# The shapes of Gamma as Table 1 prints them (Eq. 4-7).
SHAPES = {
    "xnor": Cell("analytic α, K (Eq. 2)", r"analytic $\alpha$, $K$ (Eq. 2)"),
    "case1": Cell("α ∈ R^(o×1×1)", r"$\alpha \in \mathbb{R}^{o \times 1 \times 1}$"),
    "case2": Cell("α ∈ R^(o×h_out×w_out)", r"$\alpha \in \mathbb{R}^{o \times h_{out} \times w_{out}}$"),
    "case3": Cell("α ∈ R^o, β ∈ R^(h_out×w_out)",
                  r"$\alpha \in \mathbb{R}^{o}, \beta \in \mathbb{R}^{h_{out} \times w_{out}}$"),
    "case4": Cell("α ∈ R^o, β ∈ R^h_out, γ ∈ R^w_out",
                  r"$\alpha \in \mathbb{R}^{o}, \beta \in \mathbb{R}^{h_{out}}, \gamma \in \mathbb{R}^{w_{out}}$"),
}
_TEX_ESCAPES = {"\\": r"\textbackslash{}", "%": r"\%", "&": r"\&", "#": r"\#", "_": r"\_", "$": r"\$",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "`": "",
                "±": r"$\pm$", "−": "$-$", "—": "---", "×": r"$\times$", "|": r"$|$", "α": r"$\alpha$",
                "β": r"$\beta$", "γ": r"$\gamma$", "Γ": r"$\Gamma$", "⊗": r"$\otimes$", "∈": r"$\in$"}


@dataclass(frozen=True)
class Table:
    """A rendered table: a title, a caption, the cells (``str`` or ``Cell``) and notes below it."""

    name: str
    title: str
    caption: str
    view: pd.DataFrame
    notes: tuple = field(default_factory=tuple)

    def markdown(self):
        body = markdown_table(self.view.map(str), disable_numparse=True)
        notes = "".join(f"\n- {n}" for n in self.notes)
        return f"# {self.title}\n\n{self.caption}\n\n{body}\n" + (f"\n{notes.lstrip()}\n" if notes else "")

    def latex(self):
        def tex(cell):
            return cell.tex if isinstance(cell, Cell) else "".join(_TEX_ESCAPES.get(c, c) for c in str(cell))

        lines = [r"% generated by xnorpp_core.report.tables; needs \usepackage{booktabs,amssymb}",
                 r"\begin{table}[t]", r"\centering", r"\small",
                 r"\begin{tabular}{" + "l" * self.view.shape[1] + "}", r"\toprule",
                 " & ".join(tex(c) for c in self.view.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(tex(c) for c in row) + r" \\" for row in self.view.itertuples(index=False)]
        caption = " ".join([self.caption] + list(self.notes))
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{tex(self.title)}. {tex(caption)}}}",
                  rf"\label{{tab:xnorpp-{self.name}}}", r"\end{table}"]
        return "\n".join(lines) + "\n"


def write_table(table, out):
    """``out/<name>.md`` and ``out/<name>.tex``, atomically; returns both paths."""
    out = Path(out)
    return (atomic_write(out / f"{table.name}.md", table.markdown()),
            atomic_write(out / f"{table.name}.tex", table.latex()))


# ---------------------------------------------------------------- runs
RESULT_FILES = ("runs/*/*/summary.json", "reconstruction/table2.csv", "speedup/speedup.csv")


def check_results(results):
    """Raise ``FileNotFoundError`` naming ``results`` when it is not a folder or holds none of the result
    files the tables are made from (``RESULT_FILES``): rendering then would only print "not run" rows."""
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"results folder {results.resolve()} does not exist (or is not a folder)")
    if not any(any(results.glob(pattern)) for pattern in RESULT_FILES):
        raise FileNotFoundError(f"results folder {results.resolve()} holds no result file "
                                f"({', '.join(RESULT_FILES)})")
    return results


def dataset_label(data):
    """What a run was measured on: the embedded digits (``data`` is None), Fashion-MNIST, CIFAR-10 (``--data``
    ``fashion-mnist``, ``cifar10:DIR``) or the ImageFolder's name.

    A folder whose name starts with ``imagenet`` or ``ilsvrc`` (any case) reads ``ImageNet``; any
    other reads ``ImageFolder <name>``: the table never calls a dataset ImageNet on a guess beyond that.
    """
    if data in (None, ""):
        return EMBEDDED
    kind = parse_data(data).kind
    if kind in DATASET_LABELS:
        return DATASET_LABELS[kind]
    name = Path(str(data)).name or str(data)
    return "ImageNet" if name.lower().startswith(("imagenet", "ilsvrc")) else f"ImageFolder {name}"


def collect_runs(runs_root):
    """The tidy ``runs`` frame from ``runs_root/<arch>_<method>/seed<N>/{config,summary}.json``.

    A run folder without ``summary.json`` (not finished) is left out. ``machine`` names the CPU (or
    GPU), the thread count and the versions the run was trained with (``machine_label``).
    """
    rows = []
    for summary_path in sorted(Path(runs_root).glob("*/*/summary.json")):
        folder = summary_path.parent
        summary = json.loads(summary_path.read_text())
        config = json.loads((folder / "config.json").read_text())
        final, best = summary["final"], summary["best"]
        rows.append({"row": folder.parent.name, "arch": config["arch"], "method": config["method"],
                     "seed": int(config.get("seed", 0)), "dataset": dataset_label(config.get("data")),
                     "val_images": _val_images(summary["protocol"]["dataset"]["val"], config),
                     "epochs": int(final["epoch"]), "lr_step": config.get("lr_step"),
                     "val_top1": final["val_top1"], "val_top5": final["val_top5"],
                     "best_val_top1": best["val_top1"], "best_epoch": int(best["epoch"]),
                     "machine": machine_label(summary.get("environment", {}))})
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def _val_images(val, config):
    """Validation images a run was scored on: all of them, or the first ``limit_batches`` batches."""
    limit = config.get("limit_batches")
    return val if limit is None else min(val, limit * config["batch_size"])


def _pct(v):
    return MISSING if v is None or pd.isna(v) else f"{v:.1f}"


def _gap(v):
    return MISSING if v is None or pd.isna(v) else f"{v:+.1f}"


def _runs_of(runs, arch, method):
    """The runs of one row: one per seed, all on one dataset and epoch count (else ``ValueError``)."""
    hit = runs[(runs.arch == arch) & (runs.method == method)]
    if hit.seed.duplicated().any() or len(set(zip(hit.dataset, hit.epochs))) > 1:
        raise ValueError(f"{len(hit)} runs of {arch}/{method}: expected one per seed, on one dataset and "
                         "epoch count")
    return hit


def _compare(runs, arch, method):
    """(runs of the row, their paired difference to XNOR-Net's runs on the same dataset, epochs and seeds)."""
    hit, xnor = _runs_of(runs, arch, method), _runs_of(runs, arch, "xnor")
    same = (method != "xnor" and not hit.empty and not xnor.empty
            and (hit.dataset.iloc[0], hit.epochs.iloc[0]) == (xnor.dataset.iloc[0], xnor.epochs.iloc[0]))
    if not same:
        return hit, seeds.paired({}, {})
    return hit, seeds.paired(dict(zip(hit.seed, hit.val_top1)), dict(zip(xnor.seed, xnor.val_top1)))


def _measured_cells(runs, arch, method, paper_row, paper_xnor):
    """The measured, paper and paired-difference-to-XNOR cells of one (arch, method) row."""
    hit, diff = _compare(runs, arch, method)
    p1, p5 = paper_row
    cells = {
        "measured on": MISSING + " (not run)" if hit.empty else hit.dataset.iloc[0],
        "epochs": MISSING if hit.empty else str(hit.epochs.iloc[0]),
        "seeds": MISSING if hit.empty else str(len(hit)),
        "top-1 (ours)": seeds.spread(hit.val_top1).text(),
        "top-5 (ours)": seeds.spread(hit.val_top5).text(),
        "top-1 (paper, ImageNet)": _pct(p1),
        "top-5 (paper, ImageNet)": _pct(p5),
        "top-1 − XNOR (ours, 95% CI)": diff.text(),
        "ordering (ours)": seeds.ordering(diff, hit.dataset.iloc[0]) if diff.n else MISSING,
        "top-1 − XNOR (paper)": _gap(p1 - paper_xnor[0]),
    }
    if method == "xnor":
        cells["top-1 − XNOR (paper)"] = "baseline"
        cells["top-1 − XNOR (ours, 95% CI)"] = cells["ordering (ours)"] = MISSING if hit.empty else "baseline"
    return cells


def row_statistics(runs, grid):
    """One record per trainable row of ``grid``: seeds, mean/std top-1, paired difference to XNOR-Net.

    Keys: arch, method, dataset, epochs, n, mean, std, diff_n, diff, low, high, ordering
    (NaN / None where the row or its baseline was not run). The report's sentences read these.
    """
    out = []
    for arch, method in GRIDS[grid]:
        hit, d = _compare(runs, arch, method)
        s = seeds.spread(hit.val_top1)
        out.append({"arch": arch, "method": method, "dataset": None if hit.empty else hit.dataset.iloc[0],
                    "epochs": None if hit.empty else int(hit.epochs.iloc[0]), "n": s.n, "mean": s.mean,
                    "std": s.std, "diff_n": d.n, "diff": d.mean, "low": d.low, "high": d.high,
                    "ordering": seeds.ordering(d, hit.dataset.iloc[0]) if d.n else None})
    return out


def _notes(runs, grid):
    """What the rows of ``grid`` were measured on, with how many seeds, on which machine; which are missing."""
    rows = GRIDS[grid]
    mine = runs[pd.Series([(a, m) in rows for a, m in zip(runs.arch, runs.method)], index=runs.index,
                          dtype=bool)]  # a Series: an empty list would select columns
    notes = []
    if EMBEDDED in set(mine.dataset):
        notes.append(f"Rows measured on the {EMBEDDED} (scikit-learn's 8x8 handwritten digits, upscaled, 10 "
                     "classes) check the code path on a CPU: their absolute accuracies say nothing about ImageNet.")
        digits = mine[mine.dataset == EMBEDDED]
        for epochs, step in sorted(set(zip(digits.epochs, digits.lr_step))):
            notes.append(f"On the {EMBEDDED}: {epochs} epochs, learning rate divided by 10 every {step} epoch(s) "
                         "(the digits recipe, `xnorpp_core.training.RECIPES`, trains 9 epochs with a step of 3; "
                         "the grids are shortened so that every row can be trained with several seeds on a CPU).")
    for dataset in sorted(set(mine.dataset) & set(DATASET_LABELS.values())):  # their grids shorten the recipe
        other = mine[mine.dataset == dataset]
        for epochs, step in sorted(set(zip(other.epochs, other.lr_step))):
            notes.append(f"On {dataset}: {epochs} epoch(s), learning rate divided by 10 every {step} epoch(s).")
    for dataset, images in sorted(set(zip(mine.dataset, mine.val_images))):
        counts = sorted(set(mine[mine.dataset == dataset].groupby(["arch", "method"]).size()))
        notes.append(f"{dataset}: {images} validation images, one image is {100 / images:.3g} points of "
                     f"accuracy; {' or '.join(map(str, counts))} seed(s) per row; ours: mean ± std over seeds of "
                     "the last epoch's accuracy.")
    notes.append("top-1 − XNOR (ours, 95% CI): mean over seeds of the paired difference to XNOR-Net trained with "
                 "the same seed, with its 95% Student-t interval; an ordering is stated only where the interval "
                 "excludes zero.")
    notes += [f"Trained on {machine}." for machine in sorted(set(mine.machine))]
    missing = [f"{ARCH_LABELS[a]} {METHOD_LABELS[m].md}" for a, m in rows if _runs_of(runs, a, m).empty]
    if missing:  # the Fashion-MNIST grid leaves rows out, which its command would not train
        command = ("" if set(mine.dataset) & set(DATASET_LABELS.values())
                   else f" (`python -m studies.notebooks {grid}`)")
        notes.append(f"Not run yet: {', '.join(missing)}{command}.")
    return tuple(notes)


def table1(runs):
    """Table 1: binarized ResNet-18, the XNOR-Net baseline against Cases 1-4 (Eq. 4-7)."""
    rows = []
    for method, paper_row in paper.TABLE1.items():
        rows.append({"method": METHOD_LABELS[method], "Γ shape": SHAPES[method],
                     **_measured_cells(runs, "resnet18", method, paper_row, paper.TABLE1["xnor"])})
    caption = ("Top-1 and top-5 validation accuracy (%) of a binarized ResNet-18 for each shape of the scale "
               "factor. ours: the last epoch of our runs (mean ± std over seeds), measured on the dataset named "
               "in its row; paper: the paper's Table 1 (ImageNet, 80 epochs). Differences to XNOR-Net only "
               "between runs on the same dataset, epochs and seeds.")
    return Table("table1", "Table 1: binarized ResNet-18, XNOR-Net against Cases 1-4", caption,
                 pd.DataFrame(rows), _notes(runs, "table1"))


def table3(runs):
    """Table 3: AlexNet and ResNet-18, BNN / XNOR-Net / ours (Case 4) / real-valued."""
    rows = []
    for arch, methods in paper.TABLE3.items():
        for method, paper_row in methods.items():
            cells = _measured_cells(runs, arch, method, paper_row, methods["xnor"])
            if method == "bethge":
                cells["measured on"] = "paper only (not in this toolkit)"
            rows.append({"architecture": ARCH_LABELS[arch], "method": METHOD_LABELS[method], **cells})
    caption = ("Top-1 and top-5 validation accuracy (%) of binarized AlexNet and ResNet-18. ours: the last "
               "epoch of our runs (mean ± std over seeds), measured on the dataset named in its row; paper: the "
               "paper's Table 3 (ImageNet). Ours is Case 4. Differences to XNOR-Net only between runs of the "
               "same architecture on the same dataset, epochs and seeds.")
    return Table("table3", "Table 3: binarized AlexNet and ResNet-18 against the state of the art", caption,
                 pd.DataFrame(rows), _notes(runs, "table3"))


def read_table2(folder):
    """``(summary, run)`` from the Table 2 study's ``table2.csv`` and ``run.json`` in ``folder``; None if absent."""
    folder = Path(folder)
    summary = pd.read_csv(folder / "table2.csv") if (folder / "table2.csv").exists() else None
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else None
    return summary, run


def table2(summary=None, run=None):
    """Table 2 from the study's ``table2.csv`` (``summary``) and ``run.json`` (``run``), or its missing rows.

    The paper's rows without a measurement say ``missing``; our rows the paper
    does not report (Case 2, XNOR-Net without K) say ``not reported``.
    """
    known = [] if summary is None else list(summary["method"])
    absent = [m for m in paper.TABLE2 if m not in known]
    filler = pd.DataFrame({"method": absent, "paper_l1_mean": [paper.TABLE2[m][0] for m in absent],
                           "paper_l1_std": [paper.TABLE2[m][1] for m in absent]})
    columns = ["method", "l1_mean", "l1_std", "rel_l1_mean", "rel_l1_std", "steps_mean", "evidence", "gap_min",
               "gap_max", "starts", "starts_near_best_min", "gap_to_bound_mean", "paper_l1_mean", "paper_l1_std",
               "l1_over_paper", "l1_vs_xnor", "paper_l1_vs_xnor"]
    frame = pd.concat([f for f in (summary, filler) if f is not None and len(f)], ignore_index=True)
    frame = frame.reindex(columns=columns)
    view = table2_display(frame)
    view["method"] = [METHOD_LABELS[m] for m in frame["method"]]
    view["L1 (ours)"] = [MISSING + " (not run)" if m in absent else v
                         for m, v in zip(frame["method"], view["L1 (ours)"])]
    view["L1 (paper)"] = [v or "not reported" for v in view["L1 (paper)"]]
    view = view.replace("", MISSING)
    if run is None:
        protocol = "no run of the Table 2 study was found"
    else:
        c = run["config"]
        protocol = (f"{c['trials']} trials, seed {c['seed']}; W {c['out_channels']}x{c['in_channels']}x"
                    f"{c['kernel_size']}x{c['kernel_size']} and I {c['in_channels']}x{c['input_size']}x"
                    f"{c['input_size']} drawn from N(0, 1); padding {c['padding']} ({c['pad_mode']}); "
                    f"scales fitted with the {c['loss'].upper()} loss")
    caption = ("L1 distance (mean ± std over trials) between a real convolution and its binary counterpart "
               "with the binary weights fixed at sign(W). Measured on synthetic layers, not on a dataset: "
               f"{protocol}. paper: the paper's Table 2. Ratios to XNOR-Net compare within each column.")
    notes = []
    if absent:
        notes.append(f"Not run yet: {', '.join(METHOD_LABELS[m].md for m in absent)} "
                     "(`python -m studies.reconstruction`).")
    return Table("table2", "Table 2: L1 distance of binary layers to the real layer", caption, view, tuple(notes))


def figure1_headline():
    """Figure 1's headline case (o = 256, 3x3 kernel): Eq. 8/9 beside the printed speed-ups."""
    rows = []
    for method, fn, eq in (("xnor", speedup_xnor, "Eq. 8"), ("case4", speedup_ours, "Eq. 9")):
        rows.append({"method": METHOD_LABELS[method], "equation": eq,
                     "speed-up, formula as printed": f"{fn(256, 3, 3):.2f}",
                     "speed-up (paper)": f"{paper.SPEEDUP_256_3x3['xnor' if method == 'xnor' else 'ours']:.2f}",
                     "float op = 64 binary ops": f"{fn(256, 3, 3, float_cost=CONSISTENT_MODEL):.2f}"})
    caption = ("Theoretical speed-up of a binary convolution over a real one for 256 output channels and a "
               "3x3 kernel (Section 4.3). Computed from the formulas, not measured. The last column charges a "
               "float operation as one multiplication (64 packed binary operations), as the paper's own "
               "derivation implies.")
    return Table("figure1", "Figure 1: theoretical speed-up, headline case", caption, pd.DataFrame(rows))


def mark_printed_speedups(ax, out_channels=256, kernel=3):
    """Mark the paper's two printed speed-ups (Section 4.3) on a Figure 1 axis (formulas as printed)."""
    printed = paper.SPEEDUP_256_3x3
    for method, marker in (("xnor", "v"), ("ours", "^")):
        ax.plot([out_channels], [printed[method]], marker, color="black", ms=6, ls="none",
                label=f"printed, {'XNOR-Net' if method == 'xnor' else 'ours'} ({kernel}x{kernel}, o = {out_channels})")
    # the two markers overlap at this scale (63.69 and 63.98): say which is which beside them
    ax.annotate(f"printed: ▼ {printed['xnor']:.2f}  ▲ {printed['ours']:.2f}", xy=(out_channels, printed["ours"]),
                xytext=(0, 8), textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.legend(fontsize=7, loc="lower right")
