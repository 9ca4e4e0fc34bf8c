"""Figures shared by the notebooks (matplotlib + seaborn): the series' style, data, training.

Notebook 03's figures are in :mod:`helpers.study.cluster_plots`, notebook 04's in
:mod:`helpers.study.sweep_plots`, notebook 05's in :mod:`helpers.study.network_plots`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

sns.set_theme(style="whitegrid", context="notebook")
plt.rcParams["figure.dpi"] = 80  # one style for the series; small figures keep notebooks light

# one colour and one marker per pruning strategy (rule), shared by every figure that tells rules
# apart, so that a rule reads the same in lessons 03-05 and in print
STRATEGIES = ("centroid", "first", "nearest", "merge", "l1", "random")
STRATEGY_COLORS = dict(zip(STRATEGIES, sns.color_palette("deep", 6), strict=True))
STRATEGY_MARKERS = dict(zip(STRATEGIES, ("o", "s", "D", "^", "v", "P"), strict=True))


def show_jpeg(fig, quality: int = 80) -> None:
    """Display ``fig`` as a JPEG (photos compress ~5x better than as PNG), then close it."""
    import io

    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=fig.dpi, bbox_inches="tight",
                pil_kwargs={"quality": quality})
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="jpeg"))


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


def class_counts(splits: dict[str, Tensor], classes: list[str]):
    """Bar chart of images per class, one panel per split (e.g. train / val / test labels)."""
    df = pd.DataFrame({"class": [classes[i] for labels in splits.values()
                                 for i in labels.tolist()],
                       "split": [f"{name} ({len(labels):,})" for name, labels in splits.items()
                                 for _ in range(len(labels))]})
    g = sns.catplot(df, y="class", col="split", kind="count", sharex=False, height=3.0,
                    aspect=0.9, color="steelblue", order=classes)
    g.set_titles("{col_name} images")
    return g.figure


def training_curves(history: list[dict], axes=None):
    """Loss and accuracy per epoch: training (augmented) and validation."""
    df = pd.DataFrame(history)
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ax_loss, ax_acc, ax_lr = axes
    ax_loss.plot(df.epoch, df.train_loss, label="train")
    ax_acc.plot(df.epoch, 100 * df.train_accuracy, label="train (augmented)")
    if "val_loss" in df:
        ax_loss.plot(df.epoch, df.val_loss, label="validation")
        ax_acc.plot(df.epoch, 100 * df.val_accuracy,
                    label=f"validation ({int(df.val_images.iloc[-1]):,} images)")
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


def confusion_matrix(logits: Tensor, labels: Tensor, classes: list[str], ax=None,
                     split: str = "validation"):
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
    ax.set_title(f"confusion matrix, % of each class ({len(labels):,} {split} images)")
    return ax.figure


def layer_macs(table: pd.DataFrame, ax=None):
    """MACs of every convolution and the classifier of a ``metrics.layer_table``, one bar per
    layer, coloured by ``metrics.layer_part``; the legend sits outside the axes."""
    from helpers.metrics import LAYER_PARTS, layer_part

    layers = table[table.MACs > 0]
    parts = layers.layer.map(layer_part)
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 3.5))
    sns.barplot(x=layers.layer, y=layers.MACs / 1e6, hue=parts, dodge=False, ax=ax,
                hue_order=[p for p in LAYER_PARTS if p in set(parts)])
    ax.set(xlabel="layer", ylabel="MACs per image (M)")
    ax.tick_params(axis="x", rotation=90)
    ax.legend(title="part of the network", loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def show_png(fig, colors: int = 128, dpi: float = 80) -> None:
    """Display ``fig`` as a PNG with an adaptive palette of ``colors`` colours, then close it.

    Line plots with shaded bands, scatter plots and colour-mapped matrices lose nothing visible
    and take 3-4x fewer bytes than matplotlib's full-colour PNG.
    """
    import io

    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    display(Image(data=palette_png(buf.getvalue(), colors), format="png"))


def palette_png(png: bytes, colors: int = 256) -> bytes:
    """A PNG re-encoded with an adaptive palette of at most ``colors`` colours (optimized)."""
    import io

    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.open(io.BytesIO(png)).convert("RGB").quantize(colors).save(
        out, format="png", optimize=True)
    return out.getvalue()
