"""helpers.lesson: a lesson's profile, scratch folder and the labels of the study's results."""

import json
import sys

import pytest

from helpers import lesson, paths


def test_lesson_profiles_only(capsys):
    with pytest.raises(ValueError, match="make reproduce"):
        lesson.start("99_x", "cpu")
    with pytest.raises(ValueError, match="'auto', 'ci'"):
        lesson.start("99_x", "full")


def test_ci_scratch_is_a_fresh_temporary_folder_outside_the_repository():
    a, b = lesson.start("99_x", "ci"), lesson.start("99_x", "ci")
    assert a.scratch != b.scratch and a.scratch.is_dir()
    assert paths.ROOT not in a.scratch.parents
    assert a.profile == "ci"


def test_lesson_scratch_is_under_build(monkeypatch, tmp_path):
    monkeypatch.setattr(lesson, "SCRATCH", tmp_path / "build" / "lessons")
    run = lesson.start("99_x", "auto")
    assert run.scratch == tmp_path / "build" / "lessons" / "99_x" and run.scratch.is_dir()
    assert run.profile == "lesson"


@pytest.mark.parametrize(("profile", "gpu", "expected"),
                         [("ci", False, "c"), ("ci", True, "c"), ("lesson", False, "a"),
                          ("lesson", True, "b")])
def test_pick_by_profile_and_device(profile, gpu, expected, tmp_path):
    import torch

    run = lesson.Lesson("x", profile, torch.device("cuda" if gpu else "cpu"), tmp_path)
    assert run.pick(cpu="a", gpu="b", ci="c") == expected


def test_colab_cpu_runtime_prints_the_gpu_hint(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", object())
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    lesson.start("99_x", "ci")
    assert "Change runtime type" in capsys.readouterr().out


def test_label_says_device_date_and_images(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps(
        {"profile": "full", "device": "GPU X", "val_images": 5000, "test_images": 1000}))
    (tmp_path / "series.json").write_text(json.dumps(
        {"notebooks": {"02_train_cifar10": {"full": {"date": "2026-01-02", "seconds": 1}}}}))
    text = lesson.label("train.json", tmp_path)
    assert text == ("committed study run (`full` profile, GPU X, 2026-01-02; 5,000 validation "
                    "and 1,000 test images)")


def test_missing_study_result_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make reproduce"):
        lesson.study("network_pruning.json", tmp_path)


def test_images_text_of_a_test_split_only_sweep():
    assert lesson.images_text({"eval_images": 200, "eval_split": "test"}) == (
        "image counts not recorded")
    assert lesson.images_text({"eval_images": 2500, "eval_split": "val"}) == (
        "2,500 validation images")


# ---------------------------------------------------------------- grading a timed prediction


def test_faster_in_every_round_needs_separated_rounds():
    separated = {"A": [10, 11, 10.5, 10.2, 10.8, 10.1], "B": [12, 12.5, 12.1, 11.9, 12.3, 12]}
    overlapping = {"A": [10, 12.6, 10.5, 12.2, 10.8, 10.1], "B": [12, 12.5, 12.1, 11.9, 12.3, 12]}
    assert lesson.faster_in_every_round(separated) == "A"
    assert lesson.faster_in_every_round({"B": separated["B"], "A": separated["A"]}) == "A"
    assert lesson.faster_in_every_round(overlapping) is None
    assert lesson.faster_in_every_round({"A": [1] * 5, "B": [2] * 5}) is None  # too few rounds


def test_grade_faster_refuses_a_grading_within_the_spread():
    # A is faster in the median (4 of 6 rounds) but not in every round: a prediction "B" would
    # be graded wrong on noise, so no grade is given, and neither is "right" for "A"
    times = {"A": [10, 10, 10, 10, 13, 13], "B": [11, 11, 11, 11, 12, 12]}
    for guess in ("A", "B"):
        line = lesson.grade_faster(guess, times)
        assert line.startswith("too close to call") and "not graded" in line
    assert lesson.grade_faster("B", {"A": [10] * 4, "B": [11] * 4}).startswith("too close")
    assert lesson.grade_faster(None, times).startswith("not attempted")


def test_grade_faster_grades_separated_samples():
    times = {"A": [10, 11, 10.5, 10.2, 10.8, 10.1], "B": [12, 12.5, 12.1, 11.9, 12.3, 12]}
    assert lesson.grade_faster("A", times).startswith("right: A was faster")
    assert lesson.grade_faster("B", times).startswith("wrong: A was faster")


# ---------------------------------------------------------------- lesson 05, exercise 1's check


def _params_by_hand(plan, shortcut="conv3x3", classes=10, bn=True, projection=True):
    """ResNet20's parameters by hand; ``bn``/``projection`` False: two plausible mistakes."""
    per_bn = 2 if bn else 0
    total, c_in = 3 * 16 * 9 + per_bn * 16, 16
    for i, k in enumerate(plan):
        c_out = (16, 32, 64)[i // 3]
        total += c_in * k * 9 + per_bn * k + k * c_out * 9 + per_bn * c_out
        if i in (3, 6) and projection:
            total += c_in * c_out * 9 + per_bn * c_out
        c_in = c_out
    return total + 64 * classes + classes


@pytest.mark.parametrize(("answer", "verdict"), [
    (_params_by_hand, "right"),
    (lambda p, shortcut="conv3x3", classes=10: _params_by_hand(p, bn=False), "wrong"),
    (lambda p, shortcut="conv3x3", classes=10: _params_by_hand(p, projection=False), "wrong")])
def test_lesson05_params_check_rejects_forgotten_bn_or_shortcut(answer, verdict, capsys):
    import nbformat

    from helpers import plans
    from helpers.models import DEFAULT_WIDTHS

    nb = nbformat.read(paths.ROOT / "notebooks" / "05_network_pruning.ipynb", as_version=4)
    check = next(c.source for c in nb.cells
                 if c.cell_type == "code" and "my_plan_params(p) for p in" in c.source)
    study_plans = [c["plan"] for c in lesson.study("network_pruning.json")["candidates"]]
    plan = (8, 0, 8, 24, 16, 16, 32, 32, 32)
    assert _params_by_hand(plan) == plans.plan_params(plan)  # the right answer is right
    exec(check, {"my_plan_params": answer, "plans": plans, "PLAN": plan,  # noqa: S102
                 "DEFAULT_WIDTHS": DEFAULT_WIDTHS, "study_plans": study_plans})
    assert capsys.readouterr().out.startswith(verdict)
