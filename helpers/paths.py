"""Where the repository keeps what the notebooks produce (independent of the working directory)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
DATA = ROOT / "data"  # CIFAR-10 (helpers.data) unless $CIFAR10_ROOT or root= names another
RESULTS = ROOT / "results"
IMG = ROOT / "img"
CHECKPOINT = CHECKPOINTS / "resnet20.pt"
