"""Where the repository keeps what the notebooks produce (independent of the working directory)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
RESULTS = ROOT / "results"
IMG = ROOT / "img"
CHECKPOINT = CHECKPOINTS / "resnet20.pt"
