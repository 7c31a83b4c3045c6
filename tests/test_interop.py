"""PyTorch / Keras weight layouts and state dicts; PyTorch parity when torch is installed."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import mlx_deconv as md
from mlx_deconv import interop
import reference as ref
from helpers import effective_torch_weight, mlx_weight_from_torch, weight_state


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_layout_conversions_roundtrip_and_match_element_by_element(groups):
    w = np.random.default_rng(0).standard_normal((6, 4, 6 // groups))
    torch_w = interop.mlx_to_torch_weight(w, groups)
    np.testing.assert_array_equal(torch_w, ref.torch_weight(w, groups))
    np.testing.assert_array_equal(interop.torch_to_mlx_weight(torch_w, groups), w)
    k = interop.mlx_to_keras_weight(w)
    assert k.shape == (4, 6, 6 // groups)
    np.testing.assert_array_equal(interop.keras_to_mlx_weight(k), w)
    # mx arrays go through the same functions (and gradients with them).
    np.testing.assert_array_equal(np.array(interop.mlx_to_torch_weight(mx.array(w), groups)), torch_w.astype(np.float32))


def torch_like_state(groups=2, style="plain", dim=0, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((4, 6 // groups, 5)).astype(np.float32)  # (C_in, C_out/groups, K)
    state = weight_state(weight, style, dim, rng)
    if bias:
        state["bias"] = rng.standard_normal(6).astype(np.float32)
    return state


@pytest.mark.parametrize("style,dim", [("plain", 0), ("legacy", 0), ("legacy", 1), ("parametrizations", 0),
                                       ("parametrizations", 1)])
def test_from_torch_against_reference(style, dim):
    state = torch_like_state(style=style, dim=dim)
    layer = md.ConvTranspose1d.from_torch(state, stride=3, padding=2, output_padding=1, groups=2, data_format="NCL")
    assert layer.uses_weight_norm == (style != "plain")
    x = np.random.default_rng(1).standard_normal((2, 4, 7)).astype(np.float32)  # NCL, PyTorch's layout
    w_torch = effective_torch_weight(state, dim)
    w_mlx = mlx_weight_from_torch(w_torch, 2)  # the reference takes MLX layout
    assert w_mlx.shape == (6, 5, 2)
    expected = ref.conv_transpose1d(x.transpose(0, 2, 1), w_mlx, state["bias"], 3, 2, 1, 1, 2)
    np.testing.assert_allclose(np.array(layer(mx.array(x))).transpose(0, 2, 1), expected, atol=1e-4)
    # And back out, in the same style and names.
    exported = layer.torch_state_dict(style="legacy" if style == "legacy" else "parametrizations")
    for key, value in state.items():
        np.testing.assert_allclose(exported[key], value, rtol=1e-6, atol=1e-6)


def test_load_converts_between_weight_norm_and_plain():
    state = torch_like_state(style="legacy")
    plain = md.ConvTranspose1d(4, 6, 5, stride=2, groups=2).load_torch_state_dict(state)
    normed = md.ConvTranspose1d(4, 6, 5, stride=2, groups=2, weight_norm=True, weight_norm_dim=1)
    normed.load_torch_state_dict(state)
    x = mx.random.normal((1, 5, 4), key=mx.random.key(0))
    assert mx.allclose(plain(x), normed(x), atol=1e-5)
    np.testing.assert_allclose(plain.torch_state_dict()["weight"], effective_torch_weight(state), rtol=1e-5, atol=1e-6)


def test_a_failed_load_leaves_the_layer_as_it_was():
    layer = md.ConvTranspose1d(4, 6, 5, stride=2, groups=2, weight_norm=True)
    before = {k: np.array(v) for k, v in layer.parameters().items()}
    bad_bias = dict(torch_like_state(style="plain", seed=3), bias=np.zeros(5, np.float32))  # good weight, bias of 5
    bad_g = torch_like_state(style="legacy", seed=4)
    bad_g["weight_g"] = np.ones((3, 1, 1), np.float32)  # g for 3 input channels, the weight has 4
    for state in (bad_bias, bad_g):
        with pytest.raises(ValueError):
            layer.load_torch_state_dict(state)
        after = layer.parameters()
        assert set(after) == set(before)
        for key, value in after.items():
            np.testing.assert_array_equal(np.array(value), before[key])


def test_prefix_and_errors():
    state = {f"ups.1.{k}": v for k, v in torch_like_state(groups=1).items()}
    layer = md.ConvTranspose1d.from_torch(state, prefix="ups.1.", stride=2)
    assert (layer.in_channels, layer.out_channels, layer.kernel_size) == (4, 6, 5)
    with pytest.raises(ValueError, match="no transposed-conv weight under prefix 'ups.2.'"):
        md.ConvTranspose1d.from_torch(state, prefix="ups.2.")
    with pytest.raises(ValueError, match=r"needs \(4, 3, 5\)"):
        md.ConvTranspose1d(4, 6, 5, groups=2).load_torch_state_dict(state, prefix="ups.1.")


class FakeTensor:
    """Quacks like a torch tensor: .detach().cpu().numpy(), no __array__."""

    def __init__(self, value):
        self.value, self.dtype = value, "torch.float32"

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.value


def test_tensors_need_not_be_numpy():
    state = {k: FakeTensor(v) for k, v in torch_like_state(groups=1).items()}
    layer = md.ConvTranspose1d.from_torch(state, stride=2)
    np.testing.assert_array_equal(layer.torch_state_dict()["weight"], state["weight"].value)


torch = pytest.importorskip("torch", reason="PyTorch parity needs torch; the numpy-reference tests above cover the same maths")


@pytest.mark.parametrize("kwargs", [
    dict(stride=8, padding=4, groups=1),
    dict(stride=2, padding=1, output_padding=1, dilation=2, groups=2),
    dict(stride=3, padding=0, groups=4),
])
@pytest.mark.parametrize("norm", [None, "legacy", "parametrizations"])
def test_pytorch_parity(kwargs, norm):
    torch.manual_seed(0)
    module = torch.nn.ConvTranspose1d(8, 12, 16 if kwargs["stride"] == 8 else 5, **kwargs)
    if norm == "legacy":
        module = torch.nn.utils.weight_norm(module)
    elif norm == "parametrizations":
        module = torch.nn.utils.parametrizations.weight_norm(module)
    x = torch.randn(2, 8, 9)
    with torch.no_grad():
        expected = module(x).numpy()
    layer = md.ConvTranspose1d.from_torch(module.state_dict(), data_format="NCL", **kwargs)
    assert layer.uses_weight_norm == (norm is not None)
    np.testing.assert_allclose(np.array(layer(mx.array(x.numpy()))), expected, atol=1e-4)
    # Export and load back into torch: same output.
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.torch_state_dict(
        style=norm if norm else "parametrizations").items()})
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), expected, atol=1e-5)


def test_pytorch_default_init_distribution():
    """A fresh layer's kernel_init='torch' has PyTorch's bound: 1/sqrt((C_out/groups)*K)."""
    module = torch.nn.ConvTranspose1d(64, 96, 7, groups=2)
    torch_bound = float(module.weight.abs().max())
    layer = md.ConvTranspose1d(64, 96, 7, groups=2, bias_init="torch")
    ours = float(mx.abs(layer.weight).max())
    bound = 1 / np.sqrt(48 * 7)
    assert 0.98 * bound < torch_bound <= bound and 0.98 * bound < ours <= bound
    assert float(mx.abs(layer.bias).max()) <= bound


@st.composite
def transposed_geometries(draw):
    groups = draw(st.sampled_from([1, 2]))
    stride = draw(st.integers(1, 4))
    dilation = draw(st.integers(1, 3))
    return dict(in_channels=2 * groups, out_channels=draw(st.integers(1, 2)) * groups, kernel_size=draw(st.integers(1, 6)),
                stride=stride, padding=draw(st.integers(0, 3)), output_padding=draw(st.integers(0, max(stride, dilation) - 1)),
                dilation=dilation, groups=groups, bias=draw(st.booleans()))


@given(geometry=transposed_geometries(), norm=st.sampled_from([None, "legacy", "parametrizations"]),
       dim=st.sampled_from([0, 1, None]), length=st.integers(1, 12), seed=st.integers(0, 1000))
def test_from_torch_module_reads_its_geometry(geometry, norm, dim, length, seed):
    g = geometry
    out_len = (length - 1) * g["stride"] - 2 * g["padding"] + g["dilation"] * (g["kernel_size"] - 1) + g["output_padding"] + 1
    assume(out_len >= 1)
    torch.manual_seed(seed)
    module = torch.nn.ConvTranspose1d(**geometry)
    if norm == "legacy":
        module = torch.nn.utils.weight_norm(module, dim=dim)
    elif norm == "parametrizations":
        module = torch.nn.utils.parametrizations.weight_norm(module, dim=dim)
    x = torch.randn(2, g["in_channels"], length)
    with torch.no_grad():
        want = module(x).numpy()
    layer = md.ConvTranspose1d.from_torch(module, data_format="NCL")  # raised AttributeError before
    assert layer.uses_weight_norm == (norm is not None)
    np.testing.assert_allclose(np.array(layer(mx.array(x.numpy()))), want, atol=1e-5)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.torch_state_dict(style=norm or "parametrizations").items()})
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), want, atol=1e-5)


def test_from_torch_module_errors():
    with pytest.raises(ValueError, match="padding_mode='circular'"):
        md.ConvTranspose1d.from_torch(_transposed_with_padding_mode("circular"))
    with pytest.raises(TypeError, match="torch.nn.ConvTranspose1d"):
        md.ConvTranspose1d.from_torch(torch.nn.Conv1d(2, 3, 3))
    with pytest.raises(TypeError, match="torch.nn.ConvTranspose1d"):
        md.ConvTranspose1d.from_torch(torch.nn.Linear(2, 3))
    with pytest.raises(ValueError, match=r"\['padding', 'stride'\] come from the module"):
        md.ConvTranspose1d.from_torch(torch.nn.ConvTranspose1d(2, 3, 3), stride=2, padding=1)


def _transposed_with_padding_mode(mode):
    """PyTorch refuses non-zero padding modes for ConvTranspose1d at construction; a module changed later has one."""
    module = torch.nn.ConvTranspose1d(2, 3, 3)
    module.padding_mode = mode
    return module


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dim", [None, -3, -2, -1, 0, 1, 2])
def test_weight_norm_dim_means_what_pytorch_s_does(transposed, dim):
    """``-1`` is PyTorch's stored form of ``None``: one norm over the whole weight, not the last axis. A layer built
    with any ``dim`` exports a state PyTorch's own weight-normed module loads, and both compute one weight."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils import parametrizations

    cls, tcls = (md.ConvTranspose1d, torch.nn.ConvTranspose1d) if transposed else (md.Conv1d, torch.nn.Conv1d)
    mx.random.seed(1)
    layer = cls(3, 4, 5, weight_norm=True, weight_norm_dim=dim)
    layer.weight_g = mx.random.uniform(0.5, 2.0, layer.weight_g.shape)
    module = parametrizations.weight_norm(tcls(3, 4, 5), dim=dim).double()
    assert tuple(layer.weight_g.shape) == tuple(module.parametrizations.weight.original0.shape)
    state = {k: torch.from_numpy(np.array(v, np.float64)) for k, v in layer.torch_state_dict().items()}
    module.load_state_dict({k.replace("weight_g", "parametrizations.weight.original0")
                             .replace("weight_v", "parametrizations.weight.original1"): v for k, v in state.items()})
    theirs = module.weight.detach().numpy()
    ours = np.array(layer.effective_weight(), np.float64)  # MLX layout
    ours = ours.transpose(2, 0, 1) if transposed else ours.transpose(0, 2, 1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_a_weight_normed_state_dict_whose_g_has_one_entry_loads(transposed, dim):
    """Depthwise weights have an axis of one entry: weight norm over it stores ``g`` of shape ``(1, 1, 1)``, which
    does not tell ``dim`` apart; every dim that fits computes the same weight."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils import parametrizations

    tcls, cls = (torch.nn.ConvTranspose1d, md.ConvTranspose1d) if transposed else (torch.nn.Conv1d, md.Conv1d)
    torch.manual_seed(0)
    module = parametrizations.weight_norm(tcls(2, 2, 3, groups=2), dim=dim)
    with torch.no_grad():
        module.parametrizations.weight.original0.mul_(1.7)
    x = torch.randn(1, 2, 9)
    layer = cls.from_torch(module.state_dict(), groups=2, data_format="NCL")
    np.testing.assert_allclose(np.array(layer(mx.array(x.numpy()))), module(x).detach().numpy(), atol=1e-5)
