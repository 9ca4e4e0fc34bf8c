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
