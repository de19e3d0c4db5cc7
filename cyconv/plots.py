"""PNG plots of training (matplotlib optional: ``pip install "cyconv[demo]"``).

* :func:`plot_history`: learning curves, loss and accuracy per epoch for the
  training and the test set.
* :func:`plot_filters`: the first convolution layer's filters as a grid of
  grey images, before and after training (the textbook's ch. 7 figure).

The figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``), so
importing this module never changes the backend of an interactive session.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["plot_filters", "plot_history"]


def _figure(width, height):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError('plotting needs matplotlib, which is not installed; install it '
                          'with: pip install "cyconv[demo]"') from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _series(history, name):
    values = history[name] if isinstance(history, dict) else getattr(history, name)
    return np.asarray(values, dtype=float)


def plot_history(history, path, title=None):
    """Save learning curves (loss and accuracy per epoch, train and test) to ``path``.

    ``history`` is a :class:`cyconv.training.History` or a dict with the lists
    ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``.  Returns ``path``.
    """
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = np.arange(1, len(_series(history, "train_loss")) + 1)
    for ax, metric, label in ((ax_loss, "loss", "loss (cross-entropy)"),
                              (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "o-"), ("test", "s--")):
            values = _series(history, f"{split}_{metric}")
            if len(values) and not np.all(np.isnan(values)):
                ax.plot(epochs[:len(values)], values, style, markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    acc = _series(history, "test_acc")
    if len(acc) and not np.all(np.isnan(acc)):
        ax_acc.set_title(f"final test accuracy {acc[-1]:.2%}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    return os.fspath(path)


def _draw_grid(fig, grid, filters, row0, nrows, ncols, label):
    """Draw ``filters`` (FN, C, FH, FW), channel 0, in rows ``row0..row0+nrows``."""
    count = filters.shape[0]
    for i in range(nrows * ncols):
        ax = fig.add_subplot(grid[row0 + i // ncols, i % ncols])
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= count:
            ax.axis("off")
            continue
        ax.imshow(filters[i, 0], cmap="gray_r", interpolation="nearest")
        if i == 0:
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)


def plot_filters(before, after=None, path="filters.png", ncols=None):
    """Save the first conv layer's filters as grids, ``before`` and (optionally) ``after``.

    ``before``/``after`` are weight arrays (FN, C, FH, FW); channel 0 of each
    filter is drawn in grey (dark = large weight, as in the textbook).  Returns ``path``.
    """
    before = np.asarray(before)
    if before.ndim != 4:
        raise ValueError(f"filters must have shape (FN, C, FH, FW), got {before.shape}")
    sets = [("before", before)]
    if after is not None:
        after = np.asarray(after)
        if after.shape != before.shape:
            raise ValueError(f"before {before.shape} and after {after.shape} filters differ "
                             f"in shape")
        sets.append(("after", after))
    count = before.shape[0]
    ncols = ncols or min(count, 10)
    nrows = -(-count // ncols)
    gap = 1 if len(sets) > 1 else 0  # a thin spacer row between "before" and "after"
    total_rows = nrows * len(sets) + gap
    ratios = [1] * nrows + [0.35] * gap + [1] * nrows * (len(sets) - 1)
    fig = _figure(ncols * 0.9 + 1.0, total_rows * 0.9 + 0.6)
    grid = fig.add_gridspec(total_rows, ncols, hspace=0.15, wspace=0.1,
                            height_ratios=ratios)
    for k, (label, filters) in enumerate(sets):
        _draw_grid(fig, grid, filters, k * (nrows + gap), nrows, ncols, label)
    fig.suptitle("first conv layer filters" + (" before / after training" if after is not None
                                               else ""))
    fig.savefig(os.fspath(path))
    return os.fspath(path)
