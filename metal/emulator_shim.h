// Just enough of the Metal Shading Language for g++ to compile the kernels
// MLX generates, so that mlx_deconv/backends/metal/emulator.py can run them on a CPU.
// Address spaces become nothing, vector and half types become plain structs,
// and each thread of the grid is one call of the kernel function.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#define device
#define constant
#define thread
#define threadgroup

typedef unsigned int uint;

struct uint3 {
    uint x, y, z;
};

// float16: the compiler's IEEE binary16.
typedef _Float16 float16_t;
typedef _Float16 half;

// bfloat16: the top 16 bits of a float32, rounded to nearest even (as Metal's bfloat).
struct bfloat16_t {
    uint16_t bits;
    bfloat16_t() = default;
    bfloat16_t(float f) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            bits = uint16_t((u >> 16) | 0x40u);  // quiet NaN
        } else {
            u += 0x7fffu + ((u >> 16) & 1u);
            bits = uint16_t(u >> 16);
        }
    }
    operator float() const {
        uint32_t u = uint32_t(bits) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
};

namespace metal {
using std::abs;
using std::exp;
using std::fma;
using std::max;
using std::min;
using std::sqrt;
}  // namespace metal
