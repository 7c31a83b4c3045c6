"""``sin(t)**2`` and its derivative in elementwise arithmetic: Snake's nonlinearity where MLX's CPU ``sin``
is a scalar call per element, so that it fuses and vectorises under ``mx.compile``."""

from __future__ import annotations

import mlx.core as mx

# sin(r) = r * (1 + c1 r^2 + ... + c4 r^8) on |r| <= pi/2 + 0.02 (coefficients fitted here to the
# relative error, in float64; sin^2 from them is within 3.5e-7 of the true value in float32) after the
# argument is reduced by a multiple of pi (sin^2 has period pi) in two parts, the first exact in float32
# for |k| < 4096 (|alpha * u| below about 12800); beyond that the reduction loses bits gradually, and
# past 2^22 * pi the rounding trick no longer gives an integer: the reduced argument is then clamped, so
# the term stays bounded (float32 has no fraction left in such an argument anyway).
_SIN_POLY = (-0.16666659712791443, 0.008333069272339344, -0.0001980957604246214, 2.6052709927171236e-06)
_PI_HI, _PI_LO = 3.140625, 9.675025939941406e-04 + 1.5099580252808664e-07
_INV_PI = 0.3183098861837907
_ROUNDER = 12582912.0  # 1.5 * 2^23: (y + it) - it rounds y to an integer in float32 (no rint call)


def reduce_pi(t: mx.array) -> mx.array:
    """``t`` minus the nearest multiple of pi (in [-pi/2, pi/2]); NaN for NaN or infinite ``t``.

    Where the rounding trick fails (``|t| > 2^22 * pi``) the result is set to 0, so ``sin**2`` stays
    bounded. (A select, not a clamp: MLX's minimum/maximum test for NaN per element and stop the
    compiler from vectorising the loop.)
    """
    k = mx.stop_gradient((t * _INV_PI + _ROUNDER) - _ROUNDER)
    r = (t - k * _PI_HI) - k * _PI_LO
    return mx.where(mx.abs(r) > 2.0, 0.0, r)  # |NaN| > 2 is false: NaN stays


def sin_squared_reduced(r: mx.array) -> mx.array:
    """``sin(r)**2`` for ``|r| <= pi/2`` from the odd polynomial above, evaluated with little depth."""
    c1, c2, c3, c4 = _SIN_POLY
    z = r * r
    z2 = z * z
    q = (1.0 + c1 * z) + z2 * ((c2 + c3 * z) + c4 * z2)
    s = r * q
    return s * s


def sin_squared(t: mx.array) -> mx.array:
    """``sin(t)**2`` in elementwise arithmetic only (MLX's CPU ``sin`` is a scalar call per element;
    this fuses and vectorises under ``mx.compile``)."""
    return sin_squared_reduced(reduce_pi(t))


# cos(r) = 1 + d1 r^2 + ... + d4 r^8 on the same interval (fitted the same way; within 1.8e-7 in float32).
_COS_POLY = (-0.4999992549419403, 0.04166378080844879, -0.001385425333864987, 2.315449273737613e-05)


def sin_cos_reduced(r: mx.array) -> mx.array:
    """``sin(r) * cos(r)`` (half of ``sin(2r)``, the derivative of ``sin(r)**2``) for ``|r| <= pi/2``."""
    c1, c2, c3, c4 = _SIN_POLY
    d1, d2, d3, d4 = _COS_POLY
    z = r * r
    z2 = z * z
    s = r * ((1.0 + c1 * z) + z2 * ((c2 + c3 * z) + c4 * z2))
    c = (1.0 + d1 * z) + z2 * ((d2 + d3 * z) + d4 * z2)
    return s * c
