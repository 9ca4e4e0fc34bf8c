"""ResNet20 for CIFAR-10 (He et al. 2016, section 4.2), with prunable block widths.

Module names follow the original work this project grows from, so that its saved state_dicts
load with ``strict=True`` into ``resnet20(shortcut="conv3x3")``: top ``conv``/``bn``,
``layer1``..``layer3`` (each an ``nn.Sequential`` of three blocks), ``fc``; inside a block
``conv1``, ``bn1``, ``conv2``, ``bn2`` and ``shortcut``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

STAGE_WIDTHS = (16, 32, 64)
BLOCKS_PER_STAGE = 3
DEFAULT_WIDTHS = tuple(w for w in STAGE_WIDTHS for _ in range(BLOCKS_PER_STAGE))
STAGE_NAMES = tuple(f"layer{s + 1}" for s in range(len(STAGE_WIDTHS)))
BLOCK_NAMES = tuple(f"layer{s + 1}.{b}" for s in range(len(STAGE_WIDTHS))
                    for b in range(BLOCKS_PER_STAGE))
SHORTCUTS = ("A", "conv3x3")
# blocks whose shortcut is the identity, the ones that can be removed: all but the first block
# of stages 2 and 3, which downsamples (stride 2, more planes) through its shortcut
REMOVABLE = tuple(f"layer{s + 1}.{b}" for s in range(len(STAGE_WIDTHS))
                  for b in range(BLOCKS_PER_STAGE) if s == 0 or b > 0)


def check_removable(removed: Sequence[str]) -> tuple[str, ...]:
    """Block names that may be removed (kept at 0 filters): those in :data:`REMOVABLE`, whose
    shortcut is the identity (a downsampling block's projection carries its stage's input on).
    """
    if isinstance(removed, str):
        raise ValueError(f"removed must be a sequence of block names, got the string {removed!r}")
    removed = tuple(removed)
    bad = [b for b in removed if b not in REMOVABLE]
    if bad:
        raise ValueError(f"cannot remove block(s) {bad}: {', '.join(map(str, bad))} cannot keep "
                         f"0 filters, only blocks with an identity shortcut can be removed "
                         f"({', '.join(REMOVABLE)})")
    return removed


class PadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, out_planes: int, in_planes: int):
        super().__init__()
        self.extra = out_planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        pad = self.extra // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, self.extra - pad))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    ``mid_planes`` is conv1's output width: pruning shrinks it, while ``planes`` (conv2's
    output) must stay because of the residual addition. With ``mid_planes = 0`` (every filter
    pruned) conv2 would write zeros, so the residual branch is bn2 of zeros, a per-channel
    constant, and the block costs no MACs: in eval mode it adds bn2's shift
    ``bias - weight * running_mean / sqrt(running_var + eps)``, which is ``bias`` once the
    running statistics describe the zeros it now normalises (after training or
    recalibration), as in train mode.
    """

    def __init__(self, in_planes: int, mid_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        with warnings.catch_warnings():  # a removed block's empty weights: nothing to initialise
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.conv1 = nn.Conv2d(in_planes, mid_planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid_planes)
            self.conv2 = nn.Conv2d(mid_planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = PadShortcut(planes, in_planes)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes))

    def residual(self, x: Tensor) -> Tensor:
        """The residual branch, bn2(conv2(relu(bn1(conv1(x)))))."""
        if self.conv1.out_channels == 0:  # conv2 of no channels: zeros (two, for BN's variance)
            return self.bn2(x.new_zeros(2, self.bn2.num_features, 1, 1))[:1]
        out = F.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: a 3x3 stem, three stages of BasicBlocks, global average pool, linear."""

    def __init__(self, widths: Sequence[int], shortcut: str = "A", num_classes: int = 10,
                 stage_widths: Sequence[int] = STAGE_WIDTHS):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.stage_widths = tuple(int(w) for w in stage_widths)
        self.shortcut = shortcut
        self.num_classes = num_classes
        self.meta: dict = {}
        self.conv = nn.Conv2d(3, self.stage_widths[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(self.stage_widths[0])
        in_planes, mids = self.stage_widths[0], iter(self.widths)
        for s, planes in enumerate(self.stage_widths):
            blocks = []
            for b in range(BLOCKS_PER_STAGE):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_planes, next(mids), planes, stride, shortcut))
                in_planes = planes
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(self.stage_widths[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            # as torchvision's ResNets (fc keeps PyTorch's default); a removed block's
            # conv1/conv2 have no weights to initialise
            if isinstance(m, nn.Conv2d) and m.weight.numel():
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def blocks(self) -> dict[str, BasicBlock]:
        """The nine BasicBlocks by name ("layer1.0" .. "layer3.2")."""
        return {name: self.get_submodule(name) for name in BLOCK_NAMES}


def check_widths(widths: Sequence[int] | None) -> tuple[int, ...]:
    """Validate a list of nine conv1 widths (None means the original ResNet20); a width of 0
    removes the block's residual branch (see :class:`BasicBlock`)."""
    if widths is None:
        return DEFAULT_WIDTHS
    widths = tuple(int(w) if isinstance(w, np.integer) else w for w in widths)
    if len(widths) != len(BLOCK_NAMES):
        raise ValueError(f"widths needs {len(BLOCK_NAMES)} integers, one per block "
                         f"({', '.join(BLOCK_NAMES)}); got {len(widths)}: {widths}")
    for name, w in zip(BLOCK_NAMES, widths, strict=True):
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 0:
            raise ValueError(f"widths: block {name} must have a non-negative integer width, "
                             f"got {w!r}")
    return widths


def check_stage_widths(stage_widths: Sequence[int] | None, shortcut: str) -> tuple[int, ...]:
    """Validate the residual (stage) widths: three positive integers, at most the original
    ones (None means :data:`STAGE_WIDTHS`). Narrower stages need the ``"conv3x3"`` shortcut:
    option A's zero padding ties a stage's channels to the next stage's."""
    if stage_widths is None:
        return STAGE_WIDTHS
    stage_widths = tuple(stage_widths)
    if len(stage_widths) != len(STAGE_WIDTHS) or not all(
            isinstance(w, (int, np.integer)) and not isinstance(w, bool) and 0 < w <= full
            for w, full in zip(stage_widths, STAGE_WIDTHS, strict=True)):
        raise ValueError(f"stage_widths needs {len(STAGE_WIDTHS)} integers, each in 1.."
                         f"{'/'.join(map(str, STAGE_WIDTHS))}, got {stage_widths}")
    stage_widths = tuple(int(w) for w in stage_widths)
    if stage_widths != STAGE_WIDTHS and shortcut != "conv3x3":
        raise ValueError(f"narrower stages {stage_widths} need shortcut='conv3x3' (option A's "
                         f"zero padding couples the channels of consecutive stages)")
    return stage_widths


def resnet20(shortcut: str = "A", widths: Sequence[int] | None = None,
             num_classes: int = 10, stage_widths: Sequence[int] | None = None) -> ResNet:
    """ResNet20 for 32x32 inputs.

    Args:
        shortcut: ``"A"`` (parameter-free zero-padding identity, as in the paper) or
            ``"conv3x3"`` (3x3 conv + BN projection on downsampling blocks, as in the
            original work).
        widths: conv1 output width of each of the nine blocks (default 16,16,16,32,...,64);
            0 removes a block's residual branch.
        num_classes: outputs of the final linear layer.
        stage_widths: the residual channels of each stage (default 16, 32, 64), what the stem,
            every conv2 and the projection shortcuts write (:mod:`helpers.study.channels` prunes
            them).
    """
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    return ResNet(check_widths(widths), shortcut, num_classes,
                  check_stage_widths(stage_widths, shortcut))


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """``load_state_dict(strict=True)`` with an error that names both shapes on a mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(f"state_dict does not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for key, value in state_dict.items():
        if own[key].shape != value.shape:
            raise ValueError(f"shape mismatch for {key}: checkpoint has {tuple(value.shape)}, "
                             f"the model expects {tuple(own[key].shape)}")
    model.load_state_dict(state_dict, strict=True)


def _plain(value):
    """Metadata as plain Python types, so that ``torch.load(weights_only=True)`` accepts it."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)  # e.g. torch.__version__ is a str subclass
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    return value


def save_model(model: ResNet, path: str | os.PathLike, **meta) -> None:
    """Save weights plus what is needed to rebuild the model (shortcut, widths, stage widths,
    classes).

    ``meta`` (plain values: numbers, strings, lists, dicts) comes back as ``model.meta``.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "shortcut": model.shortcut, "widths": list(model.widths),
                "stage_widths": list(model.stage_widths), "num_classes": model.num_classes,
                "meta": _plain(meta)}, path)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ResNet:
    """Rebuild a model saved by :func:`save_model`; its metadata is in ``model.meta``.

    Only tensors and plain values are unpickled (``weights_only=True``): a corrupt file, or one
    that is not a checkpoint of :func:`save_model`, raises a ``ValueError`` naming the file.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch's message advises weights_only=False: unsafe, never do it
        raise ValueError(f"{path} is not a readable model checkpoint (corrupt, truncated, or "
                         f"not written by save_model): {type(e).__name__}") from None
    keys = ("state_dict", "shortcut", "widths", "num_classes")
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in keys):
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a checkpoint of save_model: it needs the keys {keys}, "
                         f"found {found}")
    model = resnet20(ckpt["shortcut"], ckpt["widths"], ckpt["num_classes"],
                     ckpt.get("stage_widths"))  # older checkpoints: the full stages
    load_state_dict_checked(model, ckpt["state_dict"])
    model.meta = dict(ckpt.get("meta", {}))
    return model.to(map_location)
