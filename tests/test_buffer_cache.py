"""MLX's buffer cache on builds without Metal (mlx_deconv/runtime/buffer_cache.py): raised once at import from
MLX's CPU default, never over a limit the user set, and never on Metal."""
import subprocess
import sys

import mlx.core as mx
import pytest

from mlx_deconv.runtime import buffer_cache


def _limit() -> int:
    current = mx.set_cache_limit(0)
    mx.set_cache_limit(current)
    return current


@pytest.fixture
def restore_limit():
    before = _limit()
    yield
    mx.set_cache_limit(before)


def test_wanted_limit_from_the_environment():
    assert buffer_cache.wanted_limit({"MLX_DECONV_CACHE_LIMIT": "500000000"}) == 500_000_000
    assert buffer_cache.wanted_limit({"MLX_DECONV_CACHE_LIMIT": "0"}) is None
    default = buffer_cache.wanted_limit({})
    assert default is None or 0 < default <= buffer_cache.CEILING
    for bad in ("abc", "-5", "1.5e9"):
        with pytest.raises(ValueError, match=f"MLX_DECONV_CACHE_LIMIT.*{bad!r}"):
            buffer_cache.wanted_limit({"MLX_DECONV_CACHE_LIMIT": bad})


def test_raised_only_from_mlx_cpu_default(monkeypatch, restore_limit):
    monkeypatch.setattr(mx.metal, "is_available", lambda: False)
    env = {"MLX_DECONV_CACHE_LIMIT": str(256 << 20)}
    mx.set_cache_limit(buffer_cache.MLX_CPU_DEFAULT)
    assert buffer_cache.raise_cpu_limit(env) == 256 << 20 and _limit() == 256 << 20
    mx.set_cache_limit(100 << 20)  # the user's own limit stays
    assert buffer_cache.raise_cpu_limit(env) is None and _limit() == 100 << 20
    mx.set_cache_limit(buffer_cache.MLX_CPU_DEFAULT)
    assert buffer_cache.raise_cpu_limit({"MLX_DECONV_CACHE_LIMIT": "0"}) is None
    assert _limit() == buffer_cache.MLX_CPU_DEFAULT
    assert buffer_cache.raise_cpu_limit({"MLX_DECONV_CACHE_LIMIT": str(1 << 20)}) is None  # lower: no gain
    assert _limit() == buffer_cache.MLX_CPU_DEFAULT


def test_left_alone_where_metal_is_available(monkeypatch, restore_limit):
    monkeypatch.setattr(mx.metal, "is_available", lambda: True)
    mx.set_cache_limit(buffer_cache.MLX_CPU_DEFAULT)
    assert buffer_cache.raise_cpu_limit({"MLX_DECONV_CACHE_LIMIT": str(256 << 20)}) is None
    assert _limit() == buffer_cache.MLX_CPU_DEFAULT


def test_import_sets_it_in_a_fresh_process():
    code = ("import mlx.core as mx; before = mx.set_cache_limit(0); mx.set_cache_limit(before); import mlx_deconv; "
            "after = mx.set_cache_limit(0); print(before, after, int(mx.metal.is_available()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"MLX_DECONV_CACHE_LIMIT": str(300 << 20), "PATH": "/usr/bin:/bin"}).stdout.split()
    before, after, metal = map(int, out)
    if metal or before != buffer_cache.MLX_CPU_DEFAULT:
        assert after == before
    else:
        assert after == 300 << 20
