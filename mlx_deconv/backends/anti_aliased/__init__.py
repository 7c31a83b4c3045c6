"""BigVGAN's anti-aliased activation (pad, upsample, Snake/SnakeBeta, pad, downsample): its two CPU backends.

The map, for a signal ``x`` of ``L`` samples per channel, ratio ``r``, an up filter ``f`` of ``Ku``
taps and a down filter ``g`` of ``Kd`` taps (NVIDIA's ``Activation1d``, ``UpSample1d``,
``DownSample1d``):

1. ``xp``: ``x`` edge-padded by ``p = Ku // r - 1`` samples on each side;
2. ``u = r * conv_transpose1d(xp, f, stride=r)`` cropped by ``(p*r + (Ku-r)//2, p*r + (Ku-r+1)//2)``:
   ``r*L`` samples;
3. ``v = u + sin(a*u)**2 / (b + 1e-9)`` with ``a = alpha``, ``b = beta`` (``b = alpha`` for Snake),
   both ``exp()``-ed first when ``logscale``;
4. ``vp``: ``v`` edge-padded by ``(Kd//2 - (1 if Kd is even else 0), Kd//2)``;
5. ``y = conv1d(vp, g, stride=r)``: ``L`` samples (``(r*L - 1)//r + 1``).

Paths, all computing that map:

* ``"unfused"`` (:mod:`.unfused`): the steps above one by one on the ``gemm`` backend's depthwise paths (the baseline).
* ``"polyphase"`` (:mod:`.polyphase`, CPU streams): sample ``r*q + s`` of ``u`` is a ``Ku/r``-tap filter of ``xp``
  (taps ``k = (s + crop_left) mod r, + r, ...``), so the ``r`` phases of ``u`` come from shifted
  views of ``xp`` with no zero-stuffed, interleaved or cropped intermediate; the snake runs per phase,
  and the down filter reads phase ``b`` with its taps ``j`` where ``(j - pad_left) mod r == b``. The
  edge pad of the interleaved ``v`` extends every phase by ``v[0]`` (phase 0's first sample) on the
  left and ``v[r*L - 1]`` (the last phase's last) on the right; only the first and last few outputs
  read that extension, from small windows. ``sin`` is computed by argument reduction and
  polynomials (MLX's CPU ``sin`` is one scalar call per element), so every step is a short fused,
  vectorised kernel (:mod:`.phases`, :mod:`.sine`). Half precision is computed in float32, rounded once.
* ``"metal"`` (:mod:`mlx_deconv.backends.metal.anti_aliased`, Metal GPU streams): ``metal/anti_aliased_activation.metal``, one thread per
  output sample and channel doing pad, upsample, snake and low-pass in one pass; verified on Linux by
  :func:`~mlx_deconv.backends.metal.anti_aliased.emulate` (MLX's generated source compiled with g++, every thread run on the CPU).

Both fused paths are ``mx.custom_function`` s with a polyphase VJP (:mod:`.gradient`): the down taps'
adjoint, the edge extension's, the snake's derivative, the up taps' adjoint and the edge pad's.
Inside ``mx.grad`` MLX does not compile functions given tracers, so a small traced ``"polyphase"`` call
is computed by :mod:`.banded` (a matmul of blocks per filtering, compiled with its VJP on a worker thread that
is not tracing, lazily: :func:`.gradient.build_untraced`), and a larger one runs its fused kernels and VJP
built the same way (:func:`.gradient.run_off_trace`; on a GPU stream evaluated there, :func:`.gradient.run_untraced`).

The geometry (lengths, pads, taps) is :class:`~mlx_deconv.geometry.activation.ActivationGeometry`.
"""
