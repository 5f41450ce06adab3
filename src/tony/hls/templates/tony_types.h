// tony_types.h -- the typedef layer of Tony's HLS C++ (docs/arithmetic.md is the contract).
//
// Storage types are tony_int<B> / tony_uint<B>. With the Vitis HLS headers present (or with
// TONY_USE_AP_INT defined) they are ap_int<B> / ap_uint<B>; otherwise the smallest standard
// integer type that holds B bits. Every value is saturated explicitly before it is stored, and all
// rescaling arithmetic runs in 64 bits (tony_wide_t), so both mappings give the same bits.
#ifndef TONY_TYPES_H
#define TONY_TYPES_H

#include <stdint.h>

#if !defined(TONY_USE_AP_INT) && !defined(TONY_NO_AP_INT) && defined(__has_include)
#if __has_include(<ap_int.h>)
#define TONY_USE_AP_INT 1
#endif
#endif

#ifdef TONY_USE_AP_INT
#include <ap_int.h>
#endif

// HLS pragmas and loop labels (names in the synthesis report): emitted for Vitis HLS, invisible to
// plain compilers (no unknown-pragma or unused-label warnings).
#define TONY_PRAGMA_STR(x) #x
#if defined(__SYNTHESIS__) || defined(TONY_HLS_PRAGMAS)
#define TONY_HLS(x) _Pragma(TONY_PRAGMA_STR(HLS x))
#define TONY_LOOP(name) name:
#else
#define TONY_HLS(x)
#define TONY_LOOP(name)
#endif

namespace tony {

typedef long long wide_t;  // rescaling arithmetic: |acc * mult| < 2^62 by the contract

#ifdef TONY_USE_AP_INT
template <int B> struct int_of { typedef ap_int<B> type; };
template <int B> struct uint_of { typedef ap_uint<B> type; };
#else
template <bool C, typename A, typename B> struct pick { typedef A type; };
template <typename A, typename B> struct pick<false, A, B> { typedef B type; };
template <int B> struct int_of {
    typedef typename pick<(B <= 8), int8_t,
            typename pick<(B <= 16), int16_t,
            typename pick<(B <= 32), int32_t, int64_t>::type>::type>::type type;
};
template <int B> struct uint_of {
    typedef typename pick<(B <= 8), uint8_t,
            typename pick<(B <= 16), uint16_t,
            typename pick<(B <= 32), uint32_t, uint64_t>::type>::type>::type type;
};
#endif

enum Rounding { HALF_EVEN = 0, HALF_UP = 1, FLOOR = 2 };

inline wide_t clamp(wide_t v, wide_t lo, wide_t hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

// docs/arithmetic.md, 'The rounding shift': s > 0 divides by 2^s with the chosen rounding,
// s <= 0 multiplies by 2^-s exactly (the operand is first limited to [-2^31, 2^31], shift <= 31).
inline wide_t rounding_shift(wide_t p, int s, int mode) {
    if (s <= 0) {
        int sl = -s > 31 ? 31 : -s;
        return clamp(p, -(1LL << 31), 1LL << 31) * (1LL << sl);
    }
    wide_t r = p >> s;  // arithmetic shift
    if (mode == FLOOR) return r;
    wide_t rem = p & ((1LL << s) - 1);
    wide_t h = 1LL << (s - 1);
    bool up = (mode == HALF_UP) ? (rem >= h) : (rem > h || (rem == h && (r & 1)));
    return r + (up ? 1 : 0);
}

// y = clamp(round_shift(acc * mult, shift) + zp, lo, hi)  (docs/arithmetic.md, 'Requantization')
inline wide_t requant(wide_t acc, wide_t mult, int shift, int mode, wide_t zp, wide_t lo, wide_t hi) {
    return clamp(rounding_shift(acc * mult, shift, mode) + zp, lo, hi);
}

}  // namespace tony

template <int B> using tony_int = typename tony::int_of<B>::type;
template <int B> using tony_uint = typename tony::uint_of<B>::type;

#endif  // TONY_TYPES_H
