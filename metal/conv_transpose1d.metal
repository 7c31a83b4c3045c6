// Body of the mlx_deconv transposed-convolution kernel; mx.fast.metal_kernel
// wraps it in a function whose signature it generates (see backends/metal.py).
//
// Gather form: each thread owns one output element y[n, t, co] and reads the
// taps that land on it, so there are no atomics and the result is
// deterministic. Threads along grid x are consecutive output channels: they
// read one input row (broadcast) and consecutive weights of the
// (K, C_in/groups, C_out) weight, so loads coalesce.
//
// Inputs:  x (N, L, C_in) NLC, w (K, C_in/groups, C_out), bias (C_out or 1),
//          dims (5 ints: L, L_out, crop, C_in, C_out).
// Output:  y (N, L_out, C_out).
// Template: T (element type), STRIDE, DILATION, TAPS, CIG (C_in/groups),
//           COG (C_out/groups), HAS_BIAS.
// Accumulation is in float whatever T is.

    const int co = int(thread_position_in_grid.x);
    const int t = int(thread_position_in_grid.y);
    const int n = int(thread_position_in_grid.z);
    const int length = dims[0];
    const int out_length = dims[1];
    const int crop = dims[2];
    const int in_channels = dims[3];
    const int out_channels = dims[4];
    if (co >= out_channels || t >= out_length) {
        return;
    }
    const int group = co / COG;
    // Full-output position of this sample: input row l reaches it through tap k
    // when l * STRIDE + k * DILATION == u.
    const int u = t + crop;
    float acc = HAS_BIAS ? float(bias[co]) : 0.0f;
    for (int k = 0; k < TAPS; ++k) {
        const int v = u - k * DILATION;
        if (v < 0) {
            break;  // v only decreases with k
        }
        if (v % STRIDE != 0) {
            continue;
        }
        const int l = v / STRIDE;
        if (l >= length) {
            continue;
        }
        const auto xr = x + (size_t(n) * length + l) * in_channels + group * CIG;
        const auto wr = w + size_t(k) * CIG * out_channels + co;
        for (int ci = 0; ci < CIG; ++ci) {
            acc += float(xr[ci]) * float(wr[size_t(ci) * out_channels]);
        }
    }
    y[(size_t(n) * out_length + t) * out_channels + co] = T(acc);
