import math

import pytest
import torch

import helpers.train as train_mod
from helpers.models import resnet20
from helpers.train import EagerStep, TrainConfig, bf16_supported, lr_at, make_optimizer, train

CFG = TrainConfig(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.5, checkpoint_every=1)


def fresh(seed=0):
    torch.manual_seed(seed)
    return resnet20(widths=(4,) * 3 + (8,) * 3 + (8,) * 3)


def run(data, cfg=CFG, **kw):
    model = fresh()
    return model, train(model, data, cfg, device="cpu", progress=False, **kw)


def test_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 10, 0.4) for s in range(100)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10], strict=False))
    assert lrs[9] == pytest.approx(0.4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 1e-3


def test_weight_decay_only_on_conv_and_linear_weights():
    opt = make_optimizer(fresh(), CFG, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == CFG.weight_decay and no_decay["weight_decay"] == 0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


def test_history_and_determinism(tiny_splits):
    m1, h1 = run(tiny_splits)
    m2, h2 = run(tiny_splits)
    assert [r["epoch"] for r in h1] == [1, 2]
    keys = {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_images", "lr",
            "seconds"}
    assert keys <= set(h1[0]) and h1[0]["val_images"] == 10
    assert not any(k.startswith("test") for k in h1[0])  # training never looks at the test set
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_after_interruption_equals_uninterrupted_run(tiny_splits, tmp_path):
    reference, ref_history = run(tiny_splits)

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_splits, checkpoint=ckpt, callback=interrupt)
    resumed, history = run(tiny_splits, checkpoint=ckpt)  # a fresh process would start like this
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    def without_time(h):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in h]

    assert without_time(history) == without_time(ref_history)


def test_resume_refuses_another_config(tiny_splits, tmp_path):
    run(tiny_splits, checkpoint=tmp_path / "run.pt")
    with pytest.raises(ValueError, match="another config"):
        run(tiny_splits, TrainConfig(**{**CFG.__dict__, "lr": 0.1}), checkpoint=tmp_path / "run.pt")


def test_resume_refuses_other_training_data(tiny_splits, tmp_path):
    run(tiny_splits, checkpoint=tmp_path / "run.pt")
    fewer = tiny_splits._replace(train_images=tiny_splits.train_images[:64],
                               train_labels=tiny_splits.train_labels[:64])
    with pytest.raises(ValueError, match="train_images"):
        run(fewer, checkpoint=tmp_path / "run.pt")


def test_resume_refuses_same_size_but_other_labels(tiny_splits, tmp_path):
    run(tiny_splits, checkpoint=tmp_path / "run.pt")
    relabelled = tiny_splits._replace(train_labels=(tiny_splits.train_labels + 1) % 10)
    with pytest.raises(ValueError, match="'data'"):
        run(relabelled, checkpoint=tmp_path / "run.pt")


def test_resume_refuses_a_run_with_a_teacher(tiny_splits, tmp_path):
    run(tiny_splits, checkpoint=tmp_path / "run.pt")
    with pytest.raises(ValueError, match="'teacher'"):
        run(tiny_splits, checkpoint=tmp_path / "run.pt", teacher=fresh(1))


@pytest.mark.parametrize("faster", [True, False])
def test_bf16_follows_the_config_and_the_measurement(monkeypatch, faster):
    """On a CPU with bf16 units, the step uses bf16 only when the measurement says it pays."""
    monkeypatch.setattr(train_mod, "cpu_has_bf16_units", lambda: True)
    monkeypatch.setattr(train_mod, "cpu_bf16_faster", lambda batch_size: faster)
    model, cpu = fresh(), torch.device("cpu")
    assert not EagerStep(model, TrainConfig(bf16=False), cpu).bf16
    assert EagerStep(model, TrainConfig(bf16=True), cpu).bf16 is faster


def test_no_bf16_on_a_cpu_without_bf16_units(monkeypatch):
    monkeypatch.setattr(train_mod, "cpu_has_bf16_units", lambda: False)
    monkeypatch.setattr(train_mod, "cpu_bf16_faster", lambda batch_size: True)
    assert not bf16_supported("cpu")


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), False), ((8, 0), True),
                                                       ((9, 0), True), ((6, 1), False)])
def test_cuda_bf16_by_compute_capability_not_by_emulation(monkeypatch, capability, expected):
    """A T4 (7.5) reports is_bf16_supported() True through emulation: it must not count."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: not expected)
    assert bf16_supported("cuda") is expected


def test_cpu_bf16_faster_compares_interleaved_medians(monkeypatch):
    """fp32 and bf16 take turns; the warm-up round is dropped; medians decide."""
    calls = []
    # warm-up: bf16 looks fast; then bf16 is slower in 2 of 3 rounds (and in the median)
    seconds = iter([9.0, 0.1, 1.0, 2.0, 1.0, 0.5, 1.0, 3.0])

    def fake(model, x, y, bf16, steps):
        calls.append(bf16)
        return next(seconds)

    monkeypatch.setattr(train_mod, "_cpu_step_seconds", fake)
    train_mod.cpu_bf16_faster.cache_clear()
    try:
        assert train_mod.cpu_bf16_faster(8, steps=1, rounds=3) is False
        assert calls == [False, True] * 4
    finally:
        train_mod.cpu_bf16_faster.cache_clear()


@pytest.mark.skipif(not train_mod.cpu_has_bf16_units(), reason="this CPU has no bf16 units")
def test_bf16_training_on_the_cpu_learns_and_stays_finite(tiny_splits, monkeypatch):
    """The bf16 step computes the same loss as fp32 up to bf16 rounding, and trains."""
    monkeypatch.setattr(train_mod, "cpu_bf16_faster", lambda batch_size: True)  # force bf16
    x = tiny_splits.train_images[:32].float() / 255
    y = tiny_splits.train_labels[:32]
    losses = {}
    for bf16 in (False, True):
        model = fresh()
        loss, _ = EagerStep(model, TrainConfig(bf16=bf16), torch.device("cpu"))(x, y)
        losses[bf16] = loss.item()
    assert losses[True] == pytest.approx(losses[False], rel=0.05)
    _, history = run(tiny_splits)
    assert all(math.isfinite(r["train_loss"]) for r in history)


def test_nan_loss_stops_with_clear_error(tiny_splits):
    model = fresh()
    with torch.no_grad():
        model.fc.bias.fill_(math.nan)
    with pytest.raises(FloatingPointError, match="diverged"):
        train(model, tiny_splits, CFG, device="cpu", progress=False)


def test_batch_larger_than_dataset(tiny_splits):
    with pytest.raises(ValueError, match="larger than the 90 training images"):
        run(tiny_splits, TrainConfig(batch_size=128))


def test_distillation_pulls_the_student_towards_the_teacher(tiny_splits):
    """With only the distillation loss, the student's predictions move towards the teacher's."""
    from helpers.metrics import predict

    teacher = fresh(1).eval()
    cfg = TrainConfig(**{**CFG.__dict__, "distill_weight": 1.0, "epochs": 4, "lr": 0.02})

    def kl_to_teacher(student):
        images, temp = tiny_splits.train_images, cfg.distill_temperature
        t = torch.log_softmax(predict(teacher, images) / temp, 1)
        s = torch.log_softmax(predict(student, images) / temp, 1)
        return torch.nn.functional.kl_div(s, t, reduction="batchmean", log_target=True).item()

    student = fresh()
    before = kl_to_teacher(student)
    history = train(student, tiny_splits, cfg, device="cpu", progress=False, teacher=teacher)
    assert all(math.isfinite(r["train_loss"]) for r in history)
    assert kl_to_teacher(student) < 0.5 * before
