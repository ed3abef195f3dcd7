"""Training curves and final metrics of one run, from its ``metrics.csv``.

``metrics.csv`` has one row per epoch (``xnorpp_core.training.METRICS_COLUMNS``):
epoch, lr, train_loss, train_top1, val_loss, val_top1, val_top5, seconds,
images_per_second; accuracies are in percent. Training accuracy is measured on
the augmented batches while the weights move, validation after the epoch.
"""

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

__all__ = ["CURVE_COLUMNS", "plot_curves", "final_metrics"]

CURVE_COLUMNS = ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5")


def _check(metrics):
    missing = [c for c in CURVE_COLUMNS if c not in metrics.columns]
    if missing:
        raise ValueError(f"metrics lack the columns {missing}")
    if metrics.empty:
        raise ValueError("metrics hold no epoch")


def plot_curves(metrics, title=""):
    """Loss, top-1 and top-5 per epoch (train and validation), with the learning-rate drops marked."""
    _check(metrics)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    panels = (("loss", ("train_loss", "val_loss"), "cross-entropy"),
              ("top-1", ("train_top1", "val_top1"), "accuracy (%)"),
              ("top-5", ("val_top5",), "accuracy (%)"))
    drops = metrics.epoch[metrics.lr.diff() < 0]  # first epoch run at a lower learning rate
    for ax, (name, columns, ylabel) in zip(axes, panels):
        for column in columns:
            split = "train" if column.startswith("train") else "validation"
            ax.plot(metrics.epoch, metrics[column], marker="o", ms=3, label=split,
                    color="tab:blue" if split == "train" else "tab:orange")
        for epoch in drops:
            ax.axvline(epoch - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_xlim(metrics.epoch.min() - 0.5, metrics.epoch.max() + 0.5)  # at least one epoch wide
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole epochs only
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if len(drops):
        axes[0].text(0.99, 0.98, "dotted: learning-rate drop", transform=axes[0].transAxes, ha="right",
                     va="top", fontsize=7, color="grey")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def final_metrics(metrics):
    """The last epoch and the best validation top-1 epoch side by side, one row per metric."""
    _check(metrics)
    final = metrics.iloc[-1]
    best = metrics.loc[metrics.val_top1.idxmax()]
    names = [c for c in CURVE_COLUMNS if c != "lr"]
    return pd.DataFrame({"metric": names, "final": [final[c] for c in names],
                         "best val top-1": [best[c] for c in names]})
