"""What several test modules share: tolerances, layout conversions, calls in every layout, peak memory.

Test modules import this module, ``reference`` and ``strategies``, never each other.
"""

import mlx.core as mx
import numpy as np

import mlx_deconv as md
import reference as ref
from mlx_deconv import backends
from mlx_deconv.backends.gemm.schedule import BlockPolicy
from mlx_deconv.geometry.validation import conv_geometry

# Rounding error of one product-and-add in each dtype (a little over its unit roundoff).
EPS = {mx.float32: 2e-7, mx.float16: 2e-3, mx.bfloat16: 1.6e-2}


def atol(terms, dtype=mx.float32):
    """Absolute error allowed for a sum of ``terms`` products of unit-variance numbers.

    The one tolerance formula of the suite: rounding grows with the number of
    terms summed, plus a small floor for sums of one or two terms.
    """
    return EPS[dtype] * (4 + 2 * terms)


def forward_atol(case, dtype=mx.float32):
    """An output sums ``taps * C_in/groups`` products."""
    return atol(case.taps * case.in_per_group, dtype)


def grad_atols(case, ct_shape, dtype=mx.float32):
    """``(x, weight, bias)`` tolerances of a VJP: each gradient entry's number of terms.

    An input gradient sums ``taps * C_out/groups`` products, a weight gradient
    ``N * L``, a bias gradient every output sample of one channel. Weight
    gradients can be large, so callers pair theirs with ``rtol=1e-6`` (a few ulp).
    """
    return (atol(case.taps * case.out_per_group, dtype), atol(case.batch * case.length, dtype),
            atol(ct_shape[0] * ct_shape[1], dtype))


def mlx_weight_from_torch(w_torch, groups):
    """The inverse of ``reference.torch_weight``: a PyTorch-layout ``(C_in, C_out/G, K)`` weight in MLX layout.

    ``torch_weight`` is a permutation of elements; applying it to element
    indices says where each MLX-layout element went.
    """
    w_torch = np.asarray(w_torch)
    c_in, cog, taps = w_torch.shape
    shape = (cog * groups, taps, c_in // groups)
    index = np.arange(w_torch.size).reshape(shape)
    flat = np.empty(w_torch.size, dtype=w_torch.dtype)
    flat[ref.torch_weight(index, groups).ravel()] = w_torch.ravel()
    return flat.reshape(shape)


def run(case, x, w, b, backend, data_format="NLC", weight_format="mlx", batched=True, dtype=mx.float32):
    """Calls the op with numpy NLC / MLX-layout arrays passed in the requested layouts.

    Returns:
        np.ndarray: the output as float64 in NLC layout, batched.
    """
    xin = x if data_format == "NLC" else x.transpose(0, 2, 1)
    win = w if weight_format == "mlx" else ref.torch_weight(w, case.groups)
    if not batched:
        xin = xin[0]
    y = md.conv_transpose1d(
        mx.array(xin, dtype=dtype),
        mx.array(win, dtype=dtype),
        None if b is None else mx.array(b, dtype=dtype),
        **case.kwargs(),
        data_format=data_format,
        weight_format=weight_format,
        backend=backend,
    )
    assert y.dtype == dtype
    y = np.array(y.astype(mx.float32), dtype=np.float64)
    if not batched:
        y = y[None]
    return y if data_format == "NLC" else y.transpose(0, 2, 1)


def grads(case, x, w, b, ct, backend, data_format="NLC", weight_format="mlx"):
    """VJP of the op called in the given layouts, mapped back to NLC / MLX layout, float64.

    Returns:
        tuple: gradients with respect to ``x``, ``w`` and ``b``.
    """
    xin = x if data_format == "NLC" else x.transpose(0, 2, 1)
    win = w if weight_format == "mlx" else ref.torch_weight(w, case.groups)
    ctin = ct if data_format == "NLC" else ct.transpose(0, 2, 1)
    primals = [mx.array(xin, mx.float32), mx.array(win, mx.float32), mx.array(b, mx.float32)]

    def f(xx, ww, bb):
        return md.conv_transpose1d(
            xx, ww, bb, **case.kwargs(), data_format=data_format, weight_format=weight_format, backend=backend
        )

    _, (gx, gw, gb) = mx.vjp(f, primals, [mx.array(ctin, mx.float32)])
    gx, gw, gb = (np.array(g, dtype=np.float64) for g in (gx, gw, gb))
    if data_format == "NCL":
        gx = gx.transpose(0, 2, 1)
    if weight_format == "torch":
        gw = mlx_weight_from_torch(gw, case.groups)
    return gx, gw, gb


def tiny_blocks(chunk_elements=64, **changes):
    """A block policy of a handful of rows per block, spread over every worker stream whatever the size
    (and no unfolded conv1d, so tiny dense signals take the row-view paths and the blocks' gradient; pass
    ``unfold_max_rows`` and ``unfold_vjp_max_elements`` for them)."""
    return BlockPolicy(chunk_elements=chunk_elements, **{"parallel_min_flops": 0, "depthwise_parallel_min_output": 0,
                                                         "direct_depthwise_parallel_min_output": 0,
                                                         "unfold_max_rows": 0, "unfold_vjp_max_elements": 0,
                                                         **changes})


def backend_call(backend, policy, **kwargs):
    """``f(x, w, b=None)``: the transposed op of ``backend`` called directly with a block ``policy``.

    NLC input and MLX-layout weight as ``mx.array``; ``kwargs`` are the op's
    geometry arguments (stride, padding, ...).
    """
    run = backends.BACKENDS[backend].conv_transpose1d

    def f(x, w, b=None):
        geom, _ = conv_geometry(x.shape, w.shape, **kwargs)
        return run(x, w, b, geom, policy=policy)

    return f


def peak_above(f):
    """``(peak memory above what was allocated before, result)`` of evaluating ``f()``."""
    mx.synchronize()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    out = f()
    mx.eval(out)
    return mx.get_peak_memory() - base, out


#: PyTorch's state-dict names of a weight-normed weight, ``(g, v)``, in its two styles.
WEIGHT_NORM_NAMES = {"legacy": ("weight_g", "weight_v"),
                     "parametrizations": ("parametrizations.weight.original0", "parametrizations.weight.original1")}


def torch_norm(v, dim):
    """PyTorch's weight-norm norm of ``v``: over every axis but ``dim`` (all of them for ``dim=None``)."""
    axes = tuple(a for a in range(v.ndim) if a != dim) if dim is not None else tuple(range(v.ndim))
    return np.sqrt((v ** 2).sum(axis=axes, keepdims=dim is not None))


def weight_state(v, style, dim, rng):
    """The weight entries of a PyTorch state dict holding ``v``: plain, or weight-normed in ``style``
    with a random ``g`` (so the effective weight is not ``v`` itself)."""
    if style == "plain":
        return {"weight": v}
    norm = torch_norm(v, dim)
    g = (norm * rng.uniform(0.5, 2, norm.shape)).astype(np.float32)
    g_name, v_name = WEIGHT_NORM_NAMES[style]
    return {g_name: g, v_name: v}


def effective_torch_weight(state, dim=0):
    """The weight a PyTorch state dict computes with: ``weight``, or ``g * v / ||v||``."""
    if "weight" in state:
        return state["weight"]
    g, v = (state.get(a, state.get(b)) for a, b in zip(*WEIGHT_NORM_NAMES.values()))
    return g * v / torch_norm(v, dim)
