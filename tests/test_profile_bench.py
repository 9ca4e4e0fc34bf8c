from types import SimpleNamespace

import pytest
import torch

from helpers import paths
from helpers.data import PILDataset
from helpers.models import resnet20
from helpers.study import bench
from helpers.study.bench import seed_pipeline_seconds_per_epoch, seed_transform
from helpers.study.profile import SIZES, NetworkSizes, outputs, resolve_profile
from helpers.study.training import profile_config, profile_data, state_path


def test_resolve_profile(monkeypatch):
    for profile in ("full", "cpu", "ci"):
        assert resolve_profile(profile) == profile
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile("auto") == "cpu"  # a fresh CPU-only runtime reproduces the outputs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile("auto") == "full"
    for bad in ("fast", "standin", "CPU"):
        with pytest.raises(ValueError, match="PROFILE must be one of"):
            resolve_profile(bad)


def test_ci_outputs_never_point_into_the_repository():
    out = outputs("ci")
    for folder in (out.checkpoints, out.results, out.img):
        assert folder.is_dir() and paths.ROOT not in folder.parents
    assert outputs("full").checkpoint == paths.CHECKPOINT
    assert outputs("cpu").checkpoint == paths.CHECKPOINT


def test_training_profile_recipe_data_and_state(tiny_data):
    ci = SIZES["ci"].train
    cfg = profile_config("ci", seed=3)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed) == (ci.epochs, ci.batch_size, ci.lr, 3)
    assert cfg.checkpoint_every == 1  # short runs are checkpointed every epoch
    assert len(profile_data(tiny_data, "ci").train_labels) == min(ci.train_images,
                                                                  len(tiny_data.train_labels))
    assert state_path("ci").parent == outputs("ci").checkpoints


def test_finetuning_schedules_are_checked():
    for profile in SIZES.values():  # every profile has at least one valid candidate schedule
        assert profile.network.schedules
    for bad in ((), ((0.04, 128), (0.04, 128)), ((0.0, 128),), ((0.04, 0),), ((0.04, 1.5),)):
        with pytest.raises(ValueError, match="schedule"):
            NetworkSizes(schedules=bad)


def test_seed_pipeline_dataset_and_timing(tiny_data):
    ds = PILDataset(tiny_data.train_images, tiny_data.train_labels, seed_transform())
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    assert isinstance(y, int)


def test_seed_pipeline_times_only_the_steps_after_warm_up(tiny_data, monkeypatch):
    # A clock that moves 0.25 s per training batch (each forward pass of the model), so the
    # timing is known: 0.25 s per batch x (images / 100) batches per epoch. Timing the 5
    # warm-up batches too, or dividing by another count than ``steps``, gives another number.
    clock = {"t": 1000.0}

    def timed_resnet20(shortcut):
        model = resnet20(shortcut)
        model.register_forward_pre_hook(lambda *_: clock.__setitem__("t", clock["t"] + 0.25))
        return model

    monkeypatch.setattr(bench, "resnet20", timed_resnet20)
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: clock["t"]))
    images = len(tiny_data.train_labels)
    seconds = seed_pipeline_seconds_per_epoch(tiny_data, torch.device("cpu"), steps=3, shortcut="A")
    assert seconds == pytest.approx(0.25 * images / 100)
    assert clock["t"] == 1000.0 + 0.25 * (5 + 3)  # 5 warm-up batches, then the 3 timed ones


def test_step_seconds_times_the_precision_each_variant_names(tiny_data, monkeypatch):
    """On a CPU where the trainer would choose fp32, the benchmark's "bf16" variant must still
    run in bf16 (and "fp32" in fp32): it measures what it names, not the trainer's choice."""
    import helpers.train as train_mod

    monkeypatch.setattr(train_mod, "cpu_bf16_faster", lambda batch_size: False)
    made = {}
    real = bench.make_step

    def spy(model, cfg, device, teacher=None, bf16=None):
        step = real(model, cfg, device, teacher, bf16)
        made[cfg.bf16] = step.bf16
        return step

    monkeypatch.setattr(bench, "make_step", spy)
    bench.step_seconds(tiny_data.train_images, tiny_data.train_labels, torch.device("cpu"),
                       {"fp32": {"bf16": False}, "bf16": {"bf16": True}}, batch_size=8,
                       steps=1, rounds=1, warmup=1)
    assert made == {False: False, True: True}
    assert not train_mod.EagerStep(resnet20(), train_mod.TrainConfig(), torch.device("cpu")).bf16
