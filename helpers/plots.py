"""Figures shared by the notebooks (matplotlib + seaborn)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

sns.set_theme(style="whitegrid", context="notebook")


def to_hwc(images: Tensor) -> np.ndarray:
    """uint8 (N, 3, H, W) tensors -> (N, H, W, 3) arrays for imshow."""
    return images.permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: Tensor, labels: Tensor, classes: list[str], per_class: int = 8):
    """The first ``per_class`` images of every class, one row per class."""
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.9, len(classes)))
    for c, row in enumerate(axes):
        picks = torch.nonzero(labels == c).flatten()[:per_class]
        for ax, img in zip(row, to_hwc(images[picks]), strict=False):
            ax.imshow(img)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
        row[0].set_ylabel(classes[c], rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    return fig


def augmentation_preview(original: Tensor, augmented: list[Tensor]):
    """Each row: an image, then several random crops/flips of it."""
    n = len(original)
    fig, axes = plt.subplots(n, 1 + len(augmented), figsize=(1.2 * (1 + len(augmented)), 1.2 * n),
                             squeeze=False)
    columns = [original, *augmented]
    for j, batch in enumerate(columns):
        for i, img in enumerate(to_hwc(batch)):
            axes[i, j].imshow(img)
            axes[i, j].axis("off")
        axes[0, j].set_title("original" if j == 0 else f"draw {j}", fontsize=9)
    fig.tight_layout(pad=0.2)
    return fig


def class_counts(train_labels: Tensor, test_labels: Tensor, classes: list[str]):
    """Bar chart of images per class in both splits."""
    df = pd.DataFrame({
        "class": [classes[i] for i in train_labels.tolist()] + [classes[i] for i in
                                                                test_labels.tolist()],
        "split": ["train"] * len(train_labels) + ["test"] * len(test_labels)})
    g = sns.catplot(df, y="class", col="split", kind="count", sharex=False, height=3.2, aspect=1.2,
                    color="steelblue", order=classes)
    g.set_titles("{col_name} ({col_var})")
    return g.figure


def training_curves(history: list[dict], axes=None):
    """Loss and accuracy per epoch, train and test."""
    df = pd.DataFrame(history)
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ax_loss, ax_acc, ax_lr = axes
    ax_loss.plot(df.epoch, df.train_loss, label="train")
    ax_acc.plot(df.epoch, 100 * df.train_accuracy, label="train (augmented)")
    if "test_loss" in df:
        ax_loss.plot(df.epoch, df.test_loss, label="test")
        ax_acc.plot(df.epoch, 100 * df.test_accuracy,
                    label=f"test ({int(df.test_images.iloc[-1]):,} images)")
    ax_lr.plot(df.epoch, df.lr, color="gray")
    for ax, title in zip(axes, ("loss", "accuracy (%)", "learning rate at epoch end"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    ax_loss.legend()
    ax_acc.legend()
    ax_acc.set_ylim(max(0, 100 * df.train_accuracy.min() - 5), 100)
    ax_loss.figure.tight_layout()
    return ax_loss.figure


class LiveCurves:
    """A training callback that redraws :func:`training_curves` in place while training runs.

    In Jupyter the figure updates in one output; elsewhere (scripts, papermill) it only keeps
    the history, and ``figure()`` draws the final curves.
    """

    def __init__(self, every: int = 1):
        self.every, self.history, self.handle = every, [], None

    def __call__(self, record: dict) -> None:
        self.history.append(record)
        if len(self.history) % self.every:
            return
        try:
            from IPython.display import display
        except ImportError:
            return
        fig = self.figure()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)

    def figure(self):
        return training_curves(self.history)


def confusion_matrix(logits: Tensor, labels: Tensor, classes: list[str], ax=None):
    """Row-normalised confusion matrix (% of each true class), with the image count."""
    pred = logits.argmax(1)
    n = len(classes)
    counts = torch.bincount(labels * n + pred, minlength=n * n).view(n, n).float()
    pct = 100 * counts / counts.sum(1, keepdim=True).clamp(min=1)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    sns.heatmap(pd.DataFrame(pct.numpy(), index=classes, columns=classes), annot=True, fmt=".0f",
                cmap="Blues", cbar=False, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix, % of each class ({len(labels):,} test images)")
    return ax.figure
