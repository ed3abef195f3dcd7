"""Tables 1-3 and Figure 1's headline from small fixtures, against golden markdown and LaTeX.

Regenerate the golden files (then read the diff!) with
``XNORPP_UPDATE_GOLDEN=1 python -m pytest tests/test_tables.py``.
"""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from xnorpp_core import paper
from xnorpp_core.report import tables
from xnorpp_core.report.curves import final_metrics, plot_curves

FIXTURES = Path(__file__).parent / "fixtures" / "tables"
GOLDEN = Path(__file__).parent / "golden" / "tables"


@pytest.fixture(scope="module")
def runs():
    return pd.read_csv(FIXTURES / "runs.csv")


def rendered(runs):
    summary, run = tables.read_table2(FIXTURES)
    return {"table1": tables.table1(runs), "table2": tables.table2(summary, run), "table3": tables.table3(runs),
            "table2_missing": tables.table2(), "figure1": tables.figure1_headline()}


@pytest.mark.parametrize("name", ["table1", "table2", "table3", "table2_missing", "figure1"])
@pytest.mark.parametrize("fmt", ["md", "tex"])
def test_golden(runs, name, fmt):
    table = rendered(runs)[name]
    text = table.markdown() if fmt == "md" else table.latex()
    path = GOLDEN / f"{name}.{fmt}"
    if os.environ.get("XNORPP_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


def cells(table, key_column, key):
    view = table.view.map(str)
    return view[view[key_column] == key].iloc[0]


T_975_DF4 = 2.7764451051977987  # Student's t 0.975 quantile, 4 degrees of freedom (printed tables: 2.776)


def test_table1_cells_by_hand(runs):
    t = tables.table1(runs)
    assert list(t.view.map(str)["method"]) == ["XNOR-Net (α, K)", "Case 1: α", "Case 2: α", "Case 3: α ⊗ β",
                                               "Case 4: α ⊗ β ⊗ γ (ours)"]
    case1 = cells(t, "method", "Case 1: α")
    assert (case1["measured on"], case1["seeds"], case1["epochs"]) == ("embedded digits", "5", "3")
    # mean of 85.0 86.5 84.0 85.0 87.5 = 85.6; sample std = sqrt(7.7 / 4) = 1.387
    assert (case1["top-1 (ours)"], case1["top-5 (ours)"]) == ("85.6 ± 1.4", "98.7 ± 0.5")
    # paired differences to XNOR-Net (80.0 81.0 79.5 80.5 82.0): 5.0 5.5 4.5 4.5 5.5, mean 5.0, std 0.5
    half = T_975_DF4 * 0.5 / 5 ** 0.5  # 0.62
    assert case1["top-1 − XNOR (ours, 95% CI)"] == f"+5.0 [{5 - half:+.1f}, {5 + half:+.1f}]" == "+5.0 [+4.4, +5.6]"
    assert case1["ordering (ours)"] == "above XNOR-Net"
    assert case1["top-1 − XNOR (paper)"] == "+4.3"  # 55.5 - 51.2
    assert (case1["top-1 (paper, ImageNet)"], case1["top-5 (paper, ImageNet)"]) == ("55.5", "78.5")
    # Case 2: differences +2 -1 +1 -2 +0.5 straddle zero: no ordering.
    case2 = cells(t, "method", "Case 2: α")
    assert case2["ordering (ours)"] == "not separable on the embedded digits"
    # No difference across epochs (Case 3: 2 epochs) or datasets (Case 4: ImageNet against the digits).
    assert cells(t, "method", "Case 3: α ⊗ β")["top-1 − XNOR (ours, 95% CI)"] == "—"
    case4 = cells(t, "method", "Case 4: α ⊗ β ⊗ γ (ours)")
    assert (case4["measured on"], case4["top-1 (ours)"], case4["top-1 − XNOR (ours, 95% CI)"]) == (
        "ImageNet", "57.3", "—")
    notes = " ".join(t.notes)
    assert "360 validation images, one image is 0.278 points" in notes and "3 or 5 seed(s) per row" in notes
    assert "Trained on Intel(R) Xeon(R) Processor" in notes and "1 thread of 2 cores" in notes


def test_table1_marks_rows_not_run(runs):
    view = tables.table1(runs[runs.method != "case2"]).view.map(str).set_index("method")
    case2 = view.loc["Case 2: α"]
    assert case2["measured on"] == "— (not run)"
    assert case2["top-1 (ours)"] == case2["top-5 (ours)"] == case2["top-1 − XNOR (ours, 95% CI)"] == "—"
    assert case2["top-1 (paper, ImageNet)"] == "56.1"  # a measured cell is never filled from the paper
    notes = " ".join(tables.table1(runs[runs.method != "case2"]).notes)
    assert "Not run yet: ResNet-18 Case 2: α" in notes and "python -m studies.notebooks table1" in notes


def test_table3_rows_and_gaps(runs):
    t = tables.table3(runs)
    view = t.view.map(str)
    expected = [(tables.ARCH_LABELS[a], tables.METHOD_LABELS[m].md) for a, ms in paper.TABLE3.items() for m in ms]
    assert list(zip(view["architecture"], view["method"])) == expected
    alex = view[view.architecture == "AlexNet"].set_index("method")
    assert alex.loc["BNN (direct sign)", "top-1 − XNOR (ours, 95% CI)"] == "-3.9 (one seed)"  # 40.1 - 44.0
    assert alex.loc["BNN (direct sign)", "ordering (ours)"] == "one seed: no interval"
    case4 = alex.loc["Case 4: α ⊗ β ⊗ γ (ours)"]
    assert case4["top-1 − XNOR (ours, 95% CI)"] == "+3.2 (one seed)"  # 47.2 - 44.0
    assert alex.loc["Real-valued", "measured on"] == "— (not run)"
    res = view[view.architecture == "ResNet-18"].set_index("method")
    assert res.loc["Bethge et al.", "measured on"] == "paper only (not in this toolkit)"
    assert res.loc["Bethge et al.", "top-1 (paper, ImageNet)"] == "54.4"
    assert res.loc["Real-valued", "top-1 (ours)"] == "97.3 ± 0.4"
    assert res.loc["BNN (direct sign)", "ordering (ours)"] == "below XNOR-Net"


def test_row_statistics_feed_the_report(runs):
    stats = {(r["arch"], r["method"]): r for r in tables.row_statistics(runs, "table1")}
    case1 = stats["resnet18", "case1"]
    assert case1["n"] == case1["diff_n"] == 5 and case1["diff"] == pytest.approx(5.0)
    assert case1["low"] == pytest.approx(5 - T_975_DF4 * 0.5 / 5 ** 0.5)
    assert stats["resnet18", "case3"]["diff_n"] == 0 and stats["resnet18", "xnor"]["ordering"] is None


def test_table2_marks_missing_and_unreported_rows():
    summary, run = tables.read_table2(FIXTURES)
    view = tables.table2(summary.iloc[1:], run).view.map(str).set_index("method")  # drop the direct row
    assert view.loc["BNN (direct sign)", "L1 (ours)"] == "— (not run)"
    assert view.loc["BNN (direct sign)", "L1 (paper)"] == "6.36 ± 0.04"
    assert view.loc["Case 2: α", "L1 (paper)"] == "not reported"
    assert view.loc["Case 1: α", "L1 (ours)"] == "14.72 ± 0.19"
    empty = tables.table2()
    assert "no run of the Table 2 study was found" in empty.caption
    assert set(empty.view.map(str)["L1 (ours)"]) == {"— (not run)"}


def test_latex_escapes_text_and_keeps_mathematics():
    view = pd.DataFrame({"a_b": ["50%", tables.Cell("α", r"$\alpha$")], "c": ["x & y", "−1.0 ± 0.1"]})
    tex = tables.Table("t", "T", "100% of #1", view).latex()
    assert r"a\_b & c \\" in tex and r"50\% & x \& y \\" in tex and r"$\alpha$ & $-$1.0 $\pm$ 0.1 \\" in tex
    assert r"\caption{T. 100\% of \#1}" in tex and r"\label{tab:xnorpp-t}" in tex


def test_write_table(tmp_path, runs):
    md, tex = tables.write_table(tables.table1(runs), tmp_path / "out")
    assert md.read_text().startswith("# Table 1") and tex.read_text().startswith("% generated")


@pytest.mark.parametrize("data, label", [(None, "embedded digits"), ("/data/imagenet", "ImageNet"),
                                         ("/data/ILSVRC2012/", "ImageNet"), ("/data/ImageNet-1k/", "ImageNet"),
                                         ("tiny", "ImageFolder tiny"), ("fashion-mnist", "Fashion-MNIST"),
                                         ("fashion-mnist:/d/f", "Fashion-MNIST"), ("cifar10:/d/c", "CIFAR-10"),
                                         ("./fashion-mnist", "ImageFolder fashion-mnist"),
                                         ("/data/not-imagenet", "ImageFolder not-imagenet")])
def test_dataset_label(data, label):
    assert tables.dataset_label(data) == label


def test_grids_are_the_papers_trainable_rows():
    assert tables.GRIDS["table1"] == tuple(("resnet18", m) for m in ("xnor", "case1", "case2", "case3", "case4"))
    assert tables.GRIDS["table3"] == tuple((a, m) for a in ("alexnet", "resnet18")
                                           for m in ("direct", "xnor", "case4", "real"))


def write_run(folder, method, history, data=None, limit_batches=None, seed=0):
    folder.mkdir(parents=True)
    config = {"arch": "resnet18", "method": method, "data": data, "batch_size": 64, "limit_batches": limit_batches,
              "seed": seed, "lr_step": 1}
    best = max(history, key=lambda r: r["val_top1"])
    env = {"cpu": "Some CPU", "torch_threads": 1, "cpu_count": 2, "versions": {"torch": "2.0"}, "python": "3.11"}
    summary = {"final": history[-1], "best": best, "protocol": {"dataset": {"val": 360}}, "environment": env}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "summary.json").write_text(json.dumps(summary))


def test_collect_runs(tmp_path):
    history = [{"epoch": 1, "val_top1": 70.0, "val_top5": 95.0}, {"epoch": 2, "val_top1": 80.0, "val_top5": 97.0},
               {"epoch": 3, "val_top1": 75.0, "val_top5": 98.0}]
    write_run(tmp_path / "resnet18_xnor" / "seed3", "xnor", history, seed=3)
    write_run(tmp_path / "resnet18_real" / "seed0", "real", history[:1], data="/d/imagenet", limit_batches=2)
    (tmp_path / "resnet18_case1" / "seed0").mkdir(parents=True)  # unfinished: no summary.json
    runs = tables.collect_runs(tmp_path)
    assert list(runs.columns) == list(tables.RUN_COLUMNS)
    assert len(runs) == 2
    xnor = runs[runs.method == "xnor"].iloc[0].to_dict()
    assert xnor == {"row": "resnet18_xnor", "arch": "resnet18", "method": "xnor", "seed": 3,
                    "dataset": "embedded digits", "val_images": 360, "epochs": 3, "lr_step": 1, "val_top1": 75.0,
                    "val_top5": 98.0, "best_val_top1": 80.0, "best_epoch": 2,
                    "machine": "Some CPU, 1 thread of 2 cores, torch 2.0, Python 3.11"}
    assert runs[runs.method == "real"].iloc[0][["dataset", "val_images", "epochs"]].tolist() == ["ImageNet", 128, 1]
    assert tables.collect_runs(tmp_path / "nothing").empty


def test_collect_runs_refuses_duplicates(runs):
    doubled = pd.concat([runs, runs.iloc[:1]])
    with pytest.raises(ValueError, match="6 runs of resnet18/xnor"):
        tables.table1(doubled)


METRICS = pd.DataFrame({"epoch": [1, 2, 3], "lr": [1e-3, 1e-3, 1e-4], "train_loss": [2.0, 1.0, 0.5],
                        "train_top1": [30.0, 60.0, 80.0], "val_loss": [1.5, 0.9, 0.8],
                        "val_top1": [40.0, 82.0, 81.0], "val_top5": [80.0, 95.0, 99.0]})


def test_curves():
    fig = plot_curves(METRICS, "t")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "top-1", "top-5"]
    assert [len(ax.lines) for ax in fig.axes] == [3, 3, 2]  # curves and the learning-rate drop before epoch 3
    final = final_metrics(METRICS).set_index("metric")
    assert final.loc["val_top1"].tolist() == [81.0, 82.0] and final.loc["epoch"].tolist() == [3, 2]
    with pytest.raises(ValueError, match="val_top5"):
        plot_curves(METRICS.drop(columns="val_top5"))
    with pytest.raises(ValueError, match="no epoch"):
        final_metrics(METRICS.iloc[:0])


@pytest.mark.parametrize("epochs", [1, 2, 3, 12])
def test_curves_tick_whole_epochs_only(epochs):
    import matplotlib.pyplot as plt

    n = epochs
    metrics = pd.DataFrame({"epoch": range(1, n + 1), "lr": [1e-3] * n, "train_loss": [1.0] * n,
                            "train_top1": [50.0] * n, "val_loss": [1.0] * n, "val_top1": [50.0] * n,
                            "val_top5": [90.0] * n})
    fig = plot_curves(metrics)
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() and 1 <= t <= n for t in ticks), ticks
    plt.close(fig)
