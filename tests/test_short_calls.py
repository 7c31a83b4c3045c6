"""The short calls: ``bench``'s comparison with MLX's function called directly, its two grids, the rule's
dtype, and the docs' region written from them.

Nothing here times anything: the bench's tiny run takes an injected clock.
"""

import itertools

import mlx.core as mx
import numpy as np
import pytest

import mlx_deconv as md
import reference as ref
from mlx_deconv.bench import short_calls
from mlx_deconv.choice import choose, rule
from mlx_deconv.geometry.validation import conv1d_geometry
from mlx_deconv.ops import functional
from mlx_deconv.runtime.devices import cpu_blas

CPU = mx.default_stream(mx.cpu)


def reference_of(cell, x, w):
    """The cell's float64 output from tests/reference.py (written apart from the bench's own)."""
    kw = cell.kwargs()
    p = kw["padding"]
    fn = ref.conv1d if cell.op == "conv1d" else ref.conv_transpose1d
    return fn(np.asarray(x, np.float64), np.asarray(w, np.float64), None, stride=cell.stride, left=p, right=p,
              dilation=cell.dilation, groups=cell.groups)


def arrays(cell, dtype=None):
    x, w = short_calls._data(cell, getattr(mx, cell.dtype or "float32") if dtype is None else dtype)
    return x, w, np.array(x.astype(mx.float32)), np.array(w.astype(mx.float32))


def test_held_out_grid_is_what_it_claims_and_apart_from_the_fitting_grid():
    held = short_calls.HELD_OUT
    assert not set(held) & set(short_calls.SHORT_CALLS)
    assert all(c.batch > 1 for c in held) and all(c.length % 2 == 1 for c in held)
    assert all(c.out_channels != c.channels for c in held if c.groups != c.channels)
    assert {c.dtype for c in held} == {"float32", "float16", "bfloat16"}
    assert {c.op for c in held} == {"conv1d", "conv_transpose1d"}
    assert {2, 8} <= {c.groups for c in held if 1 < c.groups < c.channels}
    assert {"dense", "depthwise", "dilated", "strided"} <= {c.kind for c in held}
    # The fitting grid is batch 1 in the run's dtype.
    assert all(c.batch == 1 and c.dtype is None for c in short_calls.SHORT_CALLS)


def test_cells_translate_to_mlx_arguments():
    cell = short_calls.ShortCall("conv_transpose1d", "up2", 9, 8, 4, stride=2, batch=2, outputs=6)
    assert cell.mlx_kwargs() == dict(stride=2, padding=1, dilation=1, groups=1, output_padding=0)
    assert short_calls.ShortCall("conv1d", "dilated", 9, 8, 3, dilation=2).mlx_kwargs() == dict(
        stride=1, padding=2, dilation=2, groups=1)
    # A crop MLX cannot take is refused by name, not compared with something else.
    wide = short_calls.ShortCall("conv_transpose1d", "odd", 9, 8, 3)
    object.__setattr__(wide, "kwargs", lambda: dict(stride=1, padding=3, dilation=1, groups=1))
    with pytest.raises(ValueError, match=r"conv_transpose1d-odd-L9-C8-K3.*padding=3 > dilation\*\(K-1\)=2"):
        wide.mlx_kwargs()


@pytest.mark.parametrize("cell", short_calls.HELD_OUT[::3] + short_calls.SHORT_CALLS[::37], ids=lambda c: c.name)
def test_bench_reference_and_mlx_agree_with_the_definition(cell):
    """The bench's float64 reference equals tests/reference.py's; MLX's function on the translated
    arguments and ``auto`` both agree with it."""
    x, w, x64, w64 = arrays(cell)
    expected = reference_of(cell, x64, w64)
    np.testing.assert_allclose(short_calls.reference_output(cell, x64, w64), expected, rtol=1e-12, atol=1e-12)
    theirs = (mx.conv1d if cell.op == "conv1d" else mx.conv_transpose1d)(x, w, **cell.mlx_kwargs())
    ours = (md.conv1d if cell.op == "conv1d" else md.conv_transpose1d)(x, w, **cell.kwargs())
    assert ours.dtype == theirs.dtype == x.dtype and ours.shape == theirs.shape == expected.shape
    values = short_calls.agreement(cell, x, w, ours, theirs)
    assert values["agree"], values


def test_agreement_catches_a_wrong_output():
    cell = short_calls.HELD_OUT[1]  # float16
    x, w, _, _ = arrays(cell)
    ours = md.conv1d(x, w, **cell.kwargs())
    theirs = mx.conv1d(x, w, **cell.mlx_kwargs())
    assert short_calls.agreement(cell, x, w, ours, theirs)["agree"]
    wrong = 0.05 * mx.abs(ours.astype(mx.float32)).max()  # one sample off by 5% of the largest
    off = ours.astype(mx.float32) + mx.where(mx.arange(ours.size).reshape(ours.shape) == 5, wrong, 0.0)
    assert not short_calls.agreement(cell, x, w, off.astype(ours.dtype), theirs)["agree"]
    assert not short_calls.agreement(cell, x, w, ours[:, 1:], theirs)["agree"]


def test_tiny_run_has_both_grids_the_columns_and_a_summary_per_grid():
    ticks = itertools.count()
    tick = 2.0 ** -12
    clock = lambda: tick * next(ticks)  # noqa: E731  (no real timing in tests)
    fitting = [short_calls.ShortCall("conv1d", "dense", 8, 4, 3), short_calls.ShortCall("conv_transpose1d", "up2",
                                                                                       8, 4, 4, stride=2)]
    held = [short_calls.HELD_OUT[1], short_calls.HELD_OUT[-1]]
    rows = short_calls.run(fitting, held_out=held, warmup=1, repeat=2, clock=clock)
    assert [r["grid"] for r in rows] == ["fitting", "fitting", "held-out", "held-out"]
    assert [r["dtype"] for r in rows] == ["float32", "float32", "float16", "float32"]
    for row in rows:
        assert set(row["seconds"]) == {"mx", "auto", "builtin"}
        assert row["mx_over_auto"] == row["builtin_over_auto"] == 1.0 and row["values"]["agree"]
    summary = short_calls.summary(rows)
    assert set(summary) == {"fitting", "held-out"}
    assert summary["held-out"]["conv1d"] == dict(cells=1, below=0, min=1.0, geomean=1.0, disagree=0)
    text = short_calls.table(rows)
    head = "| cell | dtype | auto | mx ms | auto ms | builtin ms | mx / auto | builtin / auto | values |"
    assert text.count(head) == 2
    assert "**fitting grid** (2 cells; the rule's thresholds were fitted on it)" in text
    assert "**held-out grid** (2 cells; no threshold was fitted on it)" in text
    assert "- held-out, `conv_transpose1d`: 1 cells, 0 below 0.9x, mx / auto minimum 1.00x" in text
    caption = short_calls.caption(rows)
    assert "MLX's function called directly" in caption and "fitted on the fitting grid (2 cells" in caption
    # The default run is both grids.
    assert short_calls.run.__defaults__[0] is None


def test_summary_counts_cells_below_and_disagreeing():
    rows = [dict(cell=dict(op="conv1d"), grid="held-out", mx_over_auto=v, values=dict(agree=a))
            for v, a in ((0.5, True), (2.0, False), (1.0, True))]
    s = short_calls.summary(rows)["held-out"]["conv1d"]
    assert (s["cells"], s["below"], s["min"], s["disagree"]) == (3, 1, 0.5, 1)
    assert s["geomean"] == pytest.approx(1.0)


# -- the rule knows the dtype ---------------------------------------------------------------

def test_half_precision_moves_the_loop_threshold_by_the_measured_factor():
    """A dilated conv1d (MLX's naive loop) between the float16 and the float32 threshold: float32 and
    bfloat16 stay on MLX's op, float16 (MLX's loop 1.46x slower, the package's path 1.17x) goes to gemm."""
    geom = conv1d_geometry((1, 64, 16), (16, 3, 16), padding=3, dilation=3)[0]
    work = rule.naive_work(geom)
    factor = rule.HALF_PRECISION_WORK_FACTOR["float16"]
    assert rule.BUILTIN_MAX_NAIVE_WORK / factor < work < rule.BUILTIN_MAX_NAIVE_WORK
    blas = cpu_blas(CPU)
    assert rule.builtin_is_faster(geom, blas) and rule.builtin_is_faster(geom, blas, mx.bfloat16)
    assert not rule.builtin_is_faster(geom, blas, mx.float16)
    assert choose(geom, CPU, dtype=mx.float32).name == "builtin"
    assert choose(geom, CPU, dtype=mx.float16).name == "gemm"
    # ...and the op's call passes its input's dtype to the choice.
    x = mx.random.normal((1, 64, 16)).astype(mx.float16)
    w = mx.random.normal((16, 3, 16)).astype(mx.float16)
    call = functional.Call("conv1d", x.shape, w.shape, None, x.dtype, 1, 3, None, 3, 1, "NLC", "mlx", None, "auto",
                           repr(CPU), None)
    assert functional.prepared(call, CPU).backend.name == "gemm"


def test_bigvgan_low_pass_goes_to_mlx_op():
    """BigVGAN's low-pass depthwise conv1d (L=512, C=64, K=12, stride 2) lost to MLX's loop on gemm."""
    geom = conv1d_geometry((1, 512, 64), (64, 12, 1), stride=2, padding=5, groups=64)[0]
    assert choose(geom, CPU).name == "builtin"
    wide = conv1d_geometry((1, 1024, 512), (512, 12, 1), stride=2, padding=5, groups=512)[0]
    assert choose(wide, CPU).name == "gemm"


# -- the docs' short region ------------------------------------------------------------------

def load_figures():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tools" / "readme_figures.py"
    spec = importlib.util.spec_from_file_location("readme_figures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_region_says_what_the_ratio_is_compared_with_and_which_grid_was_fitted():
    figures = load_figures()
    row = lambda op, grid, ratio, agree=True: dict(cell=dict(op=op), grid=grid, mx_over_auto=ratio,  # noqa: E731
                                                   values=dict(agree=agree))
    rows = [row("conv1d", "fitting", 0.8), row("conv1d", "fitting", 1.25), row("conv_transpose1d", "fitting", 2.0),
            row("conv1d", "held-out", 1.5, agree=False)]
    result = dict(short_calls=rows, dtype="float32", stream="default", machine="a machine",
                  machine_details=dict(blas="libblas.so"))
    text = figures.short_region(result, None, None)
    assert "MLX's function called directly" in text and "fitted on the fitting grid" in text
    assert "| BLAS | grid | op | cells | below 0.9x | mx / auto, minimum | geomean | values differ |" in text
    assert "| `libblas.so` | fitting | `conv1d` | 2 | 1 | 0.80x | 1.00x | 0 |" in text
    assert "| `libblas.so` | held-out | `conv1d` | 1 | 0 | 1.50x | 1.50x | 1 |" in text
    # Rows of an older bench, compared with builtin through the package, are refused, not mislabelled.
    old = dict(result, short_calls=[dict(cell=dict(op="conv1d"), seconds=dict(auto=1.0, builtin=1.0), gain=1.0)])
    with pytest.raises(ValueError, match="compare `auto` with `builtin`"):
        figures.short_region(old, None, None)
