"""python -m helpers.study.bench latency: the committed networks' speed-ups on this CPU."""

from __future__ import annotations

import json

import pytest

from helpers import paths
from helpers.device import cpu_model
from helpers.study import bench, latency_tables


def _fake_process(speedups):
    """A timing process that measures ``speedups[network][p]`` in process ``p``."""
    seen = []

    def run(spec, runtimes, batch_sizes, repeats, calls, threads, reference, spin, seed):
        seen.append({"spec": dict(spec), "runtimes": list(runtimes), "batches": batch_sizes,
                     "repeats": repeats, "threads": threads, "spin": spin, "seed": seed})
        return [{"runtime": r, "model": m, "batch_size": b, "threads": threads,
                 "rounds": repeats, "median_ms": 80.0 / speedups[m][seed],
                 "speedup": speedups[m][seed]}
                for r in runtimes for b in batch_sizes for m in spec]
    return run, seen


def test_bench_latency_times_the_committed_networks_and_names_the_cpu(tmp_path, monkeypatch,
                                                                     capsys):
    if not (paths.CHECKPOINTS / "resnet20.pt").exists():
        pytest.skip("no checkpoints/resnet20.pt")
    speedups = {"unpruned": [1.0] * 3, "50% MACs": [1.30, 1.34, 1.36],
                "latency": [1.52, 1.71, 1.60], "int8 plan": [1.6, 1.7, 1.65]}
    run, seen = _fake_process(speedups)
    monkeypatch.setattr(latency_tables, "in_fresh_process", run)
    out_file = tmp_path / "latency.json"
    bench.main(["latency", "--rounds", "4", "--json", str(out_file), "--no-int8"])
    printed = capsys.readouterr().out
    assert f"on {cpu_model()}, 2 threads" in printed
    assert len(seen) == 3 and [s["seed"] for s in seen] == [0, 1, 2]  # three fresh processes
    assert all(s["threads"] == 2 and s["repeats"] == 4 and s["spin"] is False for s in seen)
    assert seen[0]["runtimes"] == ["pytorch", "onnxruntime"] == seen[1]["runtimes"][::-1]
    assert set(seen[0]["spec"]) == {n for n, f in (bench.LATENCY_NETWORKS | bench.INT8_CHOSEN)
                                    .items() if (paths.CHECKPOINTS / f).exists()}
    assert seen[0]["batches"] == [256]
    got = json.loads(out_file.read_text())
    assert got["cpu"] == cpu_model() and got["threads"] == 2 and got["processes"] == 3
    rows = {(r["runtime"], r["model"]): r for r in got["rows"]}
    if "latency" in seen[0]["spec"]:
        lat = rows[("onnxruntime", "latency")]
        assert (lat["speedup"], lat["speedup_low"], lat["speedup_high"]) == (1.60, 1.52, 1.71)
        assert lat["verdict"] == "met"  # the slowest process reaches 1.5x
        assert "1.60x (1.52-1.71)  met" in printed
    assert rows[("pytorch", "50% MACs")]["verdict"] == "missed"  # the fastest misses 1.5x


def test_bench_latency_times_batch_1_on_request_and_needs_three_processes(monkeypatch):
    if not (paths.CHECKPOINTS / "resnet20.pt").exists():
        pytest.skip("no checkpoints/resnet20.pt")
    run, seen = _fake_process({n: [1.2] * 3 for n in bench.LATENCY_NETWORKS | bench.INT8_CHOSEN})
    monkeypatch.setattr(latency_tables, "in_fresh_process", run)
    bench.main(["latency", "--batch1", "--threads", "1", "--no-int8"])
    assert seen[0]["batches"] == [256, 1] and seen[0]["threads"] == 1
    assert seen[0]["repeats"] == 15  # the latency default, not train's 3
    with pytest.raises(ValueError, match="at least 3"):
        bench.main(["latency", "--processes", "2", "--no-int8"])


def test_readme_and_lesson_05_point_to_the_own_cpu_command():
    """Issue 29: the README and lesson 05 tell the reader how to time the committed networks
    on their own CPU, with the command that exists."""
    import nbformat

    assert "latency" in bench.COMMANDS
    command = "python -m helpers.study.bench latency"
    lesson = nbformat.read(paths.ROOT / "notebooks" / "05_network_pruning.ipynb", as_version=4)
    assert any(command in c.source for c in lesson.cells if c.cell_type == "markdown")
    assert command in (paths.ROOT / "README.md").read_text(encoding="utf-8")


def test_bench_latency_adds_each_network_in_int8_for_onnx_runtime(lab_root, monkeypatch):
    """By default the command also times each committed network quantized to int8, as saved
    ONNX graphs (which time_in_process runs in ONNX Runtime only)."""
    if not (paths.CHECKPOINTS / "resnet20.pt").exists():
        pytest.skip("no checkpoints/resnet20.pt")
    names = [n for n, f in (bench.LATENCY_NETWORKS | bench.INT8_CHOSEN).items()
             if (paths.CHECKPOINTS / f).exists()]
    run, seen = _fake_process({n: [1.2] * 3 for n in [*names, *(f"{n} int8" for n in names)]})
    monkeypatch.setattr(latency_tables, "in_fresh_process", run)
    bench.main(["latency", "--rounds", "2", "--root", str(lab_root)])
    spec = seen[0]["spec"]
    assert set(spec) == {*names, *(f"{n} int8" for n in names)}
    assert all(spec[f"{n} int8"].endswith(".onnx") for n in names)
    assert all(spec[n].endswith(".pt") for n in names)
