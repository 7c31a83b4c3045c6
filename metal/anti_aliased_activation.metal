// Body of the mlx_deconv anti-aliased activation kernel (BigVGAN's Activation1d in one pass);
// mx.fast.metal_kernel wraps it in a function whose signature it generates
// (see mlx_deconv/backends/anti_aliased/__init__.py; wrapped by mlx_deconv/backends/metal/anti_aliased.py).
//
// Each thread owns one output element y[n, t, c] and computes everything it reads:
// the RATIO*t + j - DOWN_LEFT samples (j < DOWN_TAPS) of the upsampled signal that the
// low-pass reads, clamped into [0, RATIO*L) (the edge pad of the upsampled signal); each of
// those samples from the transposed convolution of the edge-padded input (the input index
// clamped into [0, L), taps outside the padded input contribute nothing), times RATIO; the
// snake on it; and the low-pass sum. No intermediate touches memory, no atomics.
// Threads along grid x are consecutive channels: their loads of one input row coalesce.
//
// Inputs:  x (N, L, C) NLC, a (C) snake frequency, ib (C) 1 / (magnitude + eps), both float,
//          f (UP_TAPS) and g (DOWN_TAPS) the filters, float; dims (2 ints: L, C).
// Output:  y (N, L, C).
// Template: T (element type), RATIO, UP_TAPS, DOWN_TAPS, UP_PAD (edge samples added to each side
//           of x), UP_CROP (samples cropped from the left of the full transposed output),
//           DOWN_LEFT (edge samples added on the left of the upsampled signal).
// Arithmetic is in float whatever T is.

#ifdef __METAL_VERSION__
#define MLX_DECONV_SIN(v) metal::precise::sin(v)
#else
#define MLX_DECONV_SIN(v) std::sin(v)
#endif

    const int c = int(thread_position_in_grid.x);
    const int t = int(thread_position_in_grid.y);
    const int n = int(thread_position_in_grid.z);
    const int length = dims[0];
    const int channels = dims[1];
    if (c >= channels || t >= length) {
        return;
    }
    const int up_length = RATIO * length;
    const int padded_length = length + 2 * UP_PAD;
    const auto xc = x + size_t(n) * length * channels + c;
    const float alpha = a[c];
    const float inv_beta = ib[c];
    float acc = 0.0f;
    for (int j = 0; j < DOWN_TAPS; ++j) {
        // The upsampled sample the low-pass's tap j reads, with the edge pad.
        const int i = metal::min(metal::max(RATIO * t + j - DOWN_LEFT, 0), up_length - 1);
        // u[i] = RATIO * sum_m xp[m] * f[w - RATIO*m], w = i + UP_CROP, 0 <= w - RATIO*m < UP_TAPS.
        const int w = i + UP_CROP;
        const int m_high = metal::min(w / RATIO, padded_length - 1);
        int m_low = w - (UP_TAPS - 1);
        m_low = m_low <= 0 ? 0 : (m_low + RATIO - 1) / RATIO;
        float u = 0.0f;
        for (int m = m_low; m <= m_high; ++m) {
            const int l = metal::min(metal::max(m - UP_PAD, 0), length - 1);
            u += f[w - RATIO * m] * float(xc[size_t(l) * channels]);
        }
        u *= float(RATIO);
        const float s = MLX_DECONV_SIN(alpha * u);
        acc += g[j] * (u + s * s * inv_beta);
    }
    y[(size_t(n) * length + t) * channels + c] = T(acc);
