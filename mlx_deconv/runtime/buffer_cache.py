"""MLX's buffer cache on builds without Metal, raised at import so that a decoder's step reuses its buffers.

MLX keeps freed buffers for reuse up to its cache limit. Its CPU-only build (Linux) sets that limit to
32 MiB, while a vocoder's training step frees and allocates hundreds of MB. Past those 32 MiB every step
asks the system for fresh pages again, and a HiFi-GAN V1 step took 12-15% longer for it (figures:
docs/performance-history.md). MLX's Metal build keeps a much larger cache, so nothing is changed there.

``import mlx_deconv`` raises the limit once, only if MLX still has its CPU default:

* to ``MLX_DECONV_CACHE_LIMIT`` bytes if that is set (``0`` leaves MLX's limit as it is);
* otherwise to an eighth of the machine's memory, at most 1 GiB.

``mx.set_cache_limit`` afterwards overrides it, as usual. The cache holds only freed buffers, which MLX
reuses before allocating; ``mx.clear_cache()`` empties it.
"""

from __future__ import annotations

import os
from typing import Optional

import mlx.core as mx

ENV = "MLX_DECONV_CACHE_LIMIT"
#: MLX's cache limit on its CPU-only build (32 MiB), the only one this module changes.
MLX_CPU_DEFAULT = 32 * 1024 * 1024
#: The most this module sets by itself.
CEILING = 1 << 30


def _memory_bytes() -> Optional[int]:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def wanted_limit(environ=os.environ) -> Optional[int]:
    """The limit to set, or None to leave MLX's.

    Raises:
        ValueError: ``MLX_DECONV_CACHE_LIMIT`` is not a whole number of bytes >= 0.
    """
    text = environ.get(ENV)
    if text is not None and text.strip() != "":
        try:
            value = int(text.strip())
        except ValueError:
            value = -1
        if value < 0:
            raise ValueError(f"{ENV} must be a whole number of bytes >= 0 (0: leave MLX's cache limit), got {text!r}")
        return value or None
    memory = _memory_bytes()
    return min(CEILING, memory // 8) if memory else None


def raise_cpu_limit(environ=os.environ) -> Optional[int]:
    """Raises MLX's cache limit as the module docstring says; returns the limit set, or None if unchanged."""
    if mx.metal.is_available():
        return None
    limit = wanted_limit(environ)
    if limit is None:
        return None
    current = mx.set_cache_limit(limit)
    if current != MLX_CPU_DEFAULT or limit <= current:  # the user's own limit, or no gain: put it back
        mx.set_cache_limit(current)
        return None
    return limit
