"""Figures a reader can read: named conditions, the tables' method names, labelled lines and markers."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from studies import reconstruction, speedup  # noqa: E402
from xnorpp_core import paper  # noqa: E402
from xnorpp_core.report import tables  # noqa: E402


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_table2_figure_uses_the_tables_method_names_and_labels_its_close_up():
    methods = ["direct", "xnor", "xnor_alpha", "case1", "case2", "case3", "case4"]
    rng = np.random.default_rng(0)
    trials = pd.DataFrame([{"trial": t, "method": m, "rel_l1": rng.uniform(0.7, 0.9)}
                           for t in range(3) for m in methods])
    fig = reconstruction.plot_trials(trials)
    full, close = fig.axes
    assert [t.get_text() for t in full.get_yticklabels()] == [tables.METHOD_LABELS[m].md for m in methods]
    assert "close-up" in close.get_title() and "Case 2" in close.get_title()
    assert tables.METHOD_LABELS["case2"].md not in [t.get_text() for t in close.get_yticklabels()]
    assert all(ax.get_xlabel() for ax in fig.axes)
    plt.close(fig)


def test_figure1_labels_the_64x_line_and_the_printed_markers():
    table = speedup.speedup_table(kernels=(1, 3), channels=[1, 16, 256, 1024])
    fig = speedup.plot_figure1(table)
    assert all(any(t.startswith("64x") for t in [x.get_text() for x in ax.texts]) for ax in fig.axes)
    tables.mark_printed_speedups(fig.axes[0])
    text = " ".join(_texts(fig))
    assert f"{paper.SPEEDUP_256_3x3['xnor']:.2f}" in text and f"{paper.SPEEDUP_256_3x3['ours']:.2f}" in text
    plt.close(fig)
