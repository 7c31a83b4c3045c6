"""How ``bench`` times things: medians, adaptive counts for very slow calls, references, the machine.

Each part of ``bench`` (transposed rows, ``conv1d`` rows, the end-to-end
decoder) times MLX first and PyTorch afterwards in its own phase: PyTorch
calls interleaved with MLX's in one process ran markedly slower than alone
(the figures are in ``docs/performance.md``). The end-to-end generators are also
timed in pairs, one call of each side half a second apart (:func:`paired_ratios`):
phases minutes apart compare two speeds of a machine whose speed drifts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import mlx.core as mx

from ..tuning.measure import time_primed

Clock = Callable[[], float]


@dataclass
class Timing:
    """One function's timing.

    Attributes:
        seconds: the median of the timed runs.
        runs: how many runs were timed.
        slow: True when its first call took longer than the slow threshold, so
            it was timed ``slow_runs`` times without warm-up.
        samples: every timed run's seconds, in order (run ``i`` of each function
            was timed in round ``i``, beside the others' run ``i``).
    """

    seconds: float
    runs: int
    slow: bool = False
    samples: Tuple[float, ...] = ()


def _evaluate(out) -> None:
    """Waits for an MLX result; PyTorch's calls (None) are done when they return."""
    if out is not None:
        mx.eval(out)


def timed_medians(
    fns: Mapping[str, Callable[[], object]],
    warmup: int = 2,
    repeat: int = 5,
    *,
    slow: Optional[float] = None,
    slow_runs: int = 2,
    clock: Clock = time.perf_counter,
    evaluate: Callable[[object], None] = _evaluate,
) -> Dict[str, Timing]:
    """Median seconds of each function, timed round-robin so that load on a shared machine falls on all alike.

    With warm-up, each timed call comes right after an untimed call of the same
    function (:func:`~mlx_deconv.tuning.measure.time_primed`), as autotuning
    times them and as PyTorch's calls, timed in a phase of their own, are.

    Each function's first call is timed. If it took more than ``slow``
    seconds (MLX's naive loops take seconds per call), the function is timed
    ``slow_runs`` times in all, that first call included, and is left out of the
    rounds. Otherwise the first call is its first warm-up (or, with
    ``warmup=0``, its first timed run) and it is timed ``repeat`` times.

    Args:
        fns: ``{name: zero-argument function}``; what it returns is evaluated (None: nothing to wait for).
        warmup (int): untimed calls before the rounds. Default: ``2``.
        repeat (int): timed rounds. Default: ``5``.
        slow (float, optional): the first-call threshold in seconds; None: no function is slow.
        slow_runs (int): timed runs of a slow function. Default: ``2``.
        clock: seconds as a float. Default: ``time.perf_counter`` (tests inject their own).
        evaluate: waits for a function's result. Default: ``mx.eval`` when it is not None.

    Returns:
        dict: ``{name: Timing}``.
    """
    if repeat < 1 or slow_runs < 1 or warmup < 0:
        raise ValueError(f"repeat and slow_runs must be >= 1 and warmup >= 0, got {repeat}, {slow_runs}, {warmup}")

    def timed(fn) -> float:
        start = clock()
        evaluate(fn())
        return clock() - start

    times: Dict[str, List[float]] = {}
    slow_names = set()
    for name, fn in fns.items():
        first = timed(fn)
        if slow is not None and first > slow:
            slow_names.add(name)
            times[name] = [first] + [timed(fn) for _ in range(slow_runs - 1)]
            continue
        times[name] = [] if warmup else [first]
        for _ in range(warmup - 1):
            evaluate(fn())
    rounds = repeat if warmup else repeat - 1
    for _ in range(rounds):
        for name, fn in fns.items():
            if name not in slow_names:
                times[name].append(time_primed(fn, clock, evaluate) if warmup else timed(fn))
    return {name: Timing(statistics.median(t), len(t), name in slow_names, tuple(t)) for name, t in times.items()}


def medians_phrase(repeat: int, warmup: int, primed: bool = True) -> str:
    """How the cells were timed, for captions.

    Args:
        repeat: timed calls per cell.
        warmup: untimed calls before them.
        primed: each timed call came right after an untimed one (:func:`timed_medians`
            with warm-up; JSON files of older runs say ``False``).

    Returns:
        str: e.g. ``"median of 5 after 2 warm-up, each timed call right after an untimed one"``.
    """
    return f"median of {repeat} after {warmup} warm-up" + (", each timed call right after an untimed one"
                                                           if warmup and primed else "")


def slow_note(timings: Mapping[str, Mapping[str, int]], repeat: int, slow: Optional[float]) -> str:
    """The caption's sentence for cells timed fewer times than ``repeat`` (marked ``*``), or ``""``.

    Args:
        timings: ``{row: {backend: runs}}``.
    """
    counts = sorted({n for runs in timings.values() for n in runs.values() if n < repeat})
    if not counts or slow is None:
        return ""
    times = " or ".join({1: "once"}.get(n, f"{n} times") for n in counts)
    return (f"\\* timed {times} without warm-up: its first call took over {slow:g} s "
            f"(the other cells: median of {repeat}).")


@functools.lru_cache(maxsize=1)
def torch_default_threads() -> Optional[int]:
    """PyTorch's intra-op threads in a fresh process with this environment, or None without torch.

    Asked of a fresh process so that PyTorch's phase runs at the thread count a
    user's own PyTorch process would have, whatever this process set it to
    (``import mlx_deconv`` leaves it alone: it sets only MKL's BLAS-domain threads).
    Asked once per process (cached): each paired round enters PyTorch's phase, and a fresh
    process importing torch between two timed calls would take seconds of the machine.
    """
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, timeout=300)
        return int(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


@contextlib.contextmanager
def torch_phase() -> Iterator[Optional[int]]:
    """PyTorch's phase: its threads as a fresh PyTorch process would have them, restored afterwards.

    Yields:
        int or None: the thread count used (None: torch left as it was).
    """
    import torch

    old, threads = torch.get_num_threads(), torch_default_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(old)


#: Seconds between the calls of a pair: long enough for the other side's threads to have gone to sleep.
PAIR_PAUSE = 0.5


@dataclass
class Paired:
    """Our time over PyTorch's, call by call.

    Attributes:
        ratio: the median of the rounds' ratios.
        ratios: each round's ratio, in order.
        pause: the seconds between the calls.
    """

    ratio: float
    ratios: Tuple[float, ...]
    pause: float


def paired_ratios(ours: Callable[[], object], theirs: Callable[[], None], rounds: int = 5, *,
                  pause: float = PAIR_PAUSE, clock: Clock = time.perf_counter,
                  evaluate: Callable[[object], None] = _evaluate, sleep: Callable[[float], None] = time.sleep) -> Paired:
    """Our call's time over PyTorch's, each round one call of each, a pause apart.

    Medians of two phases minutes apart compare two speeds of a machine whose speed drifts (a
    shared VM's does by 20-40% within minutes). A ratio per round of neighbouring calls does not,
    and the pause keeps either side's threads from running into the other's call.

    Args:
        ours: the MLX call; what it returns is evaluated.
        theirs: the PyTorch call, done when it returns (run in :func:`torch_phase`).
        rounds (int): pairs timed. Default: ``5``.
        pause (float): seconds slept after each call. Default: :data:`PAIR_PAUSE`.

    Returns:
        Paired: the median ratio and each round's.
    """
    if rounds < 1 or pause < 0:
        raise ValueError(f"rounds must be >= 1 and pause >= 0, got rounds={rounds}, pause={pause}")
    ratios = []
    for _ in range(rounds):
        mine = time_primed(ours, clock, evaluate)
        sleep(pause)
        with torch_phase():
            other = time_primed(theirs, clock, _evaluate)
        sleep(pause)
        ratios.append(mine / other)
    return Paired(statistics.median(ratios), tuple(ratios), pause)


def paired_phrase(paired: Dict) -> str:
    """How a :class:`Paired` kept as a dict was measured, for a caption."""
    return (f"\"Paired\": our time over PyTorch's in {len(paired['ratios'])} rounds of one call of each, "
            f"{paired['pause']:g} s apart, each call right after an untimed one of its own; the median ratio "
            f"and the rounds' range.")


def paired_cell(paired: Optional[Dict]) -> str:
    """A table's cell for a :class:`Paired` kept as a dict: the median ratio, and the rounds' range."""
    if not paired:
        return "-"
    lo, hi = min(paired["ratios"]), max(paired["ratios"])
    return f"{paired['ratio']:.2f}x ({lo:.2f}-{hi:.2f})"


def add_torch_seconds(rows: List[Dict], torch_fn: Callable[[Dict], Callable[[], None]], warmup: int,
                      repeat: int) -> bool:
    """Each row's ``"torch_seconds"``, timed in a phase of PyTorch's own (after every MLX timing).

    Args:
        rows: the benchmark's rows; each gets ``"torch_seconds"``.
        torch_fn: for a row, the zero-argument PyTorch call to time.
        warmup, repeat: as for :func:`timed_medians`.

    Returns:
        bool: False without torch (the rows are left as they were).
    """
    try:
        import torch  # noqa: F401  (not a dependency)
    except ImportError:
        return False
    with torch_phase():
        for row in rows:
            row["torch_seconds"] = timed_medians({"torch": torch_fn(row)}, warmup, repeat)["torch"].seconds
    return True


def tuned_choice(geom, stream: mx.Stream, dtype, backward: bool) -> str:
    """The backend autotuning chooses for a call (the "tuned" column): from its cache, else timed now.

    Args:
        geom: the call's geometry (either op). stream: where it runs. dtype: the input's.
        backward (bool): tuned for forward + backward.
    """
    from ..choice import tuned_entry

    return tuned_entry(geom, stream, dtype, backward=backward)["choice"]


def torch_conv(op: Callable, tx, tw, kwargs: Dict, backward: bool) -> Callable[[], None]:
    """A call of PyTorch's ``op`` (``torch.nn.functional.conv1d`` or ``conv_transpose1d``) on ``tx, tw``,
    or of its gradients w.r.t. both with ``backward``."""
    if backward:
        tx.requires_grad_(True)
        tw.requires_grad_(True)
        return lambda: op(tx, tw, **kwargs).sum().backward()
    import torch

    def fn():
        with torch.no_grad():
            op(tx, tw, **kwargs)
    return fn


def split_copy(a: mx.array, workers: List[mx.Stream]) -> List[mx.array]:
    """A copy of ``a`` (read + write) with its parts shared by ``workers``."""
    bounds = [a.shape[0] * i // len(workers) for i in range(len(workers) + 1)]
    parts = []
    for stream, lo, hi in zip(workers, bounds, bounds[1:]):
        with mx.stream(stream):
            parts.append(a[lo:hi] * 1)
    return parts


def split_matmul(a: mx.array, b: mx.array, workers: List[mx.Stream]) -> mx.array:
    """``a @ b`` with ``a``'s rows shared by ``workers``, as the gemm backend shares its blocks."""
    bounds = [a.shape[0] * i // len(workers) for i in range(len(workers) + 1)]
    parts = []
    for stream, lo, hi in zip(workers, bounds, bounds[1:]):
        with mx.stream(stream):
            parts.append(a[lo:hi] @ b)
    return parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=0)


def peak_bytes(fn: Callable[[], mx.array]) -> int:
    """Peak MLX memory of one call, above what was allocated before it."""
    mx.synchronize()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    out = fn()
    mx.eval(out)
    peak = mx.get_peak_memory() - base
    del out
    return peak


class Progress:
    """A one-line progress bar on stderr (a plain line per step when not a terminal)."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.done, self.width = max(total, 1), 0, width
        self.tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {label}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100) + ("\n" if self.done == self.total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def cpu_model() -> Optional[str]:
    """The CPU's name as the operating system gives it, or None where it cannot be read."""
    try:
        if sys.platform.startswith("linux"):
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.lower().startswith(("model name", "hardware", "cpu model")):
                        return line.split(":", 1)[1].strip()
        elif sys.platform == "darwin":
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or None


def machine_details() -> Dict[str, object]:
    """The machine a run was measured on: OS, CPU, cores, versions, and the BLAS under MLX's CPU matmul."""
    from ..runtime.blas import blas_info

    blas = blas_info(measure=False)
    provider = blas["provider"]
    details: Dict[str, object] = dict(
        system=platform.system(), arch=platform.machine(), cpu=cpu_model(), cores=os.cpu_count(),
        mlx=mx.__version__, python=platform.python_version(),
        blas=os.path.basename(provider) if provider else None, blas_optimized=bool(blas["optimized"]),
        blas_threads=blas["threads"], blas_library=blas["library"])
    try:
        import torch

        details.update(torch=torch.__version__, torch_threads=torch_default_threads())
    except ImportError:
        details.update(torch=None, torch_threads=None)
    return details


def machine() -> str:
    """One line for captions: OS, CPU, MLX and Python versions, and MLX's CPU BLAS."""
    d = machine_details()
    cpu = f" ({d['cpu']}, {d['cores']} cores)" if d["cpu"] else ""
    blas = d["blas"] or "platform"
    blas += " (optimized, loaded by mlx_deconv)" if d["blas_optimized"] else ""
    blas += f" [{d['blas_library']}]" if d.get("blas_library") else ""
    return f"{d['system']} {d['arch']}{cpu}, mlx {d['mlx']}, python {d['python']}, CPU BLAS {blas}"
