"""Autotuning: the fastest kept, signatures and buckets, the disk cache across processes, corruption, races.

No test here measures time: timings are injected (a fake timer, or a fake
clock advanced by fake backends).
"""

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from dataclasses import replace as dataclass_replace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import mlx_deconv as md
from mlx_deconv import autotune
from mlx_deconv.cli import tune as autotune_command
from mlx_deconv.geometry.validation import conv_geometry

import reference as ref
from helpers import atol, forward_atol, run
from strategies import cases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = mx.default_stream(mx.cpu)


def geometry(length=100, c_in=8, c_out=4, k=4, batch=1, **kwargs):
    kwargs.setdefault("stride", 2)
    return conv_geometry((batch, length, c_in), (c_out, k, c_in // kwargs.get("groups", 1)), **kwargs)[0]


class FakeTimer:
    """Returns fixed seconds for the names it is given and counts its calls."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.calls = []

    def __call__(self, fns):
        self.calls.append(sorted(fns))
        return {n: self.seconds[n] for n in fns if n in self.seconds}


def never_called(_fns):
    raise AssertionError("the timer ran although the choice was cached")


def tune(geom, names=("a", "b", "c"), rule="a", dtype=mx.float32, mode="forward", runners=None, stream=CPU):
    runners = runners or {n: (lambda x, w: x) for n in names}
    return autotune.tune("conv_transpose1d", geom, stream, dtype, names=list(names), rule=rule,
                         runners=runners, mode=mode)


@pytest.fixture
def tuner(tmp_path):
    """A private tuner in a fresh cache directory; the process's own is restored afterwards."""
    made = {}

    def make(timer, directory=tmp_path / "cache"):
        made["t"] = autotune.Tuner(directory=directory, timer=timer)
        autotune.use_tuner(made["t"])
        return made["t"]

    old = autotune.tuner()
    yield make
    autotune.use_tuner(old)


def cache_files(folder):
    return sorted(p for p in folder.glob("autotune-*.json"))


def test_the_fastest_is_kept_and_timed_once(tuner):
    timer = FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0})
    t = tuner(timer)
    entry = tune(geometry())
    assert entry["choice"] == "b" and entry["rule"] == "a"
    assert entry["seconds"] == {"a": 3.0, "b": 1.0, "c": 2.0}
    assert tune(geometry())["choice"] == "b"
    assert len(timer.calls) == 1 and t.stats["timed"] == 1 and t.stats["memory_hits"] == 1


def test_only_usable_backends_are_timed(tuner):
    timer = FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0})
    tuner(timer)
    assert tune(geometry(), names=("a", "c"))["choice"] == "c"
    assert timer.calls == [["a", "c"]]


def test_a_cached_choice_no_longer_usable_is_retimed(tuner):
    timer = FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0})
    tuner(timer)
    assert tune(geometry())["choice"] == "b"
    assert tune(geometry(), names=("a", "c"))["choice"] == "c"
    assert len(timer.calls) == 2


def test_no_backend_ran_falls_back_to_the_rule(tuner):
    tuner(FakeTimer({}))
    assert tune(geometry(), rule="c")["choice"] == "c"


def test_length_bucket():
    assert [autotune.length_bucket(n) for n in (1, 2, 3, 4, 5, 128, 129, 256, 257)] == [1, 2, 4, 4, 8, 128, 256, 256, 512]
    for n in range(1, 2000):
        b = autotune.length_bucket(n)
        assert b >= n and b & (b - 1) == 0 and b < 2 * n


def test_lengths_in_one_bucket_share_a_choice(tuner):
    timer = FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0})
    tuner(timer)
    for length in (129, 200, 256, 131):  # a streaming decoder's varying chunks
        tune(geometry(length))
    assert len(timer.calls) == 1
    tune(geometry(257))
    assert len(timer.calls) == 2


@pytest.mark.parametrize("change", [
    dict(c_in=16), dict(c_out=8), dict(k=5), dict(stride=3), dict(dilation=2), dict(groups=2),
    dict(padding="causal"), dict(batch=2), dict(length=300),
])
def test_signature_tells_apart(change):
    base = autotune.signature("conv_transpose1d", geometry(), CPU, mx.float32)
    other = autotune.signature("conv_transpose1d", geometry(**change), CPU, mx.float32)
    assert base != other and base.key() != other.key()


def test_signature_tells_apart_op_dtype_mode():
    g = geometry()
    keys = {autotune.signature(op, g, CPU, dt, mode).key()
            for op in autotune.OPS for dt in (mx.float32, mx.float16, mx.bfloat16) for mode in ("forward", "train")}
    assert len(keys) == 12


def test_signature_rejects_unknown_op_and_mode():
    with pytest.raises(ValueError, match="op must be"):
        autotune.signature("conv2d", geometry(), CPU, mx.float32)
    with pytest.raises(ValueError, match="mode must be"):
        autotune.signature("conv1d", geometry(), CPU, mx.float32, mode="both")


@pytest.mark.parametrize("kwargs, expected", [
    (dict(k=4, stride=2), "none"),
    (dict(k=4, stride=2, padding=1), "symmetric"),
    (dict(k=4, stride=2, padding="causal"), "right"),
    (dict(k=4, stride=2, padding=(2, 0)), "left"),
    (dict(k=4, stride=2, padding=(1, 2)), "asymmetric"),
    (dict(k=4, stride=2, padding=(1, 0), output_padding=1), "extend"),
])
def test_padding_class_of_the_transposed_op(kwargs, expected):
    assert autotune.padding_class(geometry(**kwargs)) == expected


def test_padding_class_of_conv1d():
    from mlx_deconv.geometry.records import Conv1dGeometry

    def g(left, right):
        return Conv1dGeometry(1, 10, 2, 2, 3, 1, 1, 1, left, right, 10)
    assert [autotune.padding_class(g(*p)) for p in ((0, 0), (1, 1), (2, 0), (0, 1), (1, 2))] == \
        ["none", "symmetric", "left", "right", "asymmetric"]


def test_a_new_tuner_reuses_the_disk_cache(tuner, tmp_path):
    tuner(FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0}))
    tune(geometry())
    [path] = cache_files(tmp_path / "cache")
    data = json.loads(path.read_text())
    assert data["context"] == autotune.device_context(CPU)
    t = tuner(never_called)
    assert tune(geometry())["choice"] == "b"
    assert t.stats == dict(timed=0, memory_hits=0, disk_hits=1)


def test_the_cache_directory_is_private(tuner, tmp_path):
    if not hasattr(os, "getuid"):
        pytest.skip("POSIX permissions")
    tuner(FakeTimer({"a": 1.0}), directory=tmp_path / "deep" / "cache")
    tune(geometry(), names=("a",))
    assert stat.S_IMODE((tmp_path / "deep" / "cache").stat().st_mode) == 0o700
    [path] = cache_files(tmp_path / "deep" / "cache")
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_a_directory_others_can_write_is_not_trusted(tuner, tmp_path):
    if not hasattr(os, "getuid"):
        pytest.skip("POSIX permissions")
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    tuner(FakeTimer({"a": 3.0, "b": 1.0}), directory=folder)
    with pytest.warns(autotune.AutotuneCacheWarning, match="other users can write"):
        assert tune(geometry(), names=("a", "b"))["choice"] == "b"
    assert cache_files(folder) == []


def test_a_private_directory_under_one_others_can_write_is_not_trusted(tuner, tmp_path):
    """Whoever may write a folder above the cache can swap the private folder for theirs."""
    if not hasattr(os, "getuid"):
        pytest.skip("POSIX permissions")
    tmp_path.chmod(0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    folder = shared / "cache"
    folder.mkdir(mode=0o700)
    tuner(FakeTimer({"a": 3.0, "b": 1.0}), directory=folder)
    with pytest.warns(autotune.AutotuneCacheWarning, match="other users can write"):
        assert tune(geometry(), names=("a", "b"))["choice"] == "b"
    assert cache_files(folder) == []


@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe\x00", b"[1, 2, 3]", b'{"context": {}, "entries": {}}',
    b'{"context": null, "entries": []}',
])
def test_a_corrupt_or_foreign_cache_warns_once_and_is_rebuilt(tuner, tmp_path, content):
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    path = folder / autotune.Tuner.file_name(autotune.device_context(CPU))
    path.write_bytes(content)
    timer = FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0})
    tuner(timer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for length in (10, 100, 1000):
            assert tune(geometry(length))["choice"] == "b"
    assert [w.category for w in caught] == [autotune.AutotuneCacheWarning]
    assert len(timer.calls) == 3
    data = json.loads(path.read_text())
    assert len(data["entries"]) == 3 and data["context"] == autotune.device_context(CPU)


def test_a_cache_of_another_mlx_version_is_not_reused(tuner, tmp_path):
    tuner(FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0}))
    tune(geometry())
    [path] = cache_files(tmp_path / "cache")
    data = json.loads(path.read_text())
    data["context"]["mlx"] = "0.0.1"
    path.write_text(json.dumps(data))
    timer = FakeTimer({"a": 1.0, "b": 3.0, "c": 2.0})
    tuner(timer)
    with pytest.warns(autotune.AutotuneCacheWarning, match="not this device"):
        assert tune(geometry())["choice"] == "a"
    assert len(timer.calls) == 1


def test_choices_made_behind_another_blas_or_other_code_are_timed_again(tuner, tmp_path, monkeypatch):
    """Another library under MLX's matmul, or another version of the package's code, times again."""
    from mlx_deconv.tuning import cache as autotune_cache
    from mlx_deconv.runtime import blas

    monkeypatch.setattr(autotune_cache, "cpu_blas", lambda stream: "optimized")
    monkeypatch.setattr(blas, "identity", lambda: "libopenblas.so.0 [OpenBLAS 0.3.21 Cooperlake] threads=1")
    timer = FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0})
    tuner(timer)
    tune(geometry())
    with monkeypatch.context() as patch:
        patch.setattr(blas, "identity", lambda: "libmkl_rt.so.2 [Intel MKL 2026.2] threads=1")
        tuner(timer)
        tune(geometry())
    with monkeypatch.context() as patch:
        patch.setattr(autotune_cache, "code_fingerprint", lambda: "0" * 16)
        tuner(timer)
        tune(geometry())
    tuner(timer)
    tune(geometry())  # the first context again: its choice is on disk
    assert len(timer.calls) == 3 and len(cache_files(tmp_path / "cache")) == 3


def test_the_source_digest_follows_the_code_only(tmp_path):
    from mlx_deconv.tuning.cache import source_digest

    (tmp_path / "backends").mkdir()
    (tmp_path / "backends" / "gemm.py").write_text("a = 1\n")
    (tmp_path / "notes.txt").write_text("x")
    first = source_digest(tmp_path)
    (tmp_path / "notes.txt").write_text("y")
    assert source_digest(tmp_path) == first
    (tmp_path / "backends" / "gemm.py").write_text("a = 2\n")
    assert source_digest(tmp_path) != first


def test_an_unreadable_source_file_does_not_stop_tuning(tmp_path, monkeypatch):
    from pathlib import Path

    from mlx_deconv.tuning.cache import source_digest

    (tmp_path / "gemm.py").write_text("a = 1\n")
    readable = source_digest(tmp_path)

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert len(source_digest(tmp_path)) == 16 and source_digest(tmp_path) != readable


def test_one_signature_met_by_two_threads_is_timed_once(tuner):
    calls = []

    def slow_timer(fns):
        calls.append(1)
        time.sleep(0.2)  # holds the timing long enough for the other thread to arrive
        return {"a": 2.0, "b": 1.0}

    tuner(slow_timer)
    barrier = threading.Barrier(2)
    results = []

    def work():
        stream = mx.default_stream(mx.cpu)  # MLX's streams belong to the thread that made them
        barrier.wait()
        results.append(tune(geometry(), names=("a", "b"), stream=stream)["choice"])

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["b", "b"] and len(calls) == 1


def test_clear_forgets_memory_and_disk(tuner, tmp_path):
    timer = FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0})
    t = tuner(timer)
    tune(geometry())
    assert len(cache_files(tmp_path / "cache")) == 1
    locks = sorted((tmp_path / "cache").glob("autotune-*.lock"))
    stray = tmp_path / "cache" / ".autotune-stray.tmp"  # a writer that died before its rename
    stray.write_text("{")
    removed = t.clear()
    assert any(p.suffix == ".json" for p in removed) and stray in removed and not stray.exists()
    assert cache_files(tmp_path / "cache") == []
    # Another process may hold a lock right now: deleting its file would let a third lock a fresh one.
    assert locks and all(p.exists() for p in locks) and not set(locks) & set(removed)
    tune(geometry())
    assert len(timer.calls) == 2


def test_cache_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLX_DECONV_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert autotune.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("MLX_DECONV_CACHE_DIR")
    assert autotune.cache_dir() == tmp_path / "x" / "mlx_deconv"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert autotune.cache_dir() == tmp_path / "home" / ".cache" / "mlx_deconv"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: the XDG specification says to ignore it
    assert autotune.cache_dir() == tmp_path / "home" / ".cache" / "mlx_deconv"


def test_switches(monkeypatch):
    monkeypatch.setattr(autotune, "_override", None)
    for value, mode in (("", None), ("0", None), ("off", None), ("1", "forward"), ("yes", "forward"),
                        ("train", "train")):
        monkeypatch.setenv("MLX_DECONV_AUTOTUNE", value)
        assert autotune.autotune_mode() == mode
    autotune.set_autotune(False)
    assert autotune.autotune_mode() is None
    autotune.set_autotune(True, backward=True)
    assert autotune.autotune_mode() == "train"
    monkeypatch.setenv("MLX_DECONV_AUTOTUNE", "0")
    autotune.set_autotune(True)
    assert autotune.autotune_mode() == "forward"


def test_set_autotune_names_a_bad_argument(monkeypatch):
    monkeypatch.setattr(autotune, "_override", None)
    with pytest.raises(TypeError, match="enabled must be True or False, got 'yes'"):
        autotune.set_autotune("yes")
    with pytest.raises(TypeError, match="backward must be True or False, got 1"):
        autotune.set_autotune(True, backward=1)


def test_median_timer_on_a_fake_clock():
    now = [0.0]
    runs = {"fast": 0, "slow": 0, "mid": 0, "broken": 0}
    costs = {"fast": [1.0, 5.0, 1.0, 1.0, 2.0], "mid": [2.0, 2.0, 3.0, 2.0, 9.0], "slow": [10.0]}

    def fn(name):
        def run():
            runs[name] += 1
            if name == "broken":
                raise RuntimeError("cannot run this call")
            after_warmup = runs[name] - 2  # calls after one warm-up: untimed, timed, untimed, timed, ...
            cold = after_warmup < 0 or after_warmup % 2 == 0
            now[0] += 100.0 if cold else costs[name][after_warmup // 2]
            return mx.array(0)
        return run

    seconds = autotune.median_timer({n: fn(n) for n in runs}, warmup=1, repeat=5, clock=lambda: now[0])
    assert seconds == {"fast": 1.0, "mid": 2.0, "slow": 10.0}  # only the calls right after their own
    assert runs == {"fast": 11, "mid": 11, "slow": 3, "broken": 1}  # slow dropped after its first timed run


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_the_timed_calls_compute_the_op(tuner, mode):
    """What is timed is the real computation (forward, or gradients w.r.t. input and weight)."""
    from mlx_deconv import backends

    g = geometry(length=7, c_in=6, c_out=4, k=4, stride=2, padding=1)
    names = backends.usable_backends(g, CPU)
    outputs = {}

    def timer(fns):
        for n, fn in fns.items():
            outputs[n] = fn()
        return {n: 1.0 for n in fns}

    tuner(timer)
    runners = {n: (lambda x, w, n=n: backends.BACKENDS[n].run("conv_transpose1d")(x, w, None, g)) for n in names}
    tune(g, names=names, rule="gemm", mode=mode, runners=runners)
    kx, kw = mx.random.split(mx.random.key(0))
    x = np.array(mx.random.normal((1, 7, 6), key=kx))
    w = np.array(mx.random.normal((4, 4, 6), key=kw))
    left = g.crop
    right = g.full_length - g.crop - g.output_length
    assert sorted(outputs) == sorted(names)
    for n, out in outputs.items():
        if mode == "forward":
            expected = ref.conv_transpose1d(x, w, None, 2, left, right)
            np.testing.assert_allclose(np.array(out), expected, atol=atol(24), rtol=0)
        else:
            gx, gw, _ = ref.conv_transpose1d_vjp(x, w, np.ones((1, g.output_length, 4)), 2, left, right)
            np.testing.assert_allclose(np.array(out[0]), gx, atol=atol(16), rtol=0)
            np.testing.assert_allclose(np.array(out[1]), gw, atol=atol(7), rtol=1e-6)


WORKER = textwrap.dedent("""
    import json, sys, time
    import mlx.core as mx
    from mlx_deconv import autotune
    from mlx_deconv.geometry.validation import conv_geometry

    mode, start, first, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    calls = []
    def timer(fns):
        if mode == "reuse":
            raise AssertionError("timed in the second process")
        calls.append(1)
        return {"a": 2.0, "b": 1.0}
    autotune.use_tuner(autotune.Tuner(timer=timer))
    while time.time() < start:
        time.sleep(0.005)
    choices = []
    for c in range(first, first + count):
        geom = conv_geometry((1, 50, c), (2, 3, c), stride=2)[0]
        choices.append(autotune.tune("conv_transpose1d", geom, mx.default_stream(mx.cpu), mx.float32,
                                     names=["a", "b"], rule="a", runners={"a": max, "b": max}))
    print(json.dumps(dict(choices=[e["choice"] for e in choices], timed=len(calls), stats=autotune.tuner().stats)))
""")


def run_workers(tmp_path, jobs, together=False):
    env = dict(os.environ, MLX_DECONV_CACHE_DIR=str(tmp_path / "cache"))
    start = time.time() + 2.0 if together else 0.0  # together: all start tuning at once, after their imports
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, mode, str(start), str(first), str(count)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for mode, first, count in jobs]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_the_cache_survives_a_new_process(tmp_path):
    [first] = run_workers(tmp_path, [("tune", 1, 3)])
    assert first["timed"] == 3 and first["choices"] == ["b"] * 3
    [second] = run_workers(tmp_path, [("reuse", 1, 3)])
    assert second["choices"] == ["b"] * 3
    assert second["stats"] == dict(timed=0, memory_hits=2, disk_hits=1)


def test_processes_tuning_at_once_leave_one_valid_file(tmp_path):
    # Overlapping ranges: the same signatures tuned at once, and different ones merged.
    results = run_workers(tmp_path, [("tune", 1, 12), ("tune", 5, 12), ("tune", 9, 12)], together=True)
    assert all(r["choices"] == ["b"] * 12 for r in results)
    [path] = cache_files(tmp_path / "cache")
    entries = json.loads(path.read_text())["entries"]
    assert len(entries) == 20  # channels 1..20, none lost to a concurrent write
    assert not list((tmp_path / "cache").glob("*.tmp"))
    [reuse] = run_workers(tmp_path, [("reuse", 1, 20)])
    assert reuse["stats"]["timed"] == 0


def test_malformed_entries_are_dropped_and_retimed(tuner, tmp_path):
    tuner(FakeTimer({"a": 3.0, "b": 1.0, "c": 2.0}))
    tune(geometry())
    [path] = cache_files(tmp_path / "cache")
    data = json.loads(path.read_text())
    [key] = data["entries"]
    for broken in ({"choice": "b"}, {"choice": "b", "rule": "a", "seconds": {"b": "fast"}, "signature": {}},
                   {"choice": "b", "rule": "a", "seconds": {"b": 1.0}, "signature": {"op": "x"}}, ["b"]):
        data["entries"][key] = broken
        path.write_text(json.dumps(data))
        timer = FakeTimer({"a": 1.0, "b": 3.0, "c": 2.0})
        tuner(timer)
        assert tune(geometry())["choice"] == "a" and len(timer.calls) == 1


def test_table_and_speedup(tuner):
    tuner(FakeTimer({"gemm": 0.004, "winograd": 0.002, "builtin": 0.1}))
    entry = tune(geometry(), names=("builtin", "gemm", "winograd"), rule="gemm")
    assert autotune_command.speedup(entry) == pytest.approx(2.0)
    text = autotune_command.table([entry])
    head, _, row = text.splitlines()
    assert head.split(" | ")[1:3] == ["rule", "tuned"]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == ["gemm", "winograd", "100.00", "4.00", "2.00", "2.00x"]
    assert cells[0] == autotune.signature("conv_transpose1d", geometry(), CPU, mx.float32).key()


def test_info_says_where_the_rule_was_never_measured(monkeypatch):
    for kind, measured in (("platform", False), (None, False), ("reference", True), ("optimized", True)):
        monkeypatch.setattr(autotune, "cpu_blas", lambda stream, kind=kind: kind)
        line = autotune.describe(CPU)[0]
        assert line.startswith("auto rule: measured") if measured else "reasoned, never measured" in line, (kind, line)


def test_tune_command_on_bench_shapes_and_clear(tuner, tmp_path, capsys):
    from mlx_deconv.cli import main

    timer = FakeTimer({"builtin": 0.5, "gemm": 0.25, "winograd": 0.125})
    tuner(timer)
    main(["tune", "--shapes", "depthwise-up", "grouped"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| conv_transpose1d")]
    assert len(rows) == 2 and len(timer.calls) == 2
    # depthwise: winograd does not apply, gemm beats builtin; grouped K=2*stride: winograd
    assert [r.split(" | ")[2] for r in rows] == ["gemm", "winograd"]
    assert len(cache_files(tmp_path / "cache")) == 1
    main(["tune", "--clear"])
    assert "removed" in capsys.readouterr().out
    assert cache_files(tmp_path / "cache") == []


def test_tune_command_refuses_unknown_shape_names(tuner, tmp_path):
    from mlx_deconv import bench
    from mlx_deconv.cli import main

    timer = FakeTimer({})
    tuner(timer)
    with pytest.raises(SystemExit) as err:
        main(["tune", "--shapes", "grouped", "bogus", "nonsense"])
    message = str(err.value)
    assert "bogus" in message and "nonsense" in message and "grouped," not in message.split(";")[0]
    assert all(s.name in message for s in bench.SHAPES) and timer.calls == []  # nothing tuned before refusing


# --- through the public op: backend="auto" with autotuning on ---

@pytest.fixture
def tuned(tuner, monkeypatch):
    """Autotuning on, with a fake timer that ranks the backends in a given order."""
    monkeypatch.setattr(autotune, "_override", None)

    def make(order, backward=False, **kwargs):
        timer = FakeTimer({name: float(i + 1) for i, name in enumerate(order)})
        tuner(timer, **kwargs)
        autotune.set_autotune(True, backward=backward)
        return timer

    return make


@pytest.mark.parametrize("order", [("builtin", "gemm", "winograd"), ("winograd", "gemm", "builtin"),
                                   ("gemm", "builtin", "winograd")])
@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_results_identical_with_and_without_tuning(tuned, order, case):
    x, w, b = case.arrays()
    autotune.set_autotune(False)
    untuned = run(case, x, w, b, "auto")
    timer = tuned(order, directory=False)  # a fresh memory-only tuner per example
    got = run(case, x, w, b, "auto")
    assert len(timer.calls) == 1
    expected = case.expected(x, w, b)
    np.testing.assert_allclose(got, expected, rtol=0, atol=forward_atol(case))
    np.testing.assert_allclose(got, untuned, rtol=0, atol=2 * forward_atol(case))


def test_auto_takes_the_tuned_backend(tuned, monkeypatch):
    from mlx_deconv import backends

    used = []
    for name, record in backends.BACKENDS.items():
        def spy(*a, name=name, run=record.conv_transpose1d, **k):
            used.append(name)
            return run(*a, **k)

        def bind_spy(*a, spy=spy, bind=record.bind):  # a bound call runs what its record's bind returns
            return lambda *args, run=bind(*a): spy(*args, run=run)
        monkeypatch.setitem(backends.BACKENDS, name, dataclass_replace(
            record, conv_transpose1d=spy, bind=None if record.bind is None else bind_spy))
    tuned(("builtin", "gemm", "winograd"), directory=False)
    x, w = mx.ones((1, 9, 4)), mx.ones((2, 4, 4))
    mx.eval(md.conv_transpose1d(x, w, stride=2, padding=1))
    assert used[-1] == "builtin"
    tuned(("winograd", "gemm", "builtin"), directory=False)
    mx.eval(md.conv_transpose1d(x, w, stride=2, padding=1))
    assert used[-1] == "winograd"  # a new tuner: the call is prepared again with the new choice


def test_tuning_off_or_a_forced_backend_never_times(tuned):
    timer = tuned(("builtin",))
    autotune.set_autotune(False)
    x, w = mx.ones((1, 9, 4)), mx.ones((2, 4, 4))
    mx.eval(md.conv_transpose1d(x, w, stride=2))
    autotune.set_autotune(True)
    mx.eval(md.conv_transpose1d(x, w, stride=2, backend="gemm"))
    assert timer.calls == []
    mx.eval(md.conv_transpose1d(x, w, stride=2))
    mx.eval(md.conv_transpose1d(x.astype(mx.float16), w, stride=2))  # a new dtype is a new signature
    assert len(timer.calls) == 2


def test_tuning_inside_grad_and_compile(tuned):
    timer = tuned(("gemm", "builtin", "winograd"), backward=True)
    x, w = mx.random.normal((1, 9, 4)), mx.random.normal((2, 4, 4))
    gx = mx.grad(lambda x: md.conv_transpose1d(x, w, stride=2).sum())(x)
    y = mx.compile(lambda x: md.conv_transpose1d(x, w, stride=3))(x)
    mx.eval(gx, y)
    assert len(timer.calls) == 2
    assert all(e["signature"]["mode"] == "train" for e in autotune.tuner()._tables.popitem()[1].values())


def test_conv1d_with_tuning_on(tuned):
    from mlx_deconv import backends

    rng = np.random.default_rng(0)
    x, w = mx.array(rng.standard_normal((2, 30, 6)), mx.float32), mx.array(rng.standard_normal((4, 3, 3)), mx.float32)
    kwargs = dict(stride=2, padding="same", dilation=2, groups=2)
    autotune.set_autotune(False)
    untuned = md.conv1d(x, w, **kwargs)
    timer = tuned(("gemm", "builtin", "winograd"))
    tuned_y = md.conv1d(x, w, **kwargs)
    np.testing.assert_allclose(np.array(tuned_y), np.array(untuned), rtol=0, atol=2 * atol(9))
    usable = backends.usable_backends(md.geometry.validation.conv1d_geometry(x.shape, w.shape, **kwargs)[0], CPU)
    assert len(timer.calls) == (1 if len(usable) > 1 else 0)  # one candidate: nothing to time


def small_model():
    """A two-layer upsampler: ``tune --model test_autotune:small_model`` loads it."""
    return nn.Sequential(md.ConvTranspose1d(8, 4, 4, stride=2, padding=1), nn.ReLU(),
                         md.ConvTranspose1d(4, 2, 3, stride=1, groups=2))


def test_tune_command_on_a_model(tuned, capsys):
    from mlx_deconv.cli import main

    timer = tuned(("gemm", "winograd", "builtin"))
    autotune.set_autotune(False)
    main(["tune", "--model", "test_autotune:small_model", "--input-shape", "1,10,8"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| conv_transpose1d")]
    assert len(rows) == 2 and len(timer.calls) == 2
    assert [r.split(" | ")[2] for r in rows] == ["gemm", "gemm"]
    assert autotune.autotune_mode() is None  # the command leaves the switch as it found it
    for argv, says in ((["tune", "--model", "test_autotune:small_model"], "needs --input-shape"),
                       (["tune", "--model", "small_model", "--input-shape", "1,2,8"], "--model must be")):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2 and says in capsys.readouterr().err


def test_tune_command_on_hifigan(tuned, capsys):
    from mlx_deconv.cli import main

    timer = tuned(("gemm", "winograd", "builtin"))
    main(["tune", "--model", "hifigan", "--input-shape", "1,3,80"])  # 3 mel frames: a small run
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| conv_transpose1d")]
    # V1's four upsampling layers: C 512->256->128->64->32, K 16,16,4,4, strides 8,8,2,2
    assert [r.split(" | ")[0] for r in rows] == [
        "| conv_transpose1d float32 N1 L4 C512->256 K16 s8 d1 g1 symmetric forward",
        "| conv_transpose1d float32 N1 L32 C256->128 K16 s8 d1 g1 symmetric forward",
        "| conv_transpose1d float32 N1 L256 C128->64 K4 s2 d1 g1 symmetric forward",
        "| conv_transpose1d float32 N1 L512 C64->32 K4 s2 d1 g1 symmetric forward"]
    assert len(timer.calls) >= 4


API_WORKER = textwrap.dedent("""
    import json, os, sys
    import mlx_deconv as md
    import mlx.core as mx
    from mlx_deconv import autotune

    def timer(fns):
        if sys.argv[1] == "reuse":
            raise AssertionError("timed in the second process")
        return {n: {"builtin": 1.0}.get(n, 2.0) for n in fns}
    autotune.use_tuner(autotune.Tuner(timer=timer))
    x, w = mx.ones((1, 128, 8)), mx.ones((4, 4, 8))
    for length in (100, 120, 128):
        y = md.conv_transpose1d(x[:, :length], w, stride=2, padding=1)
    mx.eval(y)
    print(json.dumps(autotune.tuner().stats))
""")


def test_the_cache_survives_a_new_process_through_the_op(tmp_path):
    env = dict(os.environ, MLX_DECONV_CACHE_DIR=str(tmp_path / "cache"), MLX_DECONV_AUTOTUNE="1")
    stats = []
    for mode in ("tune", "reuse"):
        p = subprocess.run([sys.executable, "-c", API_WORKER, mode], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        stats.append(json.loads(p.stdout.strip().splitlines()[-1]))
    assert stats == [dict(timed=1, memory_hits=2, disk_hits=0), dict(timed=0, memory_hits=2, disk_hits=1)]


@pytest.mark.parametrize("kwargs", [dict(stride=2), dict(stride=3, padding=2), dict(stride=2, padding="causal"),
                                    dict(stride=4, padding=(1, 5), output_padding=2, dilation=2),
                                    dict(stride=2, padding="same", groups=2)])
def test_long_signals_are_timed_cut_to_the_longest_tuned_length(monkeypatch, kwargs):
    monkeypatch.setattr(autotune, "TUNE_MAX_LENGTH", 16)
    long, cut = geometry(40, **kwargs), geometry(16, **kwargs)
    assert autotune.timing_geometry(long) == cut
    assert autotune.timing_geometry(cut) is cut
    assert autotune.signature("conv_transpose1d", long, CPU, mx.float32) == \
        autotune.signature("conv_transpose1d", geometry(1000, **kwargs), CPU, mx.float32)


@pytest.mark.parametrize("padding", [0, 3, "same", "causal", (2, 5)])
def test_long_conv1d_signals_are_timed_cut_with_the_same_pads(monkeypatch, padding):
    from mlx_deconv.geometry.validation import conv1d_geometry

    monkeypatch.setattr(autotune, "TUNE_MAX_LENGTH", 16)
    long, _ = conv1d_geometry((1, 41, 4), (2, 3, 4), stride=2, padding=padding, dilation=2)
    cut, _ = conv1d_geometry((1, 16, 4), (2, 3, 4), stride=2, padding=(long.pad_left, long.pad_right), dilation=2)
    assert autotune.timing_geometry(long) == cut


def test_what_is_timed_has_the_cut_length(tuner, monkeypatch):
    monkeypatch.setattr(autotune, "TUNE_MAX_LENGTH", 16)
    shapes = []

    def timer(fns):
        for fn in fns.values():
            fn()
        return {n: 1.0 for n in fns}

    tuner(timer)
    tune(geometry(40), names=("a", "b"), runners={n: (lambda x, w: shapes.append(x.shape) or x) for n in "ab"})
    assert shapes == [(1, 16, 8), (1, 16, 8)]
