"""The Metal kernel, executed: MLX's generated source compiled with g++ and run over the whole grid.

See mlx_deconv/backends/metal/emulator.py. Compared with the float64 reference of
tests/reference.py, output buffers poisoned with NaN first.
"""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings

import reference as ref
from helpers import atol, forward_atol
from mlx_deconv import backends
from mlx_deconv.choice import choose, rule
from mlx_deconv.backends.metal import emulator
from mlx_deconv.backends import metal
from mlx_deconv.geometry.validation import conv_geometry
from strategies import Case, cases

pytestmark = pytest.mark.skipif(
    emulator.compiler() is None, reason="no C++ compiler: the Metal emulator cannot build the kernel"
)

def emulate(case, dtype=mx.float32):
    x, w, b = case.arrays()
    xa, wa = mx.array(x, dtype), mx.array(w, dtype)
    ba = None if b is None else mx.array(b, dtype)
    geom, _ = conv_geometry(xa.shape, wa.shape, **case.kwargs())
    y = emulator.run(xa, wa, ba, geom)
    assert y.dtype == dtype and y.shape == (case.batch, geom.output_length, case.out_channels)
    # Reference on the inputs as the kernel saw them (rounded to dtype).
    as64 = lambda a: None if a is None else np.array(a.astype(mx.float32), np.float64)
    return np.array(y.astype(mx.float32), np.float64), case.expected(as64(xa), as64(wa), as64(ba))


def check(case, dtype=mx.float32):
    got, expected = emulate(case, dtype)
    assert not np.isnan(got).any(), "the kernel left output elements unwritten"
    np.testing.assert_allclose(got, expected, rtol=0, atol=forward_atol(case, dtype))


EDGES = {
    "L=1": Case(2, 1, 1, 3, 2, 4, 2, 1, 0, None, True, 1),
    "K=1": Case(2, 5, 1, 3, 2, 1, 3, 1, 0, None, True, 2),
    "stride > K": Case(2, 4, 1, 2, 3, 2, 5, 1, 0, 2, True, 4),
    "large dilation": Case(1, 3, 1, 2, 2, 3, 1, 7, 1, None, True, 5),
    "depthwise bigvgan": Case(1, 20, 8, 1, 1, 12, 2, 1, 0, None, False, 6),
    "depthwise multiplier": Case(2, 9, 3, 1, 2, 5, 2, 2, 2, 1, True, 7),
    "C_in=1": Case(2, 6, 1, 1, 4, 3, 2, 1, 1, None, True, 8),
    "no bias same": Case(1, 7, 2, 2, 2, 3, 2, 2, "same", 1, False, 13),
    "causal hifigan": Case(1, 6, 1, 8, 4, 16, 8, 1, "causal", None, True, 15),
    "asymmetric crop": Case(1, 6, 1, 2, 2, 4, 2, 1, (3, 0), 1, True, 10),
    "grouped": Case(2, 16, 4, 4, 4, 4, 2, 1, 1, None, True, 18),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_metal_kernel_edge_cases(name):
    check(EDGES[name])


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["depthwise bigvgan", "grouped", "causal hifigan"])
def test_metal_kernel_half_precision(dtype, name):
    check(EDGES[name], dtype)


@settings(max_examples=12)
@given(case=cases(max_length=9))
def test_metal_kernel_random_configurations(case):
    check(case)


def test_metal_injected_bug_is_caught(monkeypatch):
    """An off-by-one in the tap position must make the harness report a mismatch."""
    source = metal.kernel_source()
    assert "const int u = t + crop;" in source
    monkeypatch.setattr(metal, "kernel_source", lambda: source.replace("const int u = t + crop;", "const int u = t + crop + 1;"))
    metal.kernel.cache_clear()
    try:
        with pytest.raises(AssertionError):
            check(EDGES["grouped"])
    finally:
        metal.kernel.cache_clear()


def test_metal_unwritten_outputs_are_caught(monkeypatch):
    """A kernel that skips some outputs leaves the NaN poison there, and the check sees it."""
    source = metal.kernel_source()
    monkeypatch.setattr(metal, "kernel_source", lambda: source.replace(
        "if (co >= out_channels || t >= out_length) {", "if (co >= out_channels || t >= out_length || t == 1) {"))
    metal.kernel.cache_clear()
    try:
        got, _ = emulate(EDGES["grouped"])
        assert np.isnan(got[:, 1]).all() and not np.isnan(got[:, 0]).any()
    finally:
        metal.kernel.cache_clear()


def test_metal_generated_signature_is_what_the_driver_binds():
    case = EDGES["L=1"]
    x, w, b = (mx.array(a, mx.float32) for a in case.arrays())
    geom, _ = conv_geometry(x.shape, w.shape, **case.kwargs())
    kernel = emulator.capture(x, w, b, geom)
    names = [p.name for p in kernel.parameters]
    assert names == ["x", "w", "bias", "dims", "y", "thread_position_in_grid"]
    assert "<float, 2, 1, 4, 3, 2, 1>" in kernel.instance  # T, STRIDE, DILATION, TAPS, CIG, COG, HAS_BIAS


def test_metal_backend_gradients_come_from_gemm(monkeypatch):
    """The custom_function's VJP (gemm's derivative) against the reference, forward run by the emulator."""
    monkeypatch.setattr(metal, "run_kernel", lambda x, w, b, g: emulator.run(x, w, b, g))
    case = EDGES["depthwise multiplier"]
    x, w, b = case.arrays()
    geom, _ = conv_geometry(x.shape, w.shape, **case.kwargs())
    ct = np.random.default_rng(0).standard_normal((case.batch, geom.output_length, case.out_channels))
    y, (gx, gw, gb) = mx.vjp(lambda x, w, b: metal.conv_transpose1d(x, w, b, geom),
                             [mx.array(x, mx.float32), mx.array(w, mx.float32), mx.array(b, mx.float32)],
                             [mx.array(ct, mx.float32)])
    left, right = case.crops()
    np.testing.assert_allclose(np.array(y[0]), case.expected(x, w, b), atol=1e-5)
    ex, ew, eb = ref.conv_transpose1d_vjp(x, w, ct, case.stride, left, right, case.dilation, case.groups)
    for got, want in ((gx, ex), (gw, ew), (gb, eb)):
        np.testing.assert_allclose(np.array(got), want, atol=1e-4)


def test_metal_auto_rule_and_availability(monkeypatch):
    cpu = mx.default_stream(mx.cpu)
    depthwise, _ = conv_geometry((1, 100, 64), (64, 12, 1), stride=2, groups=64)
    dense, _ = conv_geometry((1, 100, 512), (256, 16, 512), stride=8)
    assert choose(depthwise, cpu, "auto").name == "gemm"
    with pytest.raises(ValueError, match="'metal' is not available"):
        choose(depthwise, cpu, "metal").name
    monkeypatch.setattr(backends, "is_metal", lambda stream: True)  # as on a Mac's GPU stream
    monkeypatch.setattr(rule, "cpu_blas", lambda stream: None)  # a GPU stream has no CPU BLAS
    monkeypatch.setattr(rule, "is_gpu", lambda stream: True)
    assert choose(depthwise, cpu, "auto").name == "metal"
    # Not winograd on a GPU: its look at the values would wait for the GPU on every call.
    assert choose(dense, cpu, "auto").name == "gemm"
    dilated, _ = conv_geometry((1, 100, 256), (256, 7, 256), dilation=3)
    assert choose(dilated, cpu, "auto").name == "gemm"
    assert "metal" in backends.available_backends(cpu)


def test_metal_kernel_source_is_found():
    assert "thread_position_in_grid" in metal.kernel_source()
    assert emulator.shim_path().is_file()


# ---- Index arithmetic past 2**31 elements -------------------------------------------------------------
# A grid this large cannot be allocated, let alone run: a driver of its own maps x and y as reserved,
# never-committed address space (untouched pages read as zero), writes only the input rows that a few
# chosen threads read, poisons their output elements and their neighbours with NaN, runs those threads
# alone, and reads the elements back. A 32-bit flat index would write elsewhere (or fault) and leave the
# poison in place.

HUGE = dict(batch=2, length=2**28 + 3, in_channels=8, out_channels=8, taps=4, stride=2, dilation=1, crop=1)

# An output sums at most taps * C_in products.
HUGE_ATOL = atol(HUGE["taps"] * HUGE["in_channels"])

SPARSE_DRIVER = r"""
#include <cstdio>
#include <cstdlib>
#include <sys/mman.h>

static void* reserve(size_t bytes) {
#ifdef MAP_NORESERVE
    const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
#else
    const int flags = MAP_PRIVATE | MAP_ANONYMOUS;
#endif
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) { std::perror("mmap"); std::exit(3); }
    return p;
}

int main() {
    // Baked in by the test: sizes, patches of x, the small buffers, the chosen threads, the elements read back.
    %(constants)s
    float* x = static_cast<float*>(reserve(X_ELEMENTS * sizeof(float)));
    float* y = static_cast<float*>(reserve(Y_ELEMENTS * sizeof(float)));
    for (size_t i = 0; i < sizeof(X_AT) / sizeof(X_AT[0]); ++i) x[X_AT[i]] = X_VALUE[i];
    for (size_t i = 0; i < sizeof(Y_AT) / sizeof(Y_AT[0]); ++i) y[Y_AT[i]] = __builtin_nanf("");
    for (size_t i = 0; i < sizeof(THREADS) / sizeof(THREADS[0]); ++i) {
        const uint3 thread_position_in_grid{THREADS[i][0], THREADS[i][1], THREADS[i][2]};
        %(call)s;
    }
    for (size_t i = 0; i < sizeof(Y_AT) / sizeof(Y_AT[0]); ++i) std::printf("%%.9g\n", double(y[Y_AT[i]]));
    return 0;
}
"""


def _c_array(ctype, name, values):
    return f"static const {ctype} {name}[] = {{{', '.join(str(v) for v in values)}}};"


def run_sparse(threads, seed=0, source_edit=None, tmp_path=None):
    """Runs the chosen ``(co, t, n)`` threads of the kernel on the :data:`HUGE` geometry.

    Returns:
        (got, expected, poisoned): values read at each thread's output element,
        the float64 definition's values there, and the values read at their
        neighbouring elements (which no chosen thread writes).
    """
    import subprocess

    g = HUGE
    span = g["dilation"] * (g["taps"] - 1) + 1
    out_length = (g["length"] - 1) * g["stride"] + span - 2 * g["crop"]
    cin, cout = g["in_channels"], g["out_channels"]
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, g["taps"], cin)).astype(np.float32)  # MLX layout (C_out, K, C_in)
    bias = rng.standard_normal(cout).astype(np.float32)
    # The kernel's source for this template, captured from a small launch of the same template.
    small_x = mx.zeros((1, 3, cin))
    geom, _ = conv_geometry(small_x.shape, w.shape, stride=g["stride"], padding=g["crop"], dilation=g["dilation"])
    kernel = emulator.capture(small_x, mx.array(w), mx.array(bias), geom)
    source = kernel.source if source_edit is None else source_edit(kernel.source)
    # Input rows each chosen thread reads, filled with random values; the rest of x reads as zero.
    x_at, x_value, expected, y_at = {}, [], [], []
    for co, t, n in threads:
        u = t + g["crop"]
        total = float(bias[co])
        for k in range(g["taps"]):
            v = u - k * g["dilation"]
            if v < 0 or v % g["stride"] or v // g["stride"] >= g["length"]:
                continue
            row = (n * g["length"] + v // g["stride"]) * cin
            for ci in range(cin):
                if row + ci not in x_at:
                    x_at[row + ci] = len(x_value)
                    x_value.append(np.float32(rng.standard_normal()))
                total += float(x_value[x_at[row + ci]]) * float(w[co, k, ci])
        expected.append(total)
        y_at.append((n * out_length + t) * cout + co)
    mine = set(y_at)
    neighbours = sorted({i + d for i in y_at for d in (-1, 1)} - mine)
    neighbours = [i for i in neighbours if 0 <= i < g["batch"] * out_length * cout]
    w_kernel = np.ascontiguousarray(w.transpose(1, 2, 0))  # (K, C_in, C_out), as kernel_arguments passes it
    dims = [g["length"], out_length, g["crop"], cin, cout]
    constants = "\n    ".join([
        f"const size_t X_ELEMENTS = {g['batch'] * g['length'] * cin}ull;",
        f"const size_t Y_ELEMENTS = {g['batch'] * out_length * cout}ull;",
        _c_array("size_t", "X_AT", [f"{i}ull" for i in x_at]),
        _c_array("float", "X_VALUE", [repr(float(v)) + "f" for v in x_value]),
        _c_array("float", "W", [repr(float(v)) + "f" for v in w_kernel.ravel()]),
        _c_array("float", "B", [repr(float(v)) + "f" for v in bias]),
        _c_array("int", "DIMS", dims),
        _c_array("size_t", "Y_AT", [f"{i}ull" for i in y_at + neighbours]),
        f"static const uint THREADS[][3] = {{{', '.join('{%d, %d, %d}' % t for t in threads)}}};",
    ])
    buffers = {"x": "x", "w": "W", "bias": "B", "dims": "DIMS", "y": "y",
               "thread_position_in_grid": "thread_position_in_grid"}
    arguments = [f"const_cast<{p.ctype}*>({buffers[p.name]})" if p.kind == "buffer" else buffers[p.name]
                 for p in kernel.parameters]
    program = "\n".join([
        emulator.shim_path().read_text(), source,
        SPARSE_DRIVER % {"constants": constants, "call": f"{kernel.instance}({', '.join(arguments)})"},
    ])
    src, exe = tmp_path / "sparse.cpp", tmp_path / "sparse"
    src.write_text(program)
    build = subprocess.run([emulator.compiler(), "-std=c++17", "-O1", "-Wno-attributes", "-o", str(exe),
                            str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    if result.returncode:
        raise RuntimeError(f"the sparse kernel run failed with status {result.returncode}: {result.stderr[-500:]}")
    values = [float(line) for line in result.stdout.split()]
    return np.array(values[: len(y_at)]), np.array(expected), np.array(values[len(y_at):])


def _huge_threads():
    g = HUGE
    span = g["dilation"] * (g["taps"] - 1) + 1
    out_length = (g["length"] - 1) * g["stride"] + span - 2 * g["crop"]
    cout = g["out_channels"]
    threads = [(cout - 1, out_length - 1, g["batch"] - 1), (0, 0, 1), (3, 0, 0), (5, 7, 0)]
    for flat in (2**31 + 5, 2**32 + 11, 2**33 + 3):  # output elements just past 2**31, 2**32, 2**33
        if flat < g["batch"] * out_length * cout:
            threads.append((flat % cout, (flat // cout) % out_length, flat // (cout * out_length)))
    return threads, out_length


def test_metal_kernel_indices_past_2_31_elements(tmp_path):
    threads, out_length = _huge_threads()
    g = HUGE
    assert g["batch"] * g["length"] * g["in_channels"] > 2**32  # x's flat index passes 2**31 and 2**32
    assert g["batch"] * out_length * g["out_channels"] > 2**33
    got, expected, poisoned = run_sparse(threads, tmp_path=tmp_path)
    np.testing.assert_allclose(got, expected, rtol=0, atol=HUGE_ATOL)
    assert np.isnan(poisoned).all(), "a thread wrote next to its own output element"


THIRTY_TWO_BIT = {
    "output": ("y[(size_t(n) * out_length + t) * out_channels + co]", "y[(n * out_length + t) * out_channels + co]"),
    "input": ("x + (size_t(n) * length + l) * in_channels", "x + (n * length + l) * in_channels"),
}


@pytest.mark.parametrize("which", list(THIRTY_TWO_BIT))
def test_metal_kernel_32_bit_index_is_caught(which, tmp_path):
    """The same check on a kernel with a 32-bit flat index fails (it faults, or reads or writes elsewhere)."""
    wide, narrow = THIRTY_TWO_BIT[which]
    assert wide in metal.kernel_source()
    threads, _ = _huge_threads()
    with pytest.raises((AssertionError, RuntimeError)):
        got, expected, poisoned = run_sparse(threads, tmp_path=tmp_path, source_edit=lambda s: s.replace(wide, narrow))
        np.testing.assert_allclose(got, expected, rtol=0, atol=HUGE_ATOL)
        assert np.isnan(poisoned).all()
