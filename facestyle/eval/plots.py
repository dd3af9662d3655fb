"""PNG figures: ROC curves and training curves (matplotlib's Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facestyle.errors import UsageError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"plots are PNG files: {path} should end in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_roc(
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path, title: str = "ROC"
) -> Path:
    """One ROC per (label, fpr, tpr); log-scale FAR so the low-FAR region (where products run) is visible."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    try:
        for label, fpr, tpr in curves:
            fpr = np.asarray(fpr)
            keep = fpr > 0
            ax.plot(fpr[keep], np.asarray(tpr)[keep], label=label, linewidth=1.6)
        ax.set_xscale("log")
        ax.set_xlim(
            left=max(1e-4, min((np.asarray(c[1])[np.asarray(c[1]) > 0].min() for c in curves), default=1e-3))
        )
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false accept rate (log)")
        ax.set_ylabel("true accept rate")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_training(
    history: Sequence[dict], path: str | Path, title: str = "training", loss_name: str = "triplet"
) -> Path:
    """Train/held-out loss (left axis) and held-out verification accuracy (right axis) per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        ax.plot(
            epochs[1:], [h["train_loss"] for h in history[1:]], "o-", label="train loss", color="tab:blue"
        )
        ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="held-out loss", color="tab:cyan")
        ax.set_xlabel("epoch (0 = before training)")
        ax.set_ylabel("triplet loss")
        ax2 = ax.twinx()
        ax2.plot(
            epochs,
            [100 * h["val_accuracy"] for h in history],
            "^-",
            label="held-out accuracy",
            color="tab:red",
        )
        ax2.set_ylabel("held-out 10-fold accuracy (%)")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        return _save(fig, path)
    finally:
        plt.close(fig)
