// tony_host.h -- host-side Quantize / Dequantize (ONNX QuantizeLinear / DequantizeLinear).
// These run on the processor next to the accelerator, in float32, exactly as Tony's reference:
//   quantize:   q = saturate(round_half_even(x / scale) + zero_point)
//   dequantize: x = (float)(q - zero_point) * scale
#ifndef TONY_HOST_H
#define TONY_HOST_H

#include <cmath>

namespace tony {

inline long long host_quantize(float x, float scale, long long zp, long long lo, long long hi) {
    const float q = std::nearbyint(x / scale);  // ties to even in the default rounding mode
    const double v = (double)q + (double)zp;
    if (!(v >= (double)lo)) return lo;
    if (v > (double)hi) return hi;
    return (long long)v;
}

inline float host_dequantize(long long q, float scale, long long zp) {
    return (float)(q - zp) * scale;
}

}  // namespace tony

#endif  // TONY_HOST_H
